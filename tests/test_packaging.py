"""Optional extras: a config that needs one refuses to start, naming it, when its package is absent."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_tensorboard_logger_without_its_extra_is_refused_by_name(tmp_path):
    """``logger=tensorboard`` with tensorboard (and tensorboardX) absent: train.py stops at the config check, before
    any model loads, naming the extra. Absent is simulated in the subprocess (a ``None`` entry in ``sys.modules``
    makes the import, and ``find_spec``, fail as for a package that is not installed)."""
    hide_and_run = (
        "import runpy, sys; sys.modules['tensorboard'] = sys.modules['tensorboardX'] = None; "
        f"sys.argv = ['train.py', 'debug=tiny', 'logger=tensorboard', 'paths.log_dir={tmp_path}']; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", hide_and_run], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "logger.tensorboard (TensorBoardLogger) needs the tensorboard package" in output
    assert "pip install 'lit-ft[tensorboard]'" in output
    assert not (tmp_path / "debug_tiny" / "summary.json").exists()
