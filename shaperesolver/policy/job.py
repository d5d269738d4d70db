"""One cube's job: resolve, write, and the record that says what happened.

The unit every door shares: the command's single-cube run calls it directly, and a batch
(:mod:`shaperesolver.scale.batch`) ships it to threads, processes and Dask workers in
chunks.  A failure stays with its cube; nothing here knows about executors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cube.label import WriteOutcome, read_label
from ..errors import ShapeResolverError
from .resolver import Resolution, Resolver

__all__ = ["BatchOptions", "CubeResult", "record", "one_line", "write_chunk", "reread"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """Per-cube parameters of a batch (those of :meth:`Resolver.resolve` and ``dryrun``)."""

    shape: str = "web"
    model: str | None = None
    target: str | None = None
    version: str | None = None
    dryrun: bool = False

    def resolve_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Resolver.resolve`."""
        kw: dict[str, Any] = {"shape": self.shape}
        kw.update({k: v for k in ("model", "target", "version") if (v := getattr(self, k)) is not None})
        return kw


@dataclass(frozen=True)
class CubeResult:
    """One cube's outcome: its ``--json`` record and, on success, the new Kernels group."""

    index: int
    cube: str
    record: dict[str, Any]
    kernels_text: str | None = None
    error: str | None = field(default=None)

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
                stop: threading.Event | None = None) -> list[CubeResult]:
    """Task: resolve and write each cube, in order; a failure stays with its cube.

    With ``stop`` (threads of this process) the chunk ends early, between two cubes,
    once it is set.
    """
    kw = opts.resolve_kwargs()
    results = []
    for index, cube in entries:
        if stop is not None and stop.is_set():
            break
        res = out = err = None
        try:
            res = resolver.resolve(cube, **kw)
            out = resolver.write(res, cube, dryrun=opts.dryrun)
        except (ShapeResolverError, OSError, ValueError) as exc:  # one bad cube never stops the batch
            err = exc
        except Exception as exc:  # noqa: BLE001 - a surprise stays with its cube, too
            log.debug("%s: unexpected error", cube, exc_info=True)
            if res is not None:  # in the write: what the cube holds now says what happened
                results.append(reread(index, cube, f"unexpected {why(exc)}", res.shape_model))
                continue
            err = ShapeResolverError(f"unexpected {why(exc)}; not modified")  # resolving never writes
        rec = record(cube, res, out, err)
        results.append(CubeResult(index, cube, rec, out.kernels_text if out else None,
                                  one_line(err, cube) if err is not None else None))
    return results


def reread(index: int, cube: str, why: str, value: str | None = None) -> CubeResult:
    """The record of a cube whose write this run cannot vouch for (an unexpected error,
    a lost worker): its label is read again and the record says what it holds now.

    ``written`` is False when the cube provably does not hold ``value`` (the value its
    write was for, when known), else None (unknown).
    """
    try:
        now = read_label(cube).shape_model
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
