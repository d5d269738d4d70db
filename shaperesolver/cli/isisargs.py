"""ISIS's command-line grammar: the parameter table, prefixes, reserved options, -batchlist.

Names are case-insensitive and may be shortened to any unique prefix (``fr=x.cub``);
list values too (``sh=ell``).  ``name=value`` may come as one, two or three argv
tokens.  ``-name`` options are ISIS's reserved options; ``--json``, ``-v``/``-q``,
``--help`` and ``--version`` are this tool's own flags.
"""

from __future__ import annotations

import os
import re

from ..base import safeio
from ..base.record import Frozen, Record, set_field
from ..errors import UnsafeFileError, UsageError
from ..policy.options import DEFAULT_COLLECTION, DEFAULT_URL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Param", "PARAMS", "RESERVED", "Args", "parse", "help_text", "read_batchlist", "substitute"]


class Param(Frozen):
    """One parameter: its default (None: none), options (list parameters) and help;
    ``kind`` is string, file, list or integer; ``env`` the environment variable that gives
    the value when the command line does not; ``builtin`` the value that applies when
    neither does (shown by -help; not a default to substitute)."""

    __slots__ = ("name", "help", "default", "options", "kind", "env", "builtin")
    name: str
    help: str
    default: str | None
    options: tuple[str, ...]
    kind: str
    env: str | None
    builtin: str | None

    def __init__(self, name: str, help: str, default: str | None = None, options: tuple[str, ...] = (),
                 kind: str = "string", env: str | None = None, builtin: str | None = None) -> None:
        set_field(self, "name", name)
        set_field(self, "help", help)
        set_field(self, "default", default)
        set_field(self, "options", options)
        set_field(self, "kind", kind)
        set_field(self, "env", env)
        set_field(self, "builtin", builtin)


PARAMS: tuple[Param, ...] = (
    Param("from", "an attached cube (.cub) or a detached label (.lbl)", kind="file"),
    Param("fromlist", "a file with one cube per line (# comments and blank lines ignored)", kind="file"),
    Param("shape", "web: the newest DEM for the target in the STAC API, else SYSTEM, else the ellipsoid; "
          "system: the ISIS data area's DEM kernel database; ellipsoid: ShapeModel = Null; ringplane: "
          "ShapeModel = RingPlane (ring observations, as spiceinit); user: the DEM or NAIF DSK that model=PATH "
          "names", "web", ("web", "system", "ellipsoid", "ringplane", "user"), "list"),
    Param("model", "shape=user: a DEM (.cub, GeoTIFF, /vsi... path, $base/dems/...) or a NAIF DSK (.bds)",
          kind="file"),
    Param("url", f"STAC API root (default $SHAPERESOLVER_STAC_URL, else {DEFAULT_URL})", env="SHAPERESOLVER_STAC_URL",
          builtin=DEFAULT_URL),
    Param("catalog", "a static STAC catalog (path or URL) to search instead of the API", kind="file"),
    Param("collection", "the STAC collection to search", DEFAULT_COLLECTION),
    Param("target", "use this target instead of the label's TargetName"),
    Param("version", "shape=web: pin a model version (version=5 matches \"0005\")"),
    Param("verify", "open each web/user model and check it fits the body", "yes", ("yes", "no"), "list"),
    Param("cache", "the on-disk search cache ($SHAPERESOLVER_CACHE_DIR)", "yes", ("yes", "no", "refresh"), "list"),
    Param("isisdata", "the ISIS data area (default $ISISDATA)", kind="file", env="ISISDATA"),
    Param("dryrun", "show what would be written, write nothing", "no", ("yes", "no"), "list"),
    Param("jobs", "N worker processes write N cubes at a time (0 = one per core)", "1", kind="integer"),
    Param("scheduler", "run the batch on a Dask cluster (tcp://host:8786; the shaperesolver[dask] extra)"),
    Param("fallback", "shape=web: when to fall back to SYSTEM/the ellipsoid: nomatch (no model for the body), "
          "always (also when the search fails), never", "nomatch", ("nomatch", "always", "never"), "list"),
    Param("audit", "report what the ShapeModel each cube names is worth now (current, stale, missing, unreachable, "
          "wrong-body, unset, user), write nothing; -errlist lists the cubes to fix", "no", ("yes", "no"), "list"),
    Param("list", "list every item of the bodies (all bodies without target=/from=): id, version, date, "
          "deprecated, href, size; * marks the one a resolve would choose", "no", ("yes", "no"), "list"),
    Param("mirror", "download the chosen DEM of each body into DIR, a static catalog (DIR/catalog.json); "
          "with from=/fromlist= then resolve against it; later catalog=DIR resolves offline", kind="file"),
    Param("prune", "mirror=: drop older mirrored versions of the bodies mirrored now", "no", ("yes", "no"), "list"),
    Param("maxsize", "mirror=: the largest file to download (K, M, G, T suffixes)", "64G"),
)
BY_NAME = {p.name: p for p in PARAMS}
_BOOL_WORDS = {"true": "yes", "1": "yes", "y": "yes", "false": "no", "0": "no", "n": "no"}

#: ISIS's reserved options; value: None = what it does here, else why it is refused
RESERVED: dict[str, str | None] = {
    "help": None, "batchlist": None, "errlist": None, "onerror": None, "log": None, "verbose": None,
    "nogui": None,
    "gui": "this tool has no GUI; give the parameters on the command line (-help lists them)",
    "webhelp": "this tool has no web help; use -help or --help",
    "last": "this tool keeps no parameter history; give the parameters again",
    "restore": "this tool keeps no parameter files; give the parameters again (-batchlist runs a list)",
    "save": "this tool keeps no parameter files; keep the command in a script",
    "preference": "this tool reads no ISIS preferences; use isisdata= or $ISISDATA for the data area",
    "info": "this tool writes no debugging report; use -v or -vv",
}
FLAGS = {"--json": "json", "-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet",
         "-h": "help", "--help": "help", "--version": "show_version"}


class Args(Record):
    """What the command line said: parameters (raw, unexpanded), reserved options and flags."""

    __slots__ = ("params", "reserved", "json", "verbose", "quiet", "help", "show_version")
    params: dict[str, str]
    reserved: dict[str, str | None]
    json: bool
    verbose: int
    quiet: bool
    help: bool
    show_version: bool

    def __init__(self) -> None:
        self.params, self.reserved = {}, {}
        self.json = self.quiet = self.help = self.show_version = False
        self.verbose = 0


def match(word: str, names: Sequence[str], what: str, shown: str | None = None) -> str:
    """The one name ``word`` is (case-insensitive, exact or a unique prefix) or UsageError."""
    low = word.lower()
    if low in names:
        return low
    hits = [n for n in names if n.startswith(low)] if low else []
    if len(hits) > 1 and all(h.startswith(hits[0]) for h in hits):
        return hits[0]  # fr= is from=, not fromlist= (a name that is a prefix of the others wins)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(f"{what} {shown or word} is ambiguous: {', '.join(hits)}")
    import difflib  # (only to suggest a spelling)

    close = difflib.get_close_matches(low, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return _unknown(f"{what} {shown or word}{hint}")


def _unknown(text: str) -> str:
    raise UsageError(f"unknown {text}; -help lists them")


def value_of(param: Param, value: str) -> str:
    """A checked value: list options by unique prefix, yes/no words, integers."""
    if param.kind == "list":
        low = value.strip().lower()
        low = _BOOL_WORDS.get(low, low) if param.options == ("yes", "no") else low
        if low not in param.options:
            hits = [o for o in param.options if low and o.startswith(low)]
            if len(hits) != 1:
                why = f"is ambiguous ({', '.join(hits)})" if hits else "is not one of"
                raise UsageError(f"{param.name}={value} {why} {'|'.join(param.options)}"
                                 if not hits else f"{param.name}={value} {why}")
            low = hits[0]
        return low
    if param.kind == "integer":
        try:
            n = int(value.strip())
        except ValueError:
            n = -1
        if n < 0:
            raise UsageError(f"{param.name}={value} is not a number of workers (0 = one per core)")
    return value


def _tokens(argv: Sequence[str]) -> list[str]:
    """Join ``from= x.cub``, ``from =x.cub`` and ``from = x.cub`` into ``from=x.cub``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if not a.startswith("-") and "=" not in a and nxt is not None and nxt.startswith("="):
            a, i = a + nxt, i + 1
            nxt = argv[i + 1] if i + 1 < len(argv) else None
        if a.endswith("=") and not a.startswith("-") and a.count("=") == 1 and nxt is not None and "=" not in nxt:
            a, i = a + nxt, i + 1
        out.append(a)
        i += 1
    return out


def parse(argv: Sequence[str]) -> Args:
    """Parse the command line; raises UsageError naming the first problem."""
    args = Args()
    toks = _tokens(argv)
    i = 0
    names = [p.name for p in PARAMS]
    while i < len(toks):
        arg = toks[i]
        i += 1
        low = arg.lower()
        if low in FLAGS:
            flag = FLAGS[low]
            if flag == "verbose":
                args.verbose += 1
            else:
                setattr(args, flag, True)
            continue
        if low == "-vv":
            args.verbose += 2
            continue
        if low.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            name = match(key, names, "parameter", arg)
            if not eq:
                if name == "dryrun" and (i >= len(toks) or "=" in toks[i] or toks[i].startswith("-")):
                    value = "yes"
                elif i < len(toks):
                    value = toks[i]
                    i += 1
                else:
                    raise UsageError(f"{arg} needs a value")
            _set(args, name, value)
            continue
        if low.startswith("-") and len(low) > 1:
            key, eq, value = arg[1:].partition("=")
            name = _reserved(key)
            if name == "verbose":
                args.verbose += 1
            elif name == "help":
                args.help = True
                args.reserved["help"] = value if eq else None
            else:
                args.reserved[name] = value if eq else None
            continue
        if "=" in arg:
            key, _, value = arg.partition("=")
            _set(args, match(key.strip(), names, "parameter", arg), value)
            continue
        _unknown(f"argument {arg} (parameters are NAME=VALUE)")
    _check_reserved(args)
    return args


def _reserved(key: str) -> str:
    low = key.lower()
    names = list(RESERVED)
    if low in names:
        name = low
    else:
        hits = [n for n in names if low and n.startswith(low)]
        if len(hits) > 1:
            raise UsageError(f"ambiguous reserved option -{key}: {', '.join('-' + h for h in hits)}")
        if not hits:
            import difflib  # (only to suggest a spelling)

            close = difflib.get_close_matches(low, names, n=1, cutoff=0.6)
            raise UsageError(f"unknown reserved option -{key}{f' (did you mean -{close[0]}?)' if close else ''}; "
                             f"choices are {', '.join('-' + n for n in names)}")
        name = hits[0]
    refused = RESERVED[name]
    if refused is not None:
        raise UsageError(f"-{name} is not available: {refused}")
    return name


def _check_reserved(args: Args) -> None:
    r = args.reserved
    for name in ("batchlist", "errlist"):
        if name in r and not r[name]:
            raise UsageError(f"-{name} needs a file: -{name}=FILE")
    if "onerror" in r:
        value = (r["onerror"] or "").lower()
        hits = [v for v in ("abort", "continue") if value and v.startswith(value)]
        if len(hits) != 1:
            raise UsageError(f"-onerror={r['onerror'] or ''} is not one of abort|continue")
        r["onerror"] = hits[0]
        if "batchlist" not in r:
            raise UsageError("-onerror needs -batchlist (fromlist= always continues after a failed cube)")
    if "errlist" in r and "batchlist" not in r and "fromlist" not in args.params:
        raise UsageError("-errlist needs -batchlist=FILE or fromlist=FILE")
    if args.quiet and args.verbose:
        raise UsageError("-q and -v contradict each other; give one")
    wanted = r.get("help")
    if args.help and wanted:
        r["help"] = match(wanted, [p.name for p in PARAMS], "parameter")


def _set(args: Args, name: str, value: str) -> None:
    if name in args.params:
        raise UsageError(f"{name}= given twice")
    args.params[name] = value


def checked(params: dict[str, str]) -> dict[str, str]:
    """Check each value (after any $n substitution) and the combinations."""
    out = {name: value_of(BY_NAME[name], value) for name, value in params.items()}
    for name in ("version", "isisdata", "model", "from", "fromlist", "catalog", "url", "collection", "target",
                 "mirror", "scheduler"):
        if name in out and not out[name].strip():
            raise UsageError(f"{name}= is empty; give a value or leave it out")
    if "from" in out and "fromlist" in out:
        raise UsageError("give from=CUBE or fromlist=LIST, not both (add the cube to the list)")
    shape = out.get("shape", "web")
    if "version" in out and shape != "web":
        raise UsageError(f"version= pins a web model; shape={shape} does not use it")
    if "fallback" in out and shape != "web":
        raise UsageError(f"fallback= is about the web step; shape={shape} does not use it")
    if "collection" in out and "catalog" in out:
        raise UsageError("collection= is for the STAC API (url=); a static catalog= has its own items")
    if "model" in out and shape != "user":
        raise UsageError("model= is only used with shape=user")
    if shape == "user" and "model" not in out:
        raise UsageError("shape=user needs model=PATH")
    if "jobs" in out and "scheduler" in out:
        raise UsageError("give jobs= or scheduler=, not both (the cluster's workers do the work)")
    if out.get("list") == "yes" and "mirror" in out:
        raise UsageError("give list=yes or mirror=DIR, not both")
    if "mirror" not in out and ("prune" in out or "maxsize" in out):
        raise UsageError("prune= and maxsize= go with mirror=DIR")
    return out


def in_effect(param: Param, params: dict[str, str], environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(the value that applies, where it came from: None for the command line, else
    ``default``, ``from $VAR`` or ``none``)."""
    value = params.get(param.name)
    if value is not None:
        return value, None
    if param.env and environ.get(param.env):
        return environ[param.env], f"from ${param.env}"
    if param.default is not None or param.builtin is not None:
        return param.default if param.default is not None else str(param.builtin), "default"
    return "(none)", "none"


def help_text(params: dict[str, str], only: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """ISIS's -help: every parameter with the value in effect (the command line's, an
    environment variable's or the default, saying which) and its options; or one, described."""
    from textwrap import wrap  # (only for -help)

    environ = os.environ if environ is None else environ
    lines = []
    for p in PARAMS:
        if only and p.name != only:  # (-help= with no name: every parameter)
            continue
        shown, where = in_effect(p, params, environ)
        head = f"{p.name.upper():<11}= {shown}" + (f"  ({where})" if where not in (None, "none") else "")
        lines.append(head)
        if only:
            lines += wrap(p.help.rstrip(".") + ".", 78, initial_indent="  ", subsequent_indent="  ",
                                   break_on_hyphens=False)
            if p.options:
                lines.append(f"  options: {', '.join(o.upper() for o in p.options)}")
        elif p.options:
            lines[-1] += f"   [{'|'.join(o.upper() for o in p.options)}]"
    return "\n".join(lines) + "\n"


MAX_BATCHLIST_BYTES = 64 * 2**20


class Row(Frozen):
    """One batch list row: the line as written (for -errlist) and its columns."""

    __slots__ = ("line", "cols")
    line: str
    cols: list[str]

    def __init__(self, line: str, cols: list[str]) -> None:
        set_field(self, "line", line)
        set_field(self, "cols", cols)


def read_batchlist(path: str) -> list[Row]:
    """The rows of an ISIS batch list (ISIS's column rules)."""
    try:
        data, _ = safeio.read_regular(path, MAX_BATCHLIST_BYTES, what="batchlist")
    except UnsafeFileError as exc:
        raise UsageError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: batchlist is not valid UTF-8") from None
    if "\0" in text:
        raise UsageError(f"{path}: batchlist contains a NUL byte")
    rows: list[Row] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"[ ]+", " ", line.replace("\t", " "))
        line = re.sub(r" ?, ?", ",", line).replace(" ", ",")
        row = [col.replace('"', "").replace("'", "") for col in line.split(",")]
        if rows and len(row) != len(rows[0].cols):
            raise UsageError(f"{path} line {n}: {len(row)} columns, not {len(rows[0].cols)}; "
                             "the number of columns must be constant in a batchlist")
        rows.append(Row(raw, row))
    if not rows:
        raise UsageError(f"{path}: batchlist has no rows")
    return rows


def substitute(value: str, row: Sequence[str]) -> str:
    """``$1``..``$9`` replaced by the row's columns; a column the row lacks is an error."""
    def col(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n > len(row):
            raise UsageError(f"${n} used but the batchlist has {len(row)} column{'s' if len(row) > 1 else ''}")
        return row[n - 1]

    return re.sub(r"\$([1-9])", col, value)


def command_line(params: dict[str, str]) -> str:
    """A parameter set as a command line, as ISIS prints each batch row."""
    def q(v: str) -> str:
        return f'"{v}"' if not v or any(c in v for c in " \t'\"$") else v

    return "shaperesolver " + " ".join(f"{k}={q(v)}" for k, v in params.items())
