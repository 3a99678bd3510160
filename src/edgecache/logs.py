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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The level applies to edgecache's own loggers; libraries (alembic's migration chatter, aiohttp)
    # speak at WARNING and above. aiohttp's access log of the control listener is off.
    root.setLevel(logging.WARNING)
    logging.getLogger("edgecache").setLevel(cfg.level)
