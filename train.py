"""Train a model as configured in ``conf/``: ``python train.py experiment=lora_legal``.

Any config value can be overridden on the command line (``trainer.max_steps=20``); ``-m`` sweeps.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)

os.environ.setdefault("LIT_FT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lit_ft.run import train
    from lit_ft.summary import summary_value
    from lit_ft.utils.logs import setup_console

    setup_console()

    summary = train(cfg)
    # The value Hydra sweepers (Optuna) optimise: a summary key or a val/ metric (val/accuracy/classify).
    metric = cfg.get("optimized_metric", "val_loss_after")
    return summary_value(summary, metric) if metric else None


if __name__ == "__main__":
    main()
