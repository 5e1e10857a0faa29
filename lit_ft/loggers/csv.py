"""Lightning's CSV logger, continued on resume: ``ckpt_path=last`` appends to ``csv/metrics.csv``.

Lightning's writer deletes an existing ``metrics.csv`` when it starts ("Previous log files in this directory will be
deleted when the new ones are saved!"), so a resumed run lost every row logged before it was killed. This writer
keeps the file and its columns and appends. Rows of steps after the last checkpoint and before the kill stay in the
file; the resumed run logs those steps again below them. (A new run never finds an earlier file: the run folder
refuses it first, :mod:`lit_ft.utils.run_folder`.)

It overrides two private members of Lightning's CSV logging (``ExperimentWriter._check_log_dir_exists`` and
``CSVLogger._experiment``); tests/test_rerun.py fails loudly if Lightning changes either.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ContinuingExperimentWriter(ExperimentWriter):
    """Writes ``metrics.csv`` after the rows already there (same columns, new ones added as Lightning does)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose ``metrics.csv`` survives a resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
