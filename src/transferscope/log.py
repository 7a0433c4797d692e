"""Logging of the command line: one handler on stderr for the ``transferscope`` loggers.

Library modules log through ``logging.getLogger(__name__)``; the CLI calls :func:`setup` once
with its ``-v``/``-q`` counts. Without it (a library call from Python) only warnings and errors
reach stderr, through logging's last-resort handler.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def level(verbose: int = 0, quiet: int = 0) -> int:
    """INFO by default; each -v one step towards DEBUG, each -q one towards CRITICAL."""
    return min(max(logging.INFO + 10 * (quiet - verbose), logging.DEBUG), logging.CRITICAL)


class _TqdmHandler(logging.Handler):
    """Writes through ``tqdm.write`` so that a log line does not tear a progress bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            # sys.stderr looked up per line: redirections made after setup still apply
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never take the stage down
            self.handleError(record)


def setup(verbose: int = 0, quiet: int = 0) -> logging.Logger:
    """Configure the ``transferscope`` logger (idempotent: a second call replaces the first)."""
    logger = logging.getLogger("transferscope")
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmHandler)]:
        logger.removeHandler(handler)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level(verbose, quiet))
    return logger
