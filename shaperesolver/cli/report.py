"""What the command prints: per-cube lines, one copy of each warning, progress, the summary, -log.

One cube: the Kernels group as ISIS prints it.  A list: one line per cube (the whole
block with ``-v``); a run that lasts more than a few seconds shows progress: a ``tqdm``
bar on a terminal (log lines go above it, and it is closed before the summary) or, when
stderr is not a terminal, a progress line every 10 s or 10 %.  At the end: how often each
repeated warning came, and the counts, which add up (every cube is written, would be
written, unchanged, failed or not run).  ``-q`` quiets stderr only: results on stdout stay.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ..base import log, safeio
from ..base.interrupts import Interrupts
from ..errors import shorten
from ..policy.options import SKY

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any, TextIO

__all__ = ["Reporter", "Counts", "state_of"]

LOGGER = "shaperesolver"
PROGRESS_SECONDS = 10.0
PROGRESS_MIN_CUBES = 100
#: no progress at all for a run that ends within this many seconds
PROGRESS_DELAY = 3.0


def quiet(stream: Any) -> None:
    """Point ``stream``'s descriptor at /dev/null: its reader is gone, so nothing more can
    reach it, and Python's exit-time flush must not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real stream (the command run in-process)


def state_of(rec: dict[str, Any], dryrun: bool) -> str:
    """``failed``, ``written``, ``would write`` or ``unchanged``."""
    if rec.get("error"):
        return "failed"
    if rec.get("written"):
        return "written"
    would = rec.get("would_write")
    if would is None:
        would = dryrun and rec.get("previous") != rec.get("shape_model")
    return "would write" if would else "unchanged"


def is_sky(rec: dict[str, Any]) -> bool:
    """An image of the sky: no shape model by definition (not a fallback)."""
    return str(rec.get("body") or "").upper() == SKY and not rec.get("error")


def fell_back(rec: dict[str, Any], shape: str) -> bool:
    """The cube got another kind of model than it asked for (SYSTEM under shape=system is
    not, nor the Null of a sky image)."""
    return not rec.get("error") and rec.get("source") is not None and rec["source"] != shape and not is_sky(rec)


class Counts(dict[str, int]):
    """What happened to the cubes of a run: written (or would write), unchanged, failed and
    not run add up to the total; fell back and sky count some of the written or unchanged ones.
    Would write, sky and not run are shown when there are some."""

    KEYS = ("written", "would write", "unchanged", "fell back", "sky", "failed")
    #: how a count reads in the summary
    WORDS = {"sky": "sky (no shape model)"}

    def __init__(self) -> None:
        super().__init__({k: 0 for k in self.KEYS})

    dry = False  #: a dry run was counted: "would write" replaces "written"

    def line(self, total: int) -> str:
        skip = "written" if self.dry and not self["written"] else "would write"
        shown = [k for k in self.KEYS if k not in (skip, "sky") or self[k]]
        parts = [f"{self[k]} {self.WORDS.get(k, k)}" for k in shown]
        not_run = total - sum(self[k] for k in ("written", "would write", "unchanged", "failed"))
        if not_run > 0:
            parts.append(f"{not_run} not run")
        return f"{total} cube{'s' if total != 1 else ''}: " + ", ".join(parts)


class _Repeats:
    """Lets the first copy of each warning through; counts the rest (by text without the cube).

    At most ``KEEP`` different texts are counted (a warning that names something else
    per cube is then shown each time, and memory stays bounded)."""

    KEEP = 1000

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < log.WARNING:
            return True
        msg = record.getMessage()
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        key = msg[len(first) + 2:] if isinstance(first, str) and msg.startswith(f"{first}: ") else msg
        if key not in self.seen and len(self.seen) >= self.KEEP:
            return True
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] == 1


class Reporter:
    """Everything the command prints, for one run of ``total`` cubes."""

    def __init__(self, total: int, *, as_json: bool, verbose: int, quiet: bool, log_file: str | None = None,
                 stdout: TextIO | None = None, stderr: TextIO | None = None, audit: bool = False) -> None:
        self.total = total
        self.audit = audit  # an audit run: its summary counts statuses
        self.as_json, self.verbose, self.quiet = as_json, verbose, quiet
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.human = self.err if as_json else self.out
        self.listing = total != 1  # (0: an empty fromlist still gets its summary)
        self.counts = Counts()
        self.audits: dict[str, int] = {}  # an audit's count of each status
        self.done = 0
        self.log_file = log_file
        self.log_failed = False
        self._bar: Any = None
        self._repeats = _Repeats()
        self._t0 = self._last = time.monotonic()
        self._last_tenth = 0
        self._keys = Interrupts()  # (made live by running())
        self.gone: OSError | None = None  # what a write to stdout or stderr raised (see _lost)
        self._told = False

    # ---------------------------------------------------------------- setup

    @contextmanager
    def running(self) -> Iterator[Reporter]:
        """Configure logging and the progress display for the run.

        :mod:`logging` loads when the first message to show is made (:mod:`..base.log`)."""
        level = log.ERROR if self.quiet else log.WARNING - 10 * min(self.verbose, 2)

        def setup(logging: Any) -> None:
            logger = logging.getLogger(LOGGER)
            handler = logging.StreamHandler(self.err)
            handler.setFormatter(logging.Formatter("shaperesolver: %(message)s"))
            if self.listing:
                handler.addFilter(self._repeats)
            logger.handlers[:] = [handler]
            logger.setLevel(level)
            logger.propagate = False

        log.configure(level, setup)
        show = self.listing and not self.quiet and self.total >= PROGRESS_MIN_CUBES
        with ExitStack() as stack:
            if show and _isatty(self.err):
                from tqdm import tqdm
                from tqdm.contrib.logging import logging_redirect_tqdm

                logger = log.attach().getLogger(LOGGER)
                kept = list(logger.handlers)
                self._bar = stack.enter_context(tqdm(total=self.total, file=self.err, unit="cube", leave=True,
                                                     ncols=_columns(self.err), delay=PROGRESS_DELAY))
                stack.enter_context(logging_redirect_tqdm(loggers=[logger]))
                for h in logger.handlers:
                    if h not in kept:
                        h.addFilter(self._repeats)
                stack.callback(lambda: logger.handlers.__setitem__(slice(None), kept))
            elif not show:
                self._last_tenth = 11  # no progress lines
            # (Ctrl-C waits until the cube being reported is told; not in the main thread, or
            # under a program's own handler: Python's or the program's handling)
            self._keys = stack.enter_context(Interrupts())
            try:
                yield self
            finally:
                self._bar = None

    # ---------------------------------------------------------------- per cube

    def write(self, text: str, stream: TextIO | None = None) -> None:
        """Print ``text`` (lines) without running into the progress bar."""
        stream = stream or self.human
        try:
            if self._bar is not None and (stream is self.err or _isatty(stream)):
                self._bar.write(text.rstrip("\n"), file=stream)
            else:
                stream.write(text)
                stream.flush()
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        """stdout's or stderr's reader is gone (a closed pipe, a closed terminal): both go to
        /dev/null from here, and the cube being told raises ``exc`` once it is in -log
        (:meth:`cube`), so the run stops with every cube it finished still recorded there
        and in -errlist."""
        if self.gone is None:
            self.gone = exc
        quiet(self.out)
        quiet(self.err)

    def error(self, text: str) -> None:
        """A one-line error on stderr."""
        self.write(f"shaperesolver: {printable(text)}\n", self.err)

    def cube(self, rec: dict[str, Any], kernels_text: str | None, shape: str, dryrun: bool,
             error: str | None = None) -> None:
        """Count, print and log one cube's outcome, whole (Ctrl-C waits until it is told)."""
        self._keys.hold()
        try:
            self._cube(rec, kernels_text, shape, dryrun, error)
            if self.gone is not None and not self._told:  # (the first cube whose report was lost: stop)
                self._told = True
                raise self.gone
        except BaseException:
            self._keys.unhold()  # (a Ctrl-C held meanwhile is raised after the next cube)
            raise
        self._keys.release()

    def _cube(self, rec: dict[str, Any], kernels_text: str | None, shape: str, dryrun: bool, error: str | None) -> None:
        if "status" in rec:
            self._audited(rec)
            return
        state = state_of(rec, dryrun)
        self.counts[state] += 1
        self.counts.dry = self.counts.dry or dryrun
        fb = fell_back(rec, shape)
        if fb:
            self.counts["fell back"] += 1
        if is_sky(rec):
            self.counts["sky"] += 1
        if error is not None:  # (a failed record without ``error``: a line already said why)
            self.error(error)
        if self.as_json:
            self._json(rec)
        elif state != "failed":  # a result: on stdout also with -q
            if self.listing and not self.verbose:
                self.write(_line(rec, state, fb))
            else:
                self.write(_block(rec, kernels_text, state, dryrun))
        if self.log_file:
            try:
                _append_log(self.log_file, rec, state, fb)
            except OSError as exc:  # one line, the cubes go on; the run ends with exit 1
                self.error(f"-log={self.log_file}: {exc.strerror or exc}; no more results are logged")
                self.log_file, self.log_failed = None, True
        self.done += 1
        self._progress()

    def _json(self, rec: dict[str, Any]) -> None:
        """One cube's record as a JSON line on stdout (``--json``)."""
        import json

        try:
            self.out.write(json.dumps(rec) + "\n")
            self.out.flush()
        except OSError as exc:
            self._lost(exc)

    def _audited(self, rec: dict[str, Any]) -> None:
        """One cube's audit: its line (or JSON record) on stdout, counted by status."""
        status = str(rec["status"])
        self.audits[status] = self.audits.get(status, 0) + 1
        if self.as_json:
            self._json(rec)
        else:
            self.write(_audit_line(rec))
        if self.log_file:
            try:
                append_text(self.log_file, _pvl_group("Audit", [(k, rec.get(f)) for k, f in _AUDIT_LOG_KEYS]))
            except OSError as exc:
                self.error(f"-log={self.log_file}: {exc.strerror or exc}; no more results are logged")
                self.log_file, self.log_failed = None, True
        self.done += 1
        self._progress()

    def _progress(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            return
        if self._last_tenth > 10:
            return
        now = time.monotonic()
        tenth = (10 * self.done) // self.total
        if now - self._t0 < PROGRESS_DELAY or self.done == self.total:
            return  # a short run, or the end (the summary follows): no line
        if tenth > self._last_tenth or now - self._last >= PROGRESS_SECONDS:
            self._last_tenth, self._last = tenth, now
            self.write(f"shaperesolver: progress {self.done}/{self.total} cubes "
                       f"({100 * self.done // self.total}%), {now - self._t0:.0f} s\n", self.err)

    # ---------------------------------------------------------------- the end

    def finish(self) -> None:
        """The repeated-warning counts and the summary (for lists), below the closed bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for key, n in self._repeats.seen.items():
            if n > 1:
                self.write(f"shaperesolver: the warning above came for {n} cubes in all: {shorten(key, 160)}\n", self.err)
        if self.listing and not self.quiet:
            self.write(f"shaperesolver: {self._summary()}\n", self.err)

    def _summary(self) -> str:
        if not (self.audits or self.audit):
            return self.counts.line(self.total)
        from ..policy.audit import STATUSES

        parts = [f"{self.audits[s]} {s}" for s in STATUSES if self.audits.get(s)]
        left = self.total - sum(self.audits.values())
        if left > 0:
            parts.append(f"{left} not run")
        return f"{self.total} cube{'s' if self.total != 1 else ''} audited: " + (", ".join(parts) or "none")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(stream: TextIO) -> int:
    """The terminal's width; 80 when it says 0 (a pty nobody sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


#: control characters and line separators, shown as ``\\xNN`` (made on first use)
_ESCAPES: dict[int, str] = {}


def printable(text: object) -> str:
    """``text`` on one line with control characters (a server's escape sequences, newlines) shown as ``\\xNN``."""
    s = str(text)
    if s.isprintable():  # (every character escaped below is not printable)
        return s
    if not _ESCAPES:
        _ESCAPES.update({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)})
    return s.translate(_ESCAPES)



def _line(rec: dict[str, Any], state: str, fb: bool) -> str:
    how = f"{rec['source']}, fell back" if fb else f"{rec['source']}, sky: no shape model" if is_sky(rec) else rec["source"]
    line = f"{rec['cube']}: {rec.get('body') or rec.get('target')} -> {rec['shape_model']} ({how}) [{state}]"
    if rec.get("removed_elevation_model"):
        verb = "would remove" if state == "would write" else "removed"
        line += f"; {verb} ElevationModel = {rec['removed_elevation_model']} (it would override ShapeModel)"
    return printable(line) + "\n"


def _audit_line(rec: dict[str, Any]) -> str:
    """``cube: status: what it names [-> what a resolve chooses] (why)``."""
    status = rec["status"]
    if status == "failed" and rec.get("target") is None:  # the label was never read: only why
        return printable(f"{rec['cube']}: failed: {rec.get('reason')}") + "\n"
    line = f"{rec['cube']}: {status}: {rec.get('current') or '(none)'}"
    if status not in ("current", "user") and rec.get("chosen") and rec.get("chosen") != rec.get("current"):
        line += f" -> {rec['chosen']}"
    if rec.get("reason"):
        line += f" ({rec['reason']})"
    return printable(line) + "\n"


def _block(rec: dict[str, Any], kernels_text: str | None, state: str, dryrun: bool) -> str:
    body = f" ({rec['body']})" if rec.get("body") and rec["body"] != rec["target"] else ""
    lines = [f"{rec['cube']}: TargetName = {rec['target']}{body}"]
    shown = f"dry run, {state}" if dryrun else state
    lines.append(f"  ShapeModel: {rec['previous'] or '(none)'}  ->  {rec['shape_model']}  [{shown}]")
    src = rec["source"]
    if src == "web":
        lines.append(f"  from the web: item {rec['item_id']}, version {rec['version']}")
    elif src == "system":
        lines.append(f"  from SYSTEM: {rec['db']}")
    else:
        lines.append(f"  from: {src}")
    if rec.get("fallback_reason"):
        lines.append(f"  fell back: {rec['fallback_reason']}")
    if rec.get("removed_elevation_model"):
        verb = "would remove" if dryrun else "removed"
        lines.append(f"  {verb} ElevationModel = {rec['removed_elevation_model']} (it would override ShapeModel)")
    text = "\n".join(map(printable, lines)) + "\n"
    return text + (kernels_text or "")


_LOG_KEYS = (("From", "cube"), ("TargetName", "target"), ("Body", "body"), ("ShapeModel", "shape_model"),
             ("Source", "source"), ("ItemId", "item_id"), ("Version", "version"), ("Previous", "previous"),
             ("RemovedElevationModel", "removed_elevation_model"), ("FallbackReason", "fallback_reason"),
             ("Error", "error"))


def _pvl_string(value: Any) -> str:
    if value is None:
        return "Null"
    text = re.sub(r"[^\x20-\x7e]", "?", " ".join(str(value).split())).replace('"', "'")
    return f'"{text}"'


def kept(cube: str) -> str:
    """What a cube whose run failed holds now: its ShapeModel, ``(none)``, or why it cannot be told."""
    from ..cube.label import read_label
    from ..errors import ShapeResolverError

    try:
        return read_label(cube).shape_model or "(none)"
    except (ShapeResolverError, OSError, ValueError) as exc:
        return f"(unknown: {shorten(str(exc), 120)})"


def _append_log(path: str, rec: dict[str, Any], state: str, fb: bool) -> None:
    """Append the cube's result to ``path`` as a PVL group (ISIS's -log).  A failed cube's
    group has no ShapeModel (nothing was written) but ``KeptShapeModel``: what it still holds."""
    failed = state == "failed"
    pairs = [(k, rec.get(f)) for k, f in _LOG_KEYS
             if (rec.get(f) is not None or f in ("cube", "shape_model")) and not (failed and f == "shape_model")]
    if failed:
        pairs.append(("KeptShapeModel", kept(str(rec.get("cube")))))
    pairs += [("Status", state), ("FellBack", "Yes" if fb else "No")]
    append_text(path, _pvl_group("Results", pairs))


_AUDIT_LOG_KEYS = (("From", "cube"), ("TargetName", "target"), ("Body", "body"), ("ShapeModel", "current"),
                   ("Chosen", "chosen"), ("Status", "status"), ("Reason", "reason"))


def _pvl_group(name: str, pairs: list[tuple[str, Any]]) -> str:
    """A PVL group of ``pairs`` (strings quoted, None as Null), as -log appends it."""
    width = max(len(k) for k, _ in pairs)
    return f"Group = {name}\n" + "".join(f"  {k.ljust(width)} = {_pvl_string(v)}\n" for k, v in pairs) + "End_Group\n"


def append_text(path: str, text: str) -> None:
    """Append ``text`` to a regular file (made if missing) or a character device such as
    ``/dev/null``; never through a link, into a FIFO or a socket (raises OSError)."""
    safeio.append_output(path, text.encode("utf-8"))
