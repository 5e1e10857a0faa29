"""Console logging of the Hydra entry points."""

from __future__ import annotations

import logging


def lightning_logs_through_root() -> None:
    """Print each Lightning message once, through the root logger's handlers (under Hydra: the console and the
    run's ``.log`` file), when the root logger has handlers.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own and lets it propagate to
    the root, so under Hydra every message ("GPU available", "Seed set to 42", ...) was printed twice.
    """
    import lightning  # noqa: F401  (adds the handler removed here)

    if not logging.getLogger().handlers:
        return
    logger = logging.getLogger("lightning")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
