"""Lightning's messages reach the console once under Hydra's logging."""

from __future__ import annotations

import logging

import lightning  # noqa: F401  (gives the lightning logger its console handler)

from lit_ft.utils.logs import lightning_logs_through_root


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def test_a_lightning_message_is_handled_once_by_the_root_handlers():
    """Whatever the import order left (``lightning.pytorch`` imported before any root handler existed has its own
    handler and does not propagate), each message reaches the root handlers once."""
    loggers, root = [logging.getLogger(name) for name in LIGHTNING_LOGGERS], logging.getLogger()
    saved = [(list(logger.handlers), logger.propagate) for logger in loggers]
    root_handlers = list(root.handlers)
    collect = Collect()
    root.handlers = [collect]  # what Hydra's job logging sets up: handlers on the root logger
    try:
        loggers[1].addHandler(logging.StreamHandler())  # as `import lightning` does with no root handler yet
        loggers[1].propagate = False
        lightning_logs_through_root()
        assert [logger.handlers for logger in loggers] == [[], [], []]
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 42")
        assert collect.messages == ["GPU available: False", "Seed set to 42"]
    finally:
        root.handlers = root_handlers
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
