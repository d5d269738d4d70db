"""Format one PVL keyword statement the way ISIS writes it.

ISIS pads keyword names to the longest name in their group, writes `` = ``, quotes
values that need it and wraps long values at 80 columns: at a space when it can, else
by cutting the value and ending the line with ``-`` (a reader joins the next trimmed
line directly).  Continuation lines are indented to the value's start column.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import InvalidValueError

__all__ = ["LINE_WIDTH", "check_value", "check_round_trip", "quote_value", "format_statement"]

LINE_WIDTH = 80
# written bare only when made of these (what ISIS writes bare in paths and URLs, and
# what every reader, pvl included, reads back bare); anything else is quoted
_BARE = re.compile(r"[A-Za-z0-9_$./:@?\-]*[A-Za-z0-9_$./:@?]")
#: values pvl reads back exactly, wrapped or not: the keywords this tool writes, and paths
#: or URLs (a leading ``/`` or ``$``, then path characters; no ``*``, so no comment)
_KNOWN_GOOD = re.compile(r"Null|RingPlane|[/$][A-Za-z0-9_$./:@?\-]*[A-Za-z0-9_$./:@?]")
_FORBIDDEN = re.compile(r"[^\x20-\x7e]|[\"']")


def check_value(value: str) -> str:
    """Return ``value`` if it can be written into a label, else raise InvalidValueError."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    bad = _FORBIDDEN.search(value)
    if bad:
        why = ("a non-ASCII character (labels are ASCII: percent-encode it)" if bad.group() > "\x7e"
               else f"{bad.group()!r}, which would break the label")
        raise InvalidValueError(f"refusing to write {shown!r}: it contains {why}")
    if value != value.strip():
        raise InvalidValueError(f"refusing to write {shown!r}: leading or trailing whitespace")
    if "  " in value:
        raise InvalidValueError(f"refusing to write {shown!r}: consecutive spaces do not read back (PVL readers collapse them)")
    return value


@lru_cache(maxsize=256)
def check_round_trip(value: str) -> str:
    """Refuse ``value`` unless ``pvl`` reads its formatted statement back exactly.

    The fast reader's own check happens on the whole spliced label; this one makes sure
    the independent reader agrees (once per distinct value).
    """
    if _KNOWN_GOOD.fullmatch(value):
        return value  # a keyword, path or URL: pvl reads these back (tests/test_lean.py samples them)
    import pvl

    text = format_statement("ShapeModel", value, 4, 25) if value != "Null" else "ShapeModel = Null\n"
    try:
        got = pvl.loads(f"Group = Kernels\n{text}End_Group\nEnd\n")["Kernels"]["ShapeModel"]
    except Exception as exc:  # noqa: BLE001 - pvl raises many unrelated types
        raise InvalidValueError(f"refusing to write {value[:80]!r}: pvl cannot read it back ({type(exc).__name__})") from None
    if value == "Null" and got is None:
        return value
    if not isinstance(got, str) or got != value:
        raise InvalidValueError(f"refusing to write {value[:80]!r}: pvl reads it back as {str(got)[:80]!r}")
    return value


def quote_value(value: str) -> str:
    """Render a string value as ISIS does: ``Null`` when empty, quoted when needed."""
    check_value(value)
    if value == "":
        return "Null"
    if value.upper() == "NULL" or _BARE.fullmatch(value):
        return value
    return f'"{value}"'


def _wrap(text: str, width: int) -> list[str]:
    """Split ``text`` into pieces that fit ``width`` columns, ISIS style.

    A quoted value stays on one line, however long: GDAL's ISIS3 driver keeps the
    newline (and a ``-``) of a quoted value that continues on the next line.
    """
    if text.startswith('"'):
        return [text]
    pieces: list[str] = []
    while len(text) > width:  # a bare value has no spaces: cut it, ending the line with "-"
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
