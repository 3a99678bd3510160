"""Application logs: plain text or JSON lines on stderr, set up once by ``edgecache serve``.

Components log with the standard ``logging`` module and put machine-readable facts in ``extra``
(always an ``event`` name, e.g. ``purge_accepted``, ``token_rejected``, ``tasks_timeout``,
``signin``); the JSON format (python-json-logger) turns every ``extra`` field into a key, so a log
pipeline can filter on them, while the text format shows the message alone.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from edgecache.config import Logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(cfg: Logging) -> None:
    """Send log records to stderr in the configured format; edgecache's at the configured level."""
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(
            JsonFormatter(
                ["asctime", "levelname", "name", "message"],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    skip_unused_fields()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The level applies to edgecache's own loggers; libraries (alembic's migration chatter, aiohttp)
    # speak at WARNING and above. aiohttp's access log of the control listener is off.
    root.setLevel(logging.WARNING)
    logging.getLogger("edgecache").setLevel(cfg.level)


def skip_unused_fields() -> None:
    """Stop every log record from computing the fields neither format prints: the caller (a walk
    up the stack for file, line and function), the thread, the process id (a ``getpid`` syscall)
    and the process name (the Logging HOWTO's "Optimization" switches). Each accepted purge logs a
    line on the event loop; paced, that line runs cold, and these were ~15% of it (decision 0025's
    addendum of branch ``purgecpu``). An exception's traceback is kept: it is not one of them."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
