"""Lightning's CSV logger, continued on resume: ``ckpt_path=last`` appends to ``csv/metrics.csv``.

Lightning's writer deletes an existing ``metrics.csv`` when it starts ("Previous log files in this directory will be
deleted when the new ones are saved!"), so a resumed run lost every row logged before it was killed. This writer
keeps the file and its columns and appends. Rows of steps after the last checkpoint and before the kill stay in the
file; the resumed run logs those steps again below them. (A new run never finds an earlier file: the run folder
refuses it first, :mod:`lit_ft.utils.run_folder`.)

The private members of Lightning's CSV logging this needs are reached through :mod:`lit_ft.utils.lightning_compat`
(:class:`~lit_ft.utils.lightning_compat.CSVWriterHook`, :func:`~lit_ft.utils.lightning_compat.csv_writer`), whose
tests fail loudly if Lightning changes them; tests/test_rerun.py checks the resumed log end to end.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from lit_ft.utils.lightning_compat import CSVWriterHook, csv_writer


class ContinuingExperimentWriter(CSVWriterHook):
    """Writes ``metrics.csv`` after the rows already there (same columns, new ones added as Lightning does)."""

    def on_start(self, fs: Any) -> None:
        if fs.isfile(self.metrics_file_path):
            with fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose ``metrics.csv`` survives a resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        return csv_writer(self, ContinuingExperimentWriter)
