"""Evaluate a saved model as configured in ``conf/eval.yaml``: ``python eval.py model_path=logs/lora_legal/model``.

``mode=eval`` (loss per task type, generations, task metrics -> eval.json), ``mode=chat``, ``mode=data_report``.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)

os.environ.setdefault("LIT_FT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from lit_ft.evaluate import run
    from lit_ft.utils.logs import setup_console

    setup_console()

    run(cfg)


if __name__ == "__main__":
    main()
