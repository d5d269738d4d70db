"""Format one PVL keyword statement the way ISIS writes it.

ISIS pads keyword names to the longest name in their group, writes `` = ``, quotes
values that need it and wraps long values at 80 columns: at a space when it can, else
by cutting the value and ending the line with ``-`` (a reader joins the next trimmed
line directly).  Continuation lines are indented to the value's start column.
"""

from __future__ import annotations

import re

from .errors import InvalidValueError

__all__ = ["LINE_WIDTH", "check_value", "quote_value", "format_statement"]

LINE_WIDTH = 80
_NEEDS_QUOTES = re.compile(r"[ (){},=]|-$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\"']")


def check_value(value: str) -> str:
    """Return ``value`` if it can be written into a label, else raise InvalidValueError."""
    bad = _FORBIDDEN.search(value)
    if bad:
        raise InvalidValueError(
            f"refusing to write {value!r}: it contains {bad.group()!r}, which would break the label"
        )
    if value != value.strip():
        raise InvalidValueError(f"refusing to write {value!r}: leading or trailing whitespace")
    return value


def quote_value(value: str) -> str:
    """Render a string value as ISIS does: ``Null`` when empty, quoted when needed."""
    check_value(value)
    if value == "":
        return "Null"
    if _NEEDS_QUOTES.search(value):
        return f'"{value}"'
    return value


def _wrap(text: str, width: int) -> list[str]:
    """Split ``text`` into pieces that fit ``width`` columns, ISIS style."""
    pieces: list[str] = []
    while len(text) > width:
        space = text.rfind(" ", 0, width + 1)
        if space > 0:
            pieces.append(text[:space])
            text = text[space + 1 :]
            continue
        cut = width - 1
        # never split a "//" across lines: a reader could take it for a comment start
        while cut > 1 and text[cut - 1] == "/" and text[cut] == "/":
            cut -= 1
        pieces.append(text[:cut] + "-")
        text = text[cut:]
    pieces.append(text)
    return pieces


def format_statement(name: str, value: str, indent: int, name_width: int, newline: str = "\n") -> str:
    """Return the full text (with trailing newline) of ``name = value`` ISIS-style.

    ``indent`` is the number of spaces before the name, ``name_width`` the padded width
    of names in the group (the longest name there).
    """
    rendered = quote_value(value)
    width = max(len(name), name_width)
    start_column = indent + width + 3
    usable = LINE_WIDTH - 2 - start_column
    lines = _wrap(rendered, usable) if usable > 10 else [rendered]
    head = " " * indent + name.ljust(width) + " = "
    pad = " " * start_column
    return head + (newline + pad).join(lines) + newline
