"""Structured JSON logs: one JSON object per line on stderr.

Log records never carry secrets: request logs name the method, path, status,
duration, client address and provider, never headers or bodies.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LOGGER",
    "JsonFormatter",
    "configure_logging",
    "get_logger",
]

LOGGER = "bootwatch.service"
#: record attributes that are not ours to log: the standard ones, and uvicorn's
#: ``color_message`` (the message again, with ANSI colour escapes for a terminal)
_STD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
#: ANSI CSI escape sequences: a JSON log line is read by programs, not a terminal
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _ANSI.sub("", record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = _ANSI.sub("", value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send bootwatch and uvicorn logs as JSON lines to stderr (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER, "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level.upper())
        log.propagate = False
    # per-request lines come from our middleware; uvicorn's access log is redundant
    logging.getLogger("uvicorn.access").disabled = True


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)
