"""A small, fast reader for the PVL that ISIS writes, keeping byte offsets.

``pvl.loads`` is complete but costs tens of milliseconds per label; the resolver only
needs a few keywords and the exact extent of each statement (to splice the Kernels
group).  :func:`scan` walks the label once and returns every statement with its
position, its raw value text and a decoded string value.  Anything it does not
understand raises :class:`ScanError`, and callers fall back to ``pvl``.

The text is a ``str`` decoded as Latin-1, so character offsets are byte offsets.
"""

from __future__ import annotations

import re
from collections import namedtuple

from ..base.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

__all__ = ["ScanError", "ScanTruncated", "ScanLimit", "skip_blank", "MAX_DEPTH", "Statement", "Aggregate", "Scan", "scan", "decode_quoted"]


class ScanError(ValueError):
    """The fast reader cannot read this text (callers fall back to ``pvl``)."""

    def __init__(self, message: str, text: str, pos: int) -> None:
        self.line = text.count("\n", 0, pos) + 1
        if len(message) > 120:
            message = message[:117] + "..."
        super().__init__(f"{message} at line {self.line}")


class ScanTruncated(ScanError):
    """The text ended before the label's ``End`` statement."""


if TYPE_CHECKING:
    class Statement(NamedTuple):
        """One ``Name = Value`` statement."""

        path: tuple[str, ...]  # enclosing aggregate names, outermost first, as written
        name: str  # keyword as written
        start: int  # offset of the first character of its line (indentation included)
        name_start: int  # offset of the keyword
        eq: int  # offset of "="
        end: int  # offset just past the newline that ends the statement
        raw: str  # the value text as written (continuations included)
        value: str | tuple[str, ...]  # decoded: quotes removed, continuations joined
else:  # the same tuple, made without loading typing (a label holds hundreds of them)
    Statement = namedtuple("Statement", "path name start name_start eq end raw value")
    Statement.__doc__ = "One ``Name = Value`` statement."


class Aggregate(Record):
    """An ``Object`` or ``Group`` block."""

    __slots__ = ("kind", "name", "path", "start", "end_line", "end")
    kind: str  # "OBJECT" or "GROUP"
    name: str
    path: tuple[str, ...]  # enclosing aggregate names
    start: int  # offset of its first line
    end_line: int  # offset of the line holding End_Group / End_Object (-1: not yet seen)
    end: int  # offset past that line (-1: not yet seen)

    def __init__(self, kind: str, name: str, path: tuple[str, ...], start: int, end_line: int = -1,
                 end: int = -1) -> None:
        self.kind, self.name, self.path, self.start, self.end_line, self.end = kind, name, path, start, end_line, end


class Scan(Record):
    """Everything :func:`scan` found."""

    __slots__ = ("statements", "aggregates", "end", "newline", "_index")
    _derived = ("_index",)
    statements: list[Statement]
    aggregates: list[Aggregate]
    end: int  # offset just past the line holding ``End``
    newline: str
    _index: tuple[dict[tuple[tuple[str, ...], str], Statement], dict[tuple[str, ...], Aggregate], int] | None

    def __init__(self, statements: list[Statement] | None = None, aggregates: list[Aggregate] | None = None,
                 end: int = 0, newline: str = "\n") -> None:
        self.statements = [] if statements is None else statements
        self.aggregates = [] if aggregates is None else aggregates
        self.end, self.newline = end, newline
        self._index = None

    def _lookup(self) -> tuple[dict[tuple[tuple[str, ...], str], Statement], dict[tuple[str, ...], Aggregate], int]:
        """The first statement of each (upper-cased path, name) and the first aggregate of
        each upper-cased full path; made on first use (again if the lists have grown)."""
        idx = self._index
        size = len(self.statements) + len(self.aggregates)
        if idx is None or idx[2] != size:
            upper: dict[tuple[str, ...], tuple[str, ...]] = {}  # (statements of a group share its path)
            names: dict[tuple[tuple[str, ...], str], Statement] = {}
            for st in self.statements:
                path = upper.get(st.path)
                if path is None:
                    path = upper[st.path] = tuple(p.upper() for p in st.path)
                names.setdefault((path, st.name.upper()), st)
            groups: dict[tuple[str, ...], Aggregate] = {}
            for ag in self.aggregates:
                groups.setdefault(tuple(p.upper() for p in ag.path) + (ag.name.upper(),), ag)
            idx = self._index = (names, groups, size)
        return idx

    def find(self, path: tuple[str, ...], name: str) -> Statement | None:
        """First statement ``name`` directly inside ``path`` (case-insensitive)."""
        return self._lookup()[0].get((tuple(p.upper() for p in path), name.upper()))

    def aggregate(self, path: tuple[str, ...]) -> Aggregate | None:
        """The first aggregate whose full path (its own name last) is ``path``."""
        return self._lookup()[1].get(tuple(p.upper() for p in path))

    def group_keywords(self, parent: str) -> dict[tuple[str, str], Statement]:
        """``{(GROUP, KEYWORD): first statement}`` of every group directly in the
        top-level object ``parent`` (names upper-cased)."""
        top = parent.upper()
        return {(path[1], name): st for (path, name), st in self._lookup()[0].items()
                if len(path) == 2 and path[0] == top}


_WS = re.compile(r"[ \t\r\n\f\v]*")
# after a value: an optional comment running to the end of the line (ISIS's rule for
# "#", "//" and "/*": a "/*" that does not close on its line comments out the rest of it)
_INLINE = re.compile(r"[ \t]*(?:#[^\n]*|//[^\n]*|/\*[^\n]*)?[ \t\r]*(?:\n|\Z)")
#: refuse labels nested deeper than this (ISIS labels nest 3 or 4 levels)
MAX_DEPTH = 64
#: refuse labels with more statements than this (real labels have a few thousand)
MAX_STATEMENTS = 200_000
_NAME = re.compile(r"[^\s=#(){}<>\"',;]+")
_SPACES = re.compile(r"[ \t]*")
_UNQUOTED = re.compile(r"[^\s#<>(){}\",]+")
_CONTINUATION = re.compile(r"-[ \t]*\r?\n[ \t]*")
#: refuse an unquoted value continued over more lines than this
MAX_CONTINUATIONS = 10_000
_CONTINUED = re.compile(r"[^\s#<>(){}\",]+(?:(?<=-)[ \t]*\r?\n[ \t]*[^\s#<>(){}\",]+){0,%d}" % MAX_CONTINUATIONS)  # noqa: UP031 - braces in the pattern
_MORE = re.compile(r"(?<=-)[ \t]*\r?\n[ \t]*[^\s#<>(){}\",]")
#: refuse a sequence with more brackets and quotes, or more items, than this
MAX_SEQUENCE = 100_000
_UNITS = re.compile(r"[ \t]*<[^>\n]*>")
_WHITE = re.compile(r"\s+")
_SEQ_TOKENS = re.compile(r"[(){}\"']")
# the common case, one line "  Name = value" with a plain or quoted value, maybe with
# units: no sequence, comment, continuation or quote spanning lines
_SIMPLE = re.compile(r"([ \t]*)([A-Za-z0-9_^:.\-]+)([ \t]*)=[ \t]*(?:([^\s\"'(){}<>#,]*[^\s\"'(){}<>#,\-])"
                     r"|\"([^\"\n]*)\")([ \t]*<[^>\n]*>)?[ \t]*\n")
# the other common lines: End_Group / End_Object alone on their line (any case)
_CLOSE = re.compile(r"[ \t]*((?i:end_?group|end_?object))[ \t]*\n")
_BEGIN = {"OBJECT": "OBJECT", "BEGIN_OBJECT": "OBJECT", "GROUP": "GROUP", "BEGIN_GROUP": "GROUP"}
_FINISH = {"END_OBJECT": "OBJECT", "ENDOBJECT": "OBJECT", "END_GROUP": "GROUP", "ENDGROUP": "GROUP"}


def _end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that may match nothing) stops matching from ``pos``."""
    m = pattern.match(text, pos)
    return m.end() if m else pos


def decode_quoted(inner: str) -> str:
    """Decode the inside of a quoted PVL string as ``pvl`` does."""
    if "\n" in inner:
        inner = _CONTINUATION.sub("", inner)
    return _WHITE.sub(" ", inner) if ("  " in inner or "\n" in inner or "\t" in inner) else inner


class ScanLimit(ScanError):
    """The text is beyond the reader's bounds (depth, statement count): never retried."""


def skip_blank(text: str, pos: int) -> int:
    """Skip whitespace and comment lines from ``pos``; linear in what it skips.

    Comments open with ``#``, ``//`` or ``/*``; a ``/*`` comment ends at its ``*/`` when
    that is on the same line, else at the end of the line (old ISIS labels have such
    lines, and ISIS reads them).
    """
    n = len(text)
    while True:
        pos = _end(_WS, text, pos)
        if pos >= n:
            return pos
        c = text[pos]
        if c == "#" or text.startswith("//", pos):
            eol = text.find("\n", pos)
            pos = n if eol < 0 else eol
        elif text.startswith("/*", pos):
            eol = text.find("\n", pos)
            eol = n if eol < 0 else eol
            close = text.find("*/", pos + 2, eol)
            pos = eol if close < 0 else close + 2
        else:
            return pos


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _finish_line(text: str, pos: int) -> int:
    """Skip an inline comment and the newline after a statement; return the next offset."""
    m = _INLINE.match(text, pos)
    if not m:
        raise ScanError("unexpected text after a value", text, pos)
    return m.end()


def _split_sequence(body: str) -> tuple[str, ...]:
    inner = body[1:-1]
    if not any(c in inner for c in "\"'(){}-\n"):  # the common case: plain values on one line
        return tuple(part for part in (p.strip() for p in inner.split(",")) if part)
    items: list[str] = []
    for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^,(){}]+', body):
        part = part.strip()
        if not part:
            continue
        if part[0] in "\"'":
            items.append(decode_quoted(part[1:-1]))
        else:
            items.append(_CONTINUATION.sub("", part).strip())
    return tuple(items)


def _value(text: str, pos: int) -> tuple[int, str | tuple[str, ...]]:
    """Parse the value starting at ``pos``; return (end offset, decoded value)."""
    n = len(text)
    if pos >= n:
        raise ScanTruncated("the label ends inside a statement", text, pos)
    c = text[pos]
    if c in "\"'":
        close = text.find(c, pos + 1)
        if close < 0:
            raise ScanTruncated("unterminated quoted string", text, pos)
        value: str | tuple[str, ...] = decode_quoted(text[pos + 1 : close])
        end = close + 1
    elif c in "({":
        depth = 0
        i = pos
        end = -1
        tokens = 0
        while True:
            m = _SEQ_TOKENS.search(text, i)
            if not m:
                raise ScanTruncated("unterminated sequence", text, pos)
            tokens += 1
            if tokens > MAX_SEQUENCE or depth > MAX_DEPTH:
                raise ScanLimit("sequence too large or nested too deeply", text, pos)
            ch = m.group()
            if ch in "\"'":
                close = text.find(ch, m.end())
                if close < 0:
                    raise ScanTruncated("unterminated quoted string", text, m.start())
                i = close + 1
                continue
            depth += 1 if ch in "({" else -1
            i = m.end()
            if depth == 0:
                end = i
                break
        if text.count(",", pos, end) > MAX_SEQUENCE:
            raise ScanLimit(f"sequence of more than {MAX_SEQUENCE} items", text, pos)
        value = _split_sequence(text[pos:end])
    else:
        # ISIS dash continuation: an unquoted value ending in "-" continues on the next
        # line (one regular expression, so a value continued over millions of lines is fast)
        m = _CONTINUED.match(text, pos)
        if not m:
            raise ScanError("expected a value", text, pos)
        end = m.end()
        raw = m.group()
        if raw.endswith("-") and _MORE.match(text, end):
            raise ScanLimit(f"a value continued over more than {MAX_CONTINUATIONS} lines", text, pos)
        value = _CONTINUATION.sub("", raw) if "\n" in raw else raw
    units = _UNITS.match(text, end)
    if units:
        end = units.end()
    return end, value


def scan(text: str) -> Scan:
    """Read ISIS PVL ``text`` up to its ``End`` statement.

    Raises :class:`ScanTruncated` when the text ends first and :class:`ScanError` for
    anything else it cannot read.
    """
    out = Scan(newline="\r\n" if "\r\n" in text[:4096] else "\n")
    stack: list[Aggregate] = []
    path: tuple[str, ...] = ()
    n = len(text)
    pos = 0
    statements, aggregates = out.statements, out.aggregates
    simple_at, close_at, make = _SIMPLE.match, _CLOSE.match, tuple.__new__  # (hot: bound once)
    while True:
        if len(statements) + len(aggregates) > MAX_STATEMENTS:
            raise ScanLimit(f"more than {MAX_STATEMENTS} statements", text, pos)
        # (the fast paths below read a subset of what the general path after them reads,
        # exactly as it reads it; ``pos`` is at the start of a line here)
        if text.startswith("\n", pos):  # a blank line
            pos += 1
            continue
        simple = simple_at(text, pos)
        if simple is not None and simple.group(2).upper() not in _FINISH:  # ("End_Group = Name" closes)
            name, plain = simple.group(2), simple.group(4)
            if plain is not None:
                value, vstart, vend = plain, simple.start(4), simple.end(4)
            else:  # a quoted value on its line
                value, vstart, vend = decode_quoted(simple.group(5)), simple.start(5) - 1, simple.end(5) + 1
            upper = name.upper()
            if upper in _BEGIN:
                if len(stack) >= MAX_DEPTH:
                    raise ScanLimit(f"objects and groups nested more than {MAX_DEPTH} deep", text, pos)
                ag = Aggregate(_BEGIN[upper], value, path, pos)
                out.aggregates.append(ag)
                stack.append(ag)
                path = path + (ag.name,)
            else:
                units = simple.end(6)
                statements.append(make(Statement, (path, name, pos, simple.start(2), simple.end(3), simple.end(),
                                                   text[vstart : units if units >= 0 else vend], value)))
            pos = simple.end()
            continue
        close = close_at(text, pos)
        if close is not None and stack and stack[-1].kind == _FINISH[close.group(1).upper()]:
            ag = stack.pop()
            ag.end_line, ag.end = pos, close.end()
            pos = ag.end
            path = path[:-1]
            continue
        pos = skip_blank(text, pos)
        if pos >= n:
            raise ScanTruncated("no End statement", text, pos)
        m = _NAME.match(text, pos)
        if not m:
            raise ScanError(f"unexpected character {text[pos]!r}", text, pos)
        name = m.group()
        upper = name.upper()
        start = _line_start(text, pos)
        after = _end(_SPACES, text, m.end())
        has_eq = after < n and text[after] == "="
        if upper == "END" and not has_eq:
            if stack:
                raise ScanError(f"End before End_{stack[-1].kind.title()} of {stack[-1].name}", text, pos)
            out.end = _finish_line(text, m.end())
            return out
        if upper in _FINISH:
            if not stack or stack[-1].kind != _FINISH[upper]:
                raise ScanError(f"unexpected {name}", text, pos)
            pos = m.end()
            if has_eq:  # "End_Group = Name" is legal PVL
                pos, _ = _value(text, skip_blank(text, after + 1))
            ag = stack.pop()
            ag.end_line = start
            ag.end = _finish_line(text, pos)
            pos = ag.end
            path = path[:-1]
            continue
        if not has_eq:
            if after >= n:
                raise ScanTruncated("the label ends inside a statement", text, after)
            raise ScanError(f"expected '=' after {name}", text, after)
        vstart = skip_blank(text, after + 1)
        vend, value = _value(text, vstart)
        if upper in _BEGIN:
            if len(stack) >= MAX_DEPTH:
                raise ScanLimit(f"objects and groups nested more than {MAX_DEPTH} deep", text, pos)
            ag = Aggregate(_BEGIN[upper], value if isinstance(value, str) else str(value), path, start)
            out.aggregates.append(ag)
            stack.append(ag)
            path = path + (ag.name,)
            pos = _finish_line(text, vend)
            continue
        end = _finish_line(text, vend)
        out.statements.append(
            Statement(path, name, start, pos, after, end, text[vstart:vend], value)
        )
        pos = end
