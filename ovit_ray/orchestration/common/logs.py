"""Showing ovit_ray's log records: the library only logs; the process that faces a user (the CLI, or a
Ray worker, whose stderr Ray forwards to the driver's console) decides to show them."""

from __future__ import annotations

import logging
import sys

HANDLER_NAME = "ovit-ray-stderr"


def show_logs(prefix: str = "") -> logging.Handler:
    """INFO and up of every `ovit_ray.*` logger on the current stderr, one line each; Ray's and MLflow's
    loggers stay as they are. Calling it again replaces the handler (sys.stderr may have changed); the
    caller may remove the returned handler when it is done."""
    logger = logging.getLogger("ovit_ray")
    for old in [h for h in logger.handlers if h.get_name() == HANDLER_NAME]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
