"""The rich Console every CLI table is printed on.

On a terminal rich fits tables to its width; a column then folds long cells onto
more lines instead of cutting them (``overflow="fold"`` on every column made with
:func:`table`).  When stdout is not a terminal (piped to a file, a pager, CI logs) rich
would assume 80 columns and shrink cells to ``secureboot=tr…``; there the width is
unbounded so every cell is printed whole on its row.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["PIPE_WIDTH", "make_console", "table"]

#: Width used when stdout is not a terminal: wide enough that no cell is ever cut.
PIPE_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """A Console on stdout (or stderr) that never cuts cells when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if tty else PIPE_WIDTH, soft_wrap=not tty)


def table(*columns: str, **kwargs: Any) -> Table:
    """A rich Table whose columns fold long cells instead of cutting them."""
    t = Table(**kwargs)
    for name in columns:
        t.add_column(name, overflow="fold")
    return t
