"""Console logging of the Hydra entry points."""

from __future__ import annotations

import logging
import warnings

# Library warnings that a lit-ft user can do nothing about, each with the reason it is safe to hide. A clean run
# prints no ERROR and no such WARNING (tests/test_clean_output.py), so that the ones left mean something.
KNOWN_LIBRARY_WARNINGS = (
    # Lightning 2.6's pytree helper calls an API torch >= 2.10 deprecates; nothing in lit-ft's hands.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # peft (0.21) reads transformers 5's deprecated `is_gradient_checkpointing` alias when it wraps a model.
    r"`is_gradient_checkpointing` is deprecated",
    # lit-ft logs epoch-level metrics that torchmetrics has already reduced over the ranks (val/loss, per-task
    # metrics), so Lightning's advice to reduce them again with sync_dist=True does not apply.
    r"It is recommended to use `self.log\('val/.*sync_dist=True\)`",
    # Lightning warns of DistributedSampler's padding on every multi-rank validation; lit-ft's data module says
    # so only when the validation set does not divide evenly over the ranks, and by how many examples.
    r"Using `DistributedSampler` with the dataloaders",
)


def setup_console() -> None:
    """Console of the Hydra entry points: Lightning's messages once, and no library warning a user cannot act on."""
    lightning_logs_through_root()
    for message in KNOWN_LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def lightning_logs_through_root() -> None:
    """Print each Lightning message once, through the root logger's handlers (under Hydra: the console and the
    run's ``.log`` file), when the root logger has handlers.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own and lets it propagate to
    the root, so under Hydra every message ("GPU available", "Seed set to 42", ...) was printed twice. Imported
    before any root handler exists (a project's ``train.py`` importing lightning at its top), ``lightning.pytorch``
    and ``lightning.fabric`` get their own handlers and stop propagating, so their messages would miss the run's
    log file: all three print through the root.
    """
    import lightning  # noqa: F401  (adds the handlers removed here)

    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
