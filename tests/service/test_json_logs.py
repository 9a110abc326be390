"""The service's JSON log lines carry no terminal colour (uvicorn's color_message, ANSI)."""

from __future__ import annotations

import json
import logging

from bootwatch.service.logs import JsonFormatter


def test_uvicorn_color_message_and_ansi_escapes_are_dropped() -> None:
    record = logging.makeLogRecord({
        "name": "uvicorn.error", "levelname": "INFO", "levelno": logging.INFO,
        "msg": "Finished server process [%d] \x1b[1mbold\x1b[0m", "args": (42,),
        "color_message": "Finished server process [\x1b[36m%d\x1b[0m]",
        "provider": "shared \x1b[31mred\x1b[0m",
    })
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert "color_message" not in doc
    assert doc["msg"] == "Finished server process [42] bold"
    assert doc["provider"] == "shared red"
    assert "\x1b" not in line and "\\u001b" not in line
