"""The rich Console every CLI table is printed on.

On a terminal rich fits tables to its width; a column then folds long cells onto
more lines instead of cutting them (``overflow="fold"`` on every column made with
:func:`table`).  When stdout is not a terminal (piped to a file, a pager, CI logs) rich
would assume 80 columns and shrink cells to ``secureboot=tr…``; there the width is
unbounded so every cell is printed whole on its row.

What the monitor returns is partly written by VMs (names, groups, event and component
descriptions, GRUB command lines, alert texts): :func:`safe` makes such a value print as
the text it is, never as rich markup (``[red]x[/red]``, ``[link=...]``; a severity such
as ``[medium]`` is no style either) and never as a terminal escape sequence; :func:`printable`
does the second for plain ``click.echo`` lines.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["PIPE_WIDTH", "make_console", "printable", "safe", "table"]

#: C0 controls but the newline, DEL and C1 controls: ESC and CSI start terminal escape
#: sequences (clear the screen, retitle the window, fake a hyperlink), BEL and CR rewrite
#: what was shown; rich strips only a few of them and passes ESC through
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]"
                      # and Unicode's invisible formatting characters: direction overrides
                      # and isolates turn "web<RLO>gnp.exe" into "webexe.png", zero-width
                      # ones hide text (found in review)
                      "|[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")

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


def printable(value: object) -> str:
    """``value`` as text with every control character but the newline written out as an
    escape (``\\x1b``), so what a VM chose cannot drive the terminal."""
    return _CONTROL.sub(_escaped, str(value))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return f"\\u{ord(char):04x}" if ord(char) > 0xFF else repr(char)[1:-1]


def safe(value: object) -> str:
    """``value`` for a rich string or table cell: printable, and its brackets text, not
    markup."""
    return escape(printable(value))
