"""Bounded file reading for every CLI input.

A file's size from ``stat`` cannot be trusted (``/dev/zero``, a FIFO and procfs files
report 0), so the limit is enforced on the bytes actually read: at most ``limit + 1``
are read, and one more than the limit is an error.  Every failure is an
:class:`~bootwatch.errors.InputError` naming the file and what was expected, which the
CLI's edge turns into exit 2 and one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

from bootwatch.errors import InputError

__all__ = [
    "DEFAULT_LIMIT",
    "read_limited",
    "read_limited_text",
]

#: Default cap for small inputs (policies, claims, requests, keys, certificates).
DEFAULT_LIMIT = 16 * 1024 * 1024


def read_limited(path: Path | str, what: str, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of ``path``, or an InputError if unreadable or over ``limit`` bytes."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except IsADirectoryError:
        raise InputError(f"{p}: cannot read {what}: it is a directory") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{p}: {what} is over the limit of {limit} bytes")
    return data


def read_limited_text(path: Path | str, what: str, limit: int = DEFAULT_LIMIT) -> str:
    """:func:`read_limited`, decoded as UTF-8 (an InputError names the offset if not)."""
    data = read_limited(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: {what} is not UTF-8 (byte offset {exc.start}: {exc.reason})"
        ) from None
