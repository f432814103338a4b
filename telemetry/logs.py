"""The operational log: JSON lines on stderr through `logging`, for events (start-up, controller, failures).

The per-request line does not go through here: `telemetry.request_log` writes it, in the same shape, at a
fraction of the cost. Upstream keys and URLs are never logged (nothing here receives them).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Events keep their message next to their fields ("controller lease taken" and "... lost" differ
            # only in it).
            "message": record.getMessage(),
            **(fields if isinstance(fields, dict) else {}),
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
    # The MCP client's HTTP library logs each request's full URL at INFO, which may carry a credential.
    for chatty in ("httpx2", "mcp"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

