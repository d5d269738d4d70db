"""One cube's job: resolve, write, and the record that says what happened.

The unit every door shares: the command's single-cube run calls it directly, and a batch
(:mod:`shaperesolver.scale.batch`) ships it to threads, processes and Dask workers in
chunks.  A failure stays with its cube; nothing here knows about executors.

Each cube's label is read and scanned once: under the cube's lock (shared in a dry run),
the resolver chooses from that label and the write path splices and proves it
(:func:`~shaperesolver.cube.label.update_shape_model`), so the cube cannot change between
the choice and the write.
"""

from __future__ import annotations

from ..base import bodies
from ..base.log import get as get_logger
from ..base.record import Frozen, set_field
from ..cube import txn
from ..cube.label import CubeLabel, WriteOutcome, read_label, same_target, update_shape_model
from ..errors import LabelError, LabelWriteError, NotInTableError, ShapeResolverError
from .options import SKY
from .resolver import Resolution, Resolver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, Protocol

    class Stop(Protocol):
        """A batch's stop event: a ``threading.Event``, a process pool's, or the batch's
        :class:`~shaperesolver.base.interrupts.Interrupts` (a Ctrl-C taken)."""

        def is_set(self) -> bool: ...

__all__ = ["BatchOptions", "CubeResult", "record", "one_line", "write_chunk", "in_order", "audit_result",
           "audit_failed", "reread"]

log = get_logger(__name__)


class BatchOptions(Frozen):
    """Per-cube parameters of a batch (those of :meth:`Resolver.resolve` and ``dryrun``;
    ``audit``: audit each cube (:mod:`.audit`) instead of resolving and writing it)."""

    __slots__ = ("shape", "model", "target", "version", "dryrun", "audit")
    shape: str
    model: str | None
    target: str | None
    version: str | None
    dryrun: bool
    audit: bool

    def __init__(self, shape: str = "web", model: str | None = None, target: str | None = None,
                 version: str | None = None, dryrun: bool = False, audit: bool = False) -> None:
        set_field(self, "shape", shape)
        set_field(self, "model", model)
        set_field(self, "target", target)
        set_field(self, "version", version)
        set_field(self, "dryrun", dryrun)
        set_field(self, "audit", audit)

    def resolve_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Resolver.resolve`."""
        kw: dict[str, Any] = {"shape": self.shape}
        kw.update({k: v for k in ("model", "target", "version") if (v := getattr(self, k)) is not None})
        return kw


class CubeResult(Frozen):
    """One cube's outcome: its ``--json`` record and, on success, the new Kernels group."""

    __slots__ = ("index", "cube", "record", "kernels_text", "error", "needs")
    index: int
    cube: str
    record: dict[str, Any]
    kernels_text: str | None
    error: str | None
    #: (target, version pin): a worker's copy of the resolver met a body the batch has not
    #: resolved; the batch resolves it and sends the cube again (else this is its result)
    needs: tuple[str, str | None] | None

    def __init__(self, index: int, cube: str, record: dict[str, Any], kernels_text: str | None = None,
                 error: str | None = None, needs: tuple[str, str | None] | None = None) -> None:
        set_field(self, "index", index)
        set_field(self, "cube", cube)
        set_field(self, "record", record)
        set_field(self, "kernels_text", kernels_text)
        set_field(self, "error", error)
        set_field(self, "needs", needs)

    @property
    def ok(self) -> bool:
        """True when the cube got a ShapeModel (fallbacks included)."""
        return self.error is None


def record(cube: str, res: Resolution | None, out: WriteOutcome | None, err: Exception | None) -> dict[str, Any]:
    """The JSON record of one cube (the keys ``--json`` prints)."""
    if res is not None:
        rec = res.record()
        rec["cube"] = cube
    else:
        rec = {"cube": cube, "target": None, "body": None, "shape_model": None, "source": None,
               "item_id": None, "version": None, "fallback_reason": None, "db": None}
    rec["written"] = bool(out and out.written)
    rec["would_write"] = bool(out and out.would_write)
    rec["previous"] = out.previous if out else None
    rec["removed_elevation_model"] = out.removed_elevation_model if out else None
    if err is not None:
        rec["error"] = str(err)
        rec["source"] = None
        if isinstance(err, ShapeResolverError) and getattr(err, "reasons", None):
            rec["fallback_reason"] = "; ".join(err.reasons)  # type: ignore[attr-defined]
    return rec


def one_line(err: Exception | str, cube: str, limit: int = 300) -> str:
    """An error as one line that names the cube, within ``limit`` characters if it can be.

    A chain of reasons (``"; "``-separated stages) is shortened in the middle of its
    longest stages first; the cube's name and the last stage (what to do) stay whole.
    """
    text = " ".join(str(err).split())
    rest = text[len(cube):] if text.startswith(cube) else f": {text}"
    if len(cube) + len(rest) <= limit:
        return cube + rest
    stages = rest.split("; ")
    room = limit - len(cube) - 2 * (len(stages) - 1) - len(stages[-1])
    lengths = [len(x) for x in stages[:-1]]
    cap = max((c for c in range(24, max(lengths, default=0) + 1) if sum(min(n, c) for n in lengths) <= room),
              default=24)
    last = max(limit // 2, limit - len(cube) - 26 * (len(stages) - 1))  # whole unless it crowds out the reasons
    return cube + "; ".join([*(_middle(x, cap) for x in stages[:-1]), _middle(stages[-1], last)])


#: the longest word :func:`_middle` drops rather than cut
WORD = 16


def _middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in its middle (its start and end are kept),
    between words when a blank is near."""
    if len(text) <= width:
        return text
    tail_n = (width - 5) // 3
    head_n = width - 5 - tail_n
    head, tail = text[:head_n], text[len(text) - tail_n:]
    blank = head.rfind(" ")  # a word cut short is dropped when it is short (a long one, a URL, is kept in part)
    if blank >= max(head_n * 2 // 3, head_n - WORD):
        head = head[:blank]
    blank = tail.find(" ")
    if 0 <= blank <= min(tail_n // 3, WORD):
        tail = tail[blank + 1:]
    return f"{head} ... {tail}"


def write_chunk(resolver: Resolver, opts: BatchOptions, entries: Sequence[tuple[int, str]],
                stop: Stop | None = None) -> list[CubeResult]:
    """Task: resolve and write each cube, in order; a failure stays with its cube.

    With ``stop`` (the batch's stop event) the chunk ends early, between two cubes, once
    it is set; a cube waiting for another process's lock then stops waiting (it is not
    modified, and not reported: the batch did not get to it).
    """
    token = txn.stopping.set(stop)
    try:
        return _write_chunk(resolver, opts, entries, stop)
    finally:
        txn.stopping.reset(token)


def in_order(resolver: Resolver, opts: BatchOptions,
             entries: Iterable[tuple[int, str] | CubeResult]) -> Iterator[CubeResult]:
    """``jobs=1``: each cube here, in order (an entry that is a result already is given as
    it is).  A Ctrl-C (:class:`..base.interrupts.Interrupts`) is taken between two cubes:
    the cube in hand is finished (or, waiting for another process's lock, stops waiting
    and is not reached) and given, then ``KeyboardInterrupt`` is raised; one landing in
    the middle of the write could leave a cube written and never reported."""
    from ..base.interrupts import Interrupts

    with Interrupts() as keys:
        for e in entries:
            keys.active = True
            keys.check()
            got = [e] if isinstance(e, CubeResult) else write_chunk(resolver, opts, [e], stop=keys)
            if not got:  # (stopped while it waited for a lock)
                break
            keys.active = False  # (the program's code runs: its Ctrl-C is its own)
            yield got[0]
        keys.active = True
        keys.check()


def _write_chunk(resolver: Resolver, opts: BatchOptions, entries: Sequence[tuple[int, str]],
                 stop: Stop | None) -> list[CubeResult]:
    kw = opts.resolve_kwargs()
    results = []
    for index, cube in entries:
        if stop is not None and stop.is_set():
            break
        if opts.audit:
            results.append(audit_result(resolver, opts, index, cube))
            continue
        res, out, err = resolve_and_write(resolver, cube, kw, opts.dryrun)
        if isinstance(err, txn.LockWaitStopped):
            break
        if err is not None and not isinstance(err, (ShapeResolverError, OSError, ValueError)):
            log.debug("%s: unexpected error", cube, exc_info=err)
            if res is not None:  # in the write: what the cube holds now says what happened
                results.append(reread(index, cube, f"unexpected {why(err)}", res.shape_model))
                continue
            err = ShapeResolverError(f"unexpected {why(err)}; not modified")  # resolving never writes
        rec = record(cube, res, out, err)
        results.append(CubeResult(index, cube, rec, out.kernels_text if out else None,
                                  one_line(err, cube) if err is not None else None,
                                  (err.target, err.pin) if isinstance(err, NotInTableError) else None))
    return results


def audit_result(resolver: Resolver, opts: BatchOptions, index: int, cube: str) -> CubeResult:
    """One cube's audit as a result: the audit's record; ``error`` (a line naming the cube)
    when the cube needs something done."""
    from .audit import audit

    try:
        got = audit(resolver, cube, **opts.resolve_kwargs())
    except Exception as exc:  # noqa: BLE001 - a surprise stays with its cube (an audit never writes)
        log.debug("%s: unexpected error", cube, exc_info=True)
        return audit_failed(index, cube, f"unexpected {why(exc)}")
    return CubeResult(index, cube, got.record(), None,
                      None if got.ok else one_line(f"{got.status}: {got.reason}", cube))


def audit_failed(index: int, cube: str, reason: str) -> CubeResult:
    """The audit result of a cube this run could not audit (it was not touched)."""
    rec = {"cube": cube, "target": None, "body": None, "current": None, "chosen": None, "status": "failed",
           "reason": reason}
    return CubeResult(index, cube, rec, None, one_line(f"failed: {reason}", cube))


def resolve_and_write(resolver: Resolver, cube: str, kw: dict[str, Any],
                      dryrun: bool) -> tuple[Resolution | None, WriteOutcome | None, Exception | None]:
    """(resolution, outcome, error) of one cube: resolved from the label the write path
    reads under the lock (one read, one scan).  Never raises an ``Exception``.

    A subclass of :class:`Resolver` that overrides ``resolve`` or ``write`` (the API's
    door for custom policy) is called through those two methods instead, one after the
    other (the write then checks under the lock that the cube still names the body).
    """
    cls = type(resolver)
    if cls.resolve is not Resolver.resolve or cls.write is not Resolver.write:
        res = None
        try:
            res = resolver.resolve(cube, **kw)
            return res, resolver.write(res, cube, dryrun=dryrun), None
        except Exception as exc:  # noqa: BLE001 - the caller sorts expected from unexpected
            return res, None, exc
    chosen: list[Resolution] = []
    searched: list[str] = []  # the target searched for, with no cube locked

    def choose(label: CubeLabel) -> str:
        if searched:  # read again after the search: it must still be that body (no search under the lock)
            same_target(label, searched[0])
        elif (pending := _search_needed(resolver, label, kw)) is not None:
            raise _SearchFirst(label.target, *pending)
        res = resolver.resolve(label, **kw)
        chosen.append(res)
        return res.shape_model

    try:
        try:
            out = update_shape_model(cube, choose, dryrun=dryrun, lock_wait=resolver.lock_wait)
        except _SearchFirst as need:  # search with no cube locked, then read the cube again
            searched.append(need.target)
            try:
                resolver.web_model(need.name, need.pin)
            except ShapeResolverError:
                pass  # remembered: resolving the cube says what it means for it
            out = update_shape_model(cube, choose, dryrun=dryrun, lock_wait=resolver.lock_wait)
        return chosen[0], out, None
    except Exception as exc:  # noqa: BLE001 - the caller sorts expected from unexpected
        res = chosen[0] if chosen else None
        if res is None and isinstance(exc, LabelError) and (
                isinstance(exc, LabelWriteError) or (kw.get("target") and kw["shape"].lower() != "system")):
            try:  # refused before its label was read (or target= needs none): the record says what it would get
                res = resolver.resolve(cube, **kw)
            except ShapeResolverError:
                pass
        return res, None, exc


class _SearchFirst(Exception):
    """The cube's body is not in the resolver's table yet: a web search comes first, and
    it must not run while the cube is locked (a slow or stuck server would hold up every
    other process that wants the cube)."""

    def __init__(self, target: str, name: str, pin: str | None) -> None:
        super().__init__(name)
        self.target, self.name, self.pin = target, name, pin


def _search_needed(resolver: Resolver, label: CubeLabel, kw: dict[str, Any]) -> tuple[str, str | None] | None:
    """(name, pin) when resolving ``label`` would search the web now, else None.  A batch
    worker's copy, which may not search, raises :class:`NotInTableError` instead, before
    resolving says anything (the batch resolves the body and sends the cube again)."""
    if kw["shape"].lower() != "web":
        return None
    name = kw.get("target") or label.target
    version = kw.get("version")
    pin = None if version is None else str(version).strip()
    body = bodies.canonical(name)
    if body.upper() == SKY or (body, pin) in resolver.web_table():
        return None
    if not resolver.searches_allowed:
        raise NotInTableError(f"{body} is not in the batch's table of resolved bodies "
                              "(did the cube change during the batch?)", name, pin)
    return name, pin


def reread(index: int, cube: str, why: str, value: str | None = None,
           lock_wait: float = txn.DEFAULT_LOCK_WAIT) -> CubeResult:
    """The record of a cube whose write this run cannot vouch for (an unexpected error,
    a lost worker): its label is read again and the record says what it holds now.

    ``written`` is False when the cube provably does not hold ``value`` (the value its
    write was for, when known), else None (unknown).
    """
    try:
        now = read_label(cube, lock_wait=lock_wait).shape_model
        state, readable = f"its ShapeModel is now {now or '(none)'}", True
    except (ShapeResolverError, OSError, ValueError) as exc:
        state, readable = f"its label cannot be read again ({' '.join(str(exc).split())})", False
    written = False if readable and value is not None and now != value else None
    tail = "not modified" if written is False else f"{state}; whether this run wrote it is unknown"
    err = ShapeResolverError(f"{why}; {tail}")
    rec = record(cube, None, None, err)
    rec["written"] = rec["would_write"] = written
    return CubeResult(index, cube, rec, None, one_line(err, cube))


def why(exc: BaseException) -> str:
    """An unexpected exception as ``Type: text`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
