"""Log lines every cohortsync process writes: one JSON object per event on stderr, or a
human-readable line when stderr is a terminal.

An event's fields travel in ``extra``: ``log.info("request", extra={"event": "request",
"route": ..., "status": 204})``. Only the standard library, so the edge and the workers share it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# What a LogRecord carries by itself; anything else on a record came in ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# A safety net under "never log a key": an API key (schemas.apikeys: "cs_" + 43 URL-safe
# characters) or an Authorization header value that slipped into a message is masked.
# It runs over the finished line, so it stops at a JSON string's end.
_SECRET = re.compile(r'(?i)(apikey-v1\s+)[^\s"\\]+|\bcs_[A-Za-z0-9_-]{20,}')


def _redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _redact(json.dumps(line, default=str, ensure_ascii=False))


class HumanFormatter(logging.Formatter):
    """``12:00:01.234 INFO  cohortsync.http GET /v1/status 200 route=... duration_ms=1.2``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "event")
        head, sep, tail = text.partition("\n")
        return _redact(f"{head}  {fields}{sep}{tail}" if fields else text)


def configure(level: int, stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr): JSON lines,
    or human-readable lines when it is a terminal."""
    target = stream or sys.stderr
    handler = logging.StreamHandler(target)
    handler.setFormatter(HumanFormatter() if target.isatty() else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
