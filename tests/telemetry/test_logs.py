"""The operational log's JSON lines: an event keeps its message beside its fields."""

from __future__ import annotations

import logging
import re
import sys

import orjson

from telemetry.logs import JsonLineFormatter


def _record(msg: str, fields: object = None, level: int = logging.WARNING, with_exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if with_exc else None
    record = logging.LogRecord("cutover.controller", level, __file__, 1, msg, None, exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_an_event_line_has_its_message_then_its_fields() -> None:
    line = orjson.loads(JsonLineFormatter().format(_record("controller lease taken", {"holder": "a", "ttl_s": 5})))
    assert list(line) == ["ts", "level", "logger", "message", "holder", "ttl_s"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert (line["level"], line["logger"]) == ("warning", "cutover.controller")
    assert line["message"] == "controller lease taken"


def test_without_fields_only_the_message_and_an_error_keeps_its_traceback() -> None:
    assert orjson.loads(JsonLineFormatter().format(_record("plain")))["message"] == "plain"
    try:
        raise ValueError("boom")
    except ValueError:
        line = orjson.loads(JsonLineFormatter().format(_record("failed", level=logging.ERROR, with_exc=True)))
    assert "ValueError: boom" in line["exception"]
