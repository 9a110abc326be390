"""The one JSON reader for untrusted input: a documented nesting limit, typed errors.

Python's ``json`` parser recurses once per nesting level, so a body of 100,000 ``[``
ends in a ``RecursionError`` (a bug-shaped 500 if nobody catches it), and a value
nested a few hundred levels deep parses but can blow the stack of whatever walks or
re-serialises it later.  Every reader of client-supplied JSON in the service (request
bodies, JWS headers and payloads, bearer-token headers) goes through
:func:`read_json`, which refuses anything nested deeper than :data:`MAX_JSON_DEPTH`
levels with a :class:`JsonDepthError` naming the limit, and any other malformed text
with a :class:`~bootwatch.errors.ProtocolError` naming line:column.

Depth counts containers: ``1`` and ``"x"`` have depth 0, ``[]`` and ``{}`` depth 1,
``[[1]]`` depth 2.  The check is cheap: when the text holds no more opening brackets
than the limit it cannot be too deep and nothing is walked; otherwise the parsed value
is walked once, iteratively.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from bootwatch.errors import ProtocolError

#: Deepest nesting of arrays and objects accepted in untrusted JSON.  MAA's documents
#: (AzureGuest requests, TPM protocol messages, JWS headers and payloads, policy
#: certificates) nest at most 5 levels; 64 leaves room for client payloads.
MAX_JSON_DEPTH = 64

#: NUL or a UTF-16 surrogate: JSON's ``\u0000`` and a lone ``\ud800`` escape decode to
#: them, yet no database text column holds NUL (PostgreSQL) and no UTF-8 text holds a
#: lone surrogate, so such a string fails far from where it came in (a 5xx on storing it)
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be kept as text (NUL, a lone surrogate), or None when it can.

    A valid surrogate pair in the JSON decodes to one code point and is fine.
    """
    found = _UNSTORABLE_RE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "is not valid Unicode text (a lone UTF-16 surrogate)"


def storable_text(value: str) -> str:
    """``value`` with every character :func:`text_problem` refuses (NUL, a lone
    surrogate) replaced by U+FFFD: for text a peer will read with text_problem, such as
    descriptions of event data (unmeasured, so any bytes a guest likes)."""
    return _UNSTORABLE_RE.sub("\ufffd", value) if _UNSTORABLE_RE.search(value) else value


class JsonDepthError(ProtocolError):
    """Untrusted JSON nested deeper than the limit (the message names the limit)."""

    code = "json_too_deep"

    def __init__(self, limit: int, *, field: str | None = None) -> None:
        super().__init__(
            f"JSON nested deeper than the limit of {limit} levels of arrays and objects",
            field=field,
        )
        self.limit = limit


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether the parsed ``value`` nests arrays/objects more than ``limit`` levels deep.

    Iterative (an explicit stack), so it cannot itself overflow the interpreter stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth))
    return False


def check_json_depth(
    value: Any, *, field: str | None = None, limit: int = MAX_JSON_DEPTH
) -> None:
    """Raise :class:`JsonDepthError` when an already parsed ``value`` is too deep."""
    if json_depth_exceeds(value, limit):
        raise JsonDepthError(limit, field=field)


def _openers(text: str | bytes) -> int:
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{")
    return text.count("[") + text.count("{")


def read_json(
    data: str | bytes,
    *,
    field: str | None = None,
    limit: int = MAX_JSON_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """Parse untrusted JSON ``data`` (UTF-8 bytes or text) at most ``limit`` levels deep.

    ``field`` names where the JSON came from in error messages (a JSON path, a header
    name).  A ``ProtocolError`` raised by one of the hooks is re-raised with ``field``.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"not UTF-8 at byte {exc.start}", field=field) from None
    else:
        text = data
    try:
        value = json.loads(
            text, object_pairs_hook=object_pairs_hook, parse_constant=parse_constant
        )
    except RecursionError:
        # the parser's own recursion limit is far above ``limit``
        raise JsonDepthError(limit, field=field) from None
    except JsonDepthError:
        raise
    except ProtocolError as exc:
        raise ProtocolError(exc.message, field=field) from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"invalid JSON at line {exc.lineno}:{exc.colno}: {exc.msg}", field=field
        ) from None
    if _openers(text) > limit:
        check_json_depth(value, field=field, limit=limit)
    return value


__all__ = [
    "MAX_JSON_DEPTH",
    "JsonDepthError",
    "check_json_depth",
    "json_depth_exceeds",
    "read_json",
    "storable_text",
    "text_problem",
]
