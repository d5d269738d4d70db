"""The command line, planned before anything runs: parse → plan → execute → report.

:func:`plan` turns the words of a command line into a :class:`Plan`: every parameter
checked and expanded, every ``-batchlist`` row substituted and checked, the ``list=`` or
``mirror=`` step and the resolve runs that follow it, the reserved options (``-errlist``,
``-log``, ``-onerror``) settled.  A usage error is raised here and nowhere later: what
executes a plan never calls back into the grammar (:mod:`.isisargs`).
"""

from __future__ import annotations

import os
import re

from ..base import safeio
from ..base.record import Frozen, Record, set_field
from ..errors import DataAreaError, ShapeResolverError, UnsafeFileError, UsageError
from ..models import isisfiles
from . import isisargs
from .usage import HELP

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from typing import Any

__all__ = ["Plan", "Run", "plan", "ListLineError", "CubeList", "cube_list", "MODE_KEYS", "parse_size"]

#: parameters of the list and mirror modes (not of a resolve run)
MODE_KEYS = ("list", "mirror", "prune", "maxsize")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
#: what each run's resolver is made from (runs that agree share one)
RESOLVER_KEYS = ("url", "catalog", "collection", "cache", "isisdata", "verify", "fallback")


class Plan(Frozen):
    """Everything one command line asks for, checked.

    ``help_text``: text to print and exit 0 (``--help``, ``-help[=PARAM]``; nothing else
    runs); ``show_version``: print the versions and exit 0; ``mode``: the ``list=yes`` /
    ``mirror=DIR`` step's parameters (checked, expanded), or None; ``mode_cubes``: the
    cubes the mode step names (from=/fromlist=), for its bodies; ``runs``: the resolve
    runs (after the mode step, when it is ``mirror=`` with cubes); ``abort``:
    -onerror=abort with -batchlist (stop at the first failed row).
    """

    __slots__ = ("help_text", "show_version", "mode", "mode_cubes", "runs", "json", "verbose", "quiet", "errlist",
                 "log_file", "abort")
    help_text: str | None
    show_version: bool
    mode: dict[str, str] | None
    mode_cubes: CubeList
    runs: list[Run]
    json: bool
    verbose: int
    quiet: bool
    errlist: str | None
    log_file: str | None
    abort: bool

    def __init__(self, help_text: str | None = None, show_version: bool = False, mode: dict[str, str] | None = None,
                 mode_cubes: CubeList | None = None, runs: list[Run] | None = None, json: bool = False,
                 verbose: int = 0, quiet: bool = False, errlist: str | None = None, log_file: str | None = None,
                 abort: bool = False) -> None:
        set_field(self, "help_text", help_text)
        set_field(self, "show_version", show_version)
        set_field(self, "mode", mode)
        set_field(self, "mode_cubes", CubeList(None, None) if mode_cubes is None else mode_cubes)
        set_field(self, "runs", [] if runs is None else runs)
        set_field(self, "json", json)
        set_field(self, "verbose", verbose)
        set_field(self, "quiet", quiet)
        set_field(self, "errlist", errlist)
        set_field(self, "log_file", log_file)
        set_field(self, "abort", abort)

    @property
    def total(self) -> int:
        """How many cubes the runs hold."""
        return sum(len(r.cubes) for r in self.runs)


def plan(argv: list[str] | tuple[str, ...]) -> Plan:
    """The checked plan of a command line; raises :class:`UsageError` for any problem."""
    args = isisargs.parse(argv)
    if args.help:
        wanted = args.reserved.get("help")
        return Plan(help_text=isisargs.help_text(args.params, wanted) if "help" in args.reserved else HELP)
    if args.show_version:
        return Plan(show_version=True)
    common: dict[str, Any] = dict(json=args.json, verbose=args.verbose, quiet=args.quiet)
    mode, mode_cubes, checked = None, CubeList(None, None), None
    if "batchlist" in args.reserved:
        if any(k in args.params for k in MODE_KEYS):  # they would be silently ignored
            raise UsageError("list=, mirror=, prune= and maxsize= do not go with -batchlist; run them once "
                             "with target=, from= or fromlist=")
    else:
        params = checked = _expanded(isisargs.checked(args.params))
        if params.get("audit") == "yes" and (params.get("list") == "yes" or "mirror" in params):
            raise UsageError("audit=yes goes with from=, fromlist= or -batchlist, not with list= or mirror=")
        if params.get("list") == "yes" or "mirror" in params:
            mode, mode_cubes = params, cube_list(params)
            _check_mode(params, mode_cubes)
            if params.get("list") == "yes" or not mode_cubes:
                return Plan(mode=mode, mode_cubes=mode_cubes, **common)
            # mirror= with cubes: then resolve them against the mirror's own catalog
            from ..mirror import CATALOG

            args.params = {k: v for k, v in args.params.items() if k not in (*MODE_KEYS, "collection")}
            args.params["catalog"] = os.path.join(params["mirror"], CATALOG)
            checked = None
    log_file = (args.reserved["log"] or "print.prt") if "log" in args.reserved else None  # ISIS's default
    runs = _runs(args, checked)
    _apart_from_lists(runs, args.reserved.get("batchlist"), {"-errlist": args.reserved.get("errlist"),
                                                              "-log": log_file})
    return Plan(mode=mode, mode_cubes=mode_cubes, runs=runs, errlist=args.reserved.get("errlist"),
                log_file=log_file,
                abort=args.reserved.get("onerror", "abort") == "abort" and "batchlist" in args.reserved, **common)


class Run(Record):
    """One run of the application: a batch row's (or the command line's) parameters and
    cubes; ``shown`` is the row's own command line, echoed before its cubes (a
    -batchlist row only)."""

    __slots__ = ("params", "cubes", "row", "shown")
    params: dict[str, str]
    cubes: CubeList
    row: isisargs.Row | None
    shown: str | None

    def __init__(self, params: dict[str, str], cubes: CubeList, row: isisargs.Row | None = None,
                 shown: str | None = None) -> None:
        self.params, self.cubes, self.row, self.shown = params, cubes, row, shown


def _apart_from_lists(runs: list[Run], batchlist: str | None, outputs: dict[str, str | None]) -> None:
    """An output (-errlist, -log) that is a list being read would be emptied before it is
    read, or read back as it grows: a usage error."""
    lists = {p for p in [batchlist, *(run.params.get("fromlist") for run in runs)] if p}
    for option, out in outputs.items():
        if not out:
            continue
        for lst in lists:
            try:
                same = os.path.samefile(out, os.path.expanduser(lst))
            except OSError:
                continue  # (not there yet: not the list)
            if same:
                raise UsageError(f"{option}={out} is the list {lst}; give another file")


def _expanded(params: dict[str, str]) -> dict[str, str]:
    """File names as ISIS expands them (model= is expanded by the resolver, which keeps its form)."""
    out = dict(params)
    try:
        if "isisdata" in out:
            out["isisdata"] = _env_only(out["isisdata"])
        for name in ("from", "fromlist", "catalog", "mirror"):
            if name in out:
                out[name] = isisfiles.expand_isis(out[name], out.get("isisdata"))
    except DataAreaError as exc:
        raise UsageError(str(exc)) from None
    return out


def _env_only(value: str) -> str:
    value = os.path.expanduser(value)
    expanded = os.path.expandvars(value)
    if "$" in expanded:
        raise UsageError(f"isisdata={value}: names an unset environment variable")
    return expanded


def _check_mode(params: dict[str, str], cubes: Collection[Any]) -> None:
    """The ``list=``/``mirror=`` parameters together (each alone is checked by the grammar)."""
    if params.get("list") == "yes" and "mirror" in params:
        raise UsageError("give list=yes or mirror=DIR, not both")
    if "mirror" not in params:
        if "prune" in params or "maxsize" in params:
            raise UsageError("prune= and maxsize= go with mirror=DIR")
        return
    if not cubes and "target" not in params:
        raise UsageError("mirror=DIR needs target=NAME[,NAME...], from=CUBE or fromlist=LIST (the bodies to mirror)")
    cat = params.get("catalog") or ""
    cat = cat[7:] if cat.startswith("file://") else cat
    if cat and not re.match(r"https?://", cat) and os.path.commonpath(
            [os.path.abspath(cat), os.path.abspath(params["mirror"])]) == os.path.abspath(params["mirror"]):
        raise UsageError("mirror=DIR cannot mirror its own catalog")
    if "maxsize" in params:
        parse_size(params["maxsize"])


def parse_size(text: str) -> int:
    """``maxsize=`` in bytes: ``5000000000``, ``80G``, ``512M``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise UsageError(f"maxsize={text} is not a size (bytes, or with K, M, G or T)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _runs(args: isisargs.Args, params: dict[str, str] | None = None) -> list[Run]:
    """Every run, parameters checked, before any cube is touched (``params``: the command
    line's own, already checked and expanded)."""
    batch = args.reserved.get("batchlist")
    if batch is None:
        params = params if params is not None else _expanded(isisargs.checked(args.params))
        cubes = cube_list(params)
        if not cubes and "fromlist" not in params:  # an empty list is 0 cubes
            raise UsageError("give from=CUBE or fromlist=LIST (target= overrides their TargetName)"
                             if "target" in params else "give from=CUBE or fromlist=LIST (see --help)")
        return [Run(params, cubes)]
    runs = []
    for row in isisargs.read_batchlist(os.path.expanduser(batch)):
        try:
            params = {k: isisargs.substitute(v, row.cols) for k, v in args.params.items()}
            params = _expanded(isisargs.checked(params))
        except UsageError as exc:
            raise UsageError(f"{batch}: row {row.line.strip()!r}: {exc}") from None
        cubes = cube_list(params)
        if not cubes and "fromlist" not in params:
            raise UsageError(f"{batch}: row {row.line.strip()!r}: give from=CUBE or fromlist=LIST")
        runs.append(Run(params, cubes, row, isisargs.command_line(params)))
    return runs


#: longest line of a ``fromlist=`` file that can name a cube (a path is at most 4096 bytes)
MAX_LIST_LINE = 64 * 1024
_BLOCK = 64 * 1024


class ListLineError(ShapeResolverError, ValueError):
    """One line of a ``fromlist=`` file cannot name a cube (not UTF-8, a NUL byte, too long)."""


class CubeList:
    """The cubes of one run, as a stream: ``from=``, then the lines of ``fromlist=``.

    The list file is checked when the plan is made (a regular file that can be read, or
    a usage error); every iteration opens it again and reads it a block at a time, so a
    list of a million lines is never held in memory.  A line that cannot name a cube is a
    (shown name, :class:`ListLineError`) pair, and so is the list itself when it cannot
    be read again.  ``len()`` counts the entries (one pass, remembered).
    """

    def __init__(self, single: str | None, path: str | None) -> None:
        self.single, self.path = single, path
        self._len: int | None = None
        if path is not None:
            os.close(self._open())

    def _open(self) -> int:
        assert self.path is not None
        try:
            return safeio.open_regular(self.path, what="fromlist")[0]
        except UnsafeFileError as exc:
            raise UsageError(str(exc)) from None

    def __iter__(self) -> Iterator[str | tuple[str, ListLineError]]:
        if self.single is not None:
            yield self.single
        if self.path is None:
            return
        try:
            fd = self._open()
        except UsageError as exc:  # it went away since the plan was made
            yield self.path, ListLineError(f"{exc}; its cubes were not read")
            return
        try:
            yield from self._entries(fd)
        finally:
            os.close(fd)

    def _entries(self, fd: int) -> Iterator[str | tuple[str, ListLineError]]:
        for n, raw in enumerate(_lines(fd), 1):
            if raw is None:
                yield ("(a line of more than 64 KiB)",
                       ListLineError(f"{self.path} line {n}: longer than {MAX_LIST_LINE} bytes; not a file name"))
                continue
            raw = raw.strip()
            if not raw or raw.startswith(b"#"):
                continue
            shown = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
            if b"\0" in raw:
                yield shown, ListLineError(f"{self.path} line {n}: contains a NUL byte; not a file name")
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                yield shown, ListLineError(f"{self.path} line {n}: not valid UTF-8; not a file name")

    def __contains__(self, cube: object) -> bool:
        return any(c == cube for c in self)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len


def _lines(fd: int) -> Iterator[bytes | None]:
    """The file's lines (without the newline); None for one too long to name a file."""
    offset, rest, long = 0, b"", False
    while True:
        block = os.pread(fd, _BLOCK, offset)
        if not block:
            break
        offset += len(block)
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield None if long or len(line) > MAX_LIST_LINE else line
            long = False
        if len(rest) > MAX_LIST_LINE:
            rest, long = b"", True
    if rest or long:
        yield None if long else rest


def cube_list(opts: dict[str, Any]) -> CubeList:
    """The cubes to process (``from=``, then ``fromlist=``'s lines), read as a stream."""
    return CubeList(opts.get("from"), opts.get("fromlist"))
