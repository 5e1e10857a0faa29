"""Chat with a model in the terminal, tokens streamed, latency reported: ``python generate.py model_path=...``.

``conf/generate.yaml`` is ``conf/eval.yaml`` with ``mode=chat``; ``chat.prompt="..."`` answers one question.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)

os.environ.setdefault("LIT_FT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from lit_ft.eval.run import run
    from lit_ft.utils.logs import setup_console

    setup_console()

    run(cfg)


if __name__ == "__main__":
    main()
