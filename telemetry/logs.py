"""One structured JSON line per request on the `cutover.access` logger.

Prompts and outputs are not logged unless `server.log_bodies` is set; upstream
keys and URLs never are (nothing here receives them).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

ACCESS_LOGGER = "cutover.access"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict):
            fields = {"message": record.getMessage()}
        elif record.name != ACCESS_LOGGER:
            # Operational events keep their message next to their fields ("controller lease taken"
            # and "... lost" differ only in it); access lines stay fields only.
            fields = {"message": record.getMessage(), **fields}
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **fields,
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            # Tracebacks go to the operator's log, never to a client.
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger("cutover")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def access_logger() -> logging.Logger:
    return logging.getLogger(ACCESS_LOGGER)


def log_request(logger: logging.Logger, fields: dict[str, Any]) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info("request", extra={"fields": fields})
