"""The error body both of bootwatch's HTTP APIs answer with, MAA's shape:
``{"error": {"code": ..., "message": ...}}`` with the same code in ``x-ms-error-code``.
Defined once here so the service's and the monitor's OpenAPI documents describe it alike
(neither side imports the other)."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ERROR_BODY_SCHEMA"]

#: JSON Schema of the error body
ERROR_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
