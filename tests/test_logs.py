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


def test_a_lightning_message_is_handled_once_by_the_root_handlers():
    lightning_logger, root = logging.getLogger("lightning"), logging.getLogger()
    own_handlers, root_handlers = list(lightning_logger.handlers), list(root.handlers)
    collect = Collect()
    root.handlers = [collect]  # what Hydra's job logging sets up: handlers on the root logger
    try:
        assert lightning_logger.handlers  # before: a second, own console handler
        lightning_logs_through_root()
        assert lightning_logger.handlers == []
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        assert collect.messages == ["GPU available: False"]
    finally:
        root.handlers = root_handlers
        lightning_logger.handlers = own_handlers
