"""Log formatting: one JSON object per event, human-readable on a terminal, the level respected,
never a key (tests/system/test_process_logs.py reads the lines real processes write)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.apikeys import new_key
from schemas.logs import HumanFormatter, JsonFormatter, configure


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("cohortsync.test").makeRecord(
        "cohortsync.test", logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def test_a_json_line_carries_the_event_fields() -> None:
    line = json.loads(
        JsonFormatter().format(record("GET %s %d", "/v1/status", 200, event="request", status=200))
    )
    assert line["level"] == "INFO"
    assert line["logger"] == "cohortsync.test"
    assert line["msg"] == "GET /v1/status 200"
    assert line["event"] == "request"
    assert line["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])


def test_keys_never_reach_a_line() -> None:
    key = new_key()
    try:
        raise ValueError(f"bad header ApiKey-v1 {key}")
    except ValueError:
        failed = record("refused Authorization: ApiKey-v1 %s", key, header=f"ApiKey-v1 {key}")
        failed.exc_info = __import__("sys").exc_info()
    for formatter in (JsonFormatter(), HumanFormatter()):
        text = formatter.format(failed)
        assert key not in text
        assert key[:20] not in text
        assert "[redacted]" in text
    json.loads(JsonFormatter().format(failed))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_a_terminal_gets_human_lines_and_the_level_holds() -> None:
    terminal = Terminal()
    configure(logging.WARNING, terminal)
    log = logging.getLogger("cohortsync.http")
    log.info("hidden", extra={"event": "request"})
    log.warning("GET %s %d", "/v1/status", 503, extra={"event": "request", "route": "/v1/status"})
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING cohortsync.http GET /v1/status 503  route=/v1/status" in lines[0]
    assert not lines[0].startswith("{")

    piped = io.StringIO()
    configure(logging.INFO, piped)
    log.info("shown", extra={"event": "request"})
    assert json.loads(piped.getvalue())["msg"] == "shown"
