"""The command's ``list=yes`` and ``mirror=DIR`` modes (output and progress only; the work is
in :mod:`~shaperesolver.policy.inventory` and :mod:`~shaperesolver.mirror`)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TextIO

from ..base.bodies import canonical
from ..cube.label import read_label
from ..errors import NoMatchError, ShapeResolverError
from ..mirror.core import CATALOG, DEFAULT_MAX_SIZE, Mirror
from ..policy.resolver import Resolver
from .plan import parse_size
from .report import printable

__all__ = ["wanted", "run"]

#: seconds between progress lines when stderr is not a terminal
LINE_EVERY = 10.0


def wanted(opts: dict[str, Any]) -> bool:
    """Whether the options ask for a list or a mirror."""
    return opts.get("list") == "yes" or "mirror" in opts


def _targets(opts: dict[str, Any], cubes: Collection[Any]) -> tuple[list[str], list[str]]:
    """(targets, errors): ``target=`` (a comma list) or the cubes' TargetNames."""
    if "target" in opts:
        return [t.strip() for t in opts["target"].strip("() ").split(",") if t.strip()], []
    found: list[str] = []
    errors: list[str] = []
    for cube in cubes:
        if isinstance(cube, tuple):
            errors.append(str(cube[1]))
            continue
        try:
            found.append(read_label(cube).target)
        except ShapeResolverError as exc:
            errors.append(str(exc))
    return found, errors


def run(opts: dict[str, Any], cubes: Callable[[], Collection[Any]], make_resolver: Callable[..., Resolver]) -> int | None:
    """Run a list or mirror; the exit code, or None when a resolve run should follow
    (``mirror=`` with ``from=``/``fromlist=``: ``opts['catalog']`` now names the mirror)."""
    listed = cubes() if ("from" in opts or "fromlist" in opts) else []
    max_size = parse_size(opts["maxsize"]) if "maxsize" in opts else DEFAULT_MAX_SIZE
    targets, errors = _targets(opts, listed)
    for err in errors:
        print(f"shaperesolver: {err}", file=sys.stderr)
    resolver = make_resolver()
    with resolver:
        if opts.get("list") == "yes":
            return max(_list(resolver, targets if targets or errors else [None], opts["json"]), 1 if errors else 0)
        bar = None if opts["quiet"] else _progress
        mirror = Mirror(opts["mirror"], resolver, max_size=max_size, prune=opts.get("prune") == "yes", progress=bar)
        failed = bool(errors)
        for target, done, problem in mirror.run(targets, opts.get("version")):
            if problem is not None and listed and isinstance(problem, NoMatchError):  # the resolve falls back as usual
                print(printable(f"shaperesolver: {problem}; nothing to mirror for its cubes"), file=sys.stderr)
                continue
            if problem is not None:
                failed = True
                print(printable(f"shaperesolver: {target}: {problem}" if not str(problem).lower().startswith(target.lower())
                                else f"shaperesolver: {problem}"), file=sys.stderr)
                continue
            assert done is not None
            if opts["json"]:
                sys.stdout.write(json.dumps(done.record()) + "\n")
            else:  # a result: on stdout also with -q
                what = {"present": "already there", "downloaded": "downloaded", "resumed": "resumed"}[done.status]
                print(f"{done.body}: {done.item_id} -> {done.path} [{what}, {done.size} bytes]")
                for old in done.pruned:
                    print(f"  pruned {old}")
            sys.stdout.flush()
    if failed or not listed:
        return 1 if failed else 0
    opts["catalog"] = os.path.join(opts["mirror"], CATALOG)
    return None


def _list(resolver: Resolver, targets: Sequence[str | None], as_json: bool) -> int:
    code = 0
    for target in {None if t is None else canonical(t): t for t in targets}.values():
        try:
            infos = resolver.items(target)
        except ShapeResolverError as exc:
            print(f"shaperesolver: {printable(exc)}", file=sys.stderr)
            code = 1
            continue
        if target is not None and not infos:  # a note, not a failure: the catalog answered
            print(printable(f"shaperesolver: note: no items for {canonical(target)} in {resolver._where()}"), file=sys.stderr)
        body = None
        for info in infos:
            if as_json:
                sys.stdout.write(json.dumps(info.record()) + "\n")
                continue
            if info.body != body:
                body = info.body
                print(f"{body}:")
            mark = "*" if info.chosen else " "
            extras = [x for x in ("deprecated" if info.deprecated else "", _human_size(info.size),
                                  f"({info.problem})" if info.problem else "") if x]
            print(printable(f"  {mark} {info.item_id}  version {info.version or '-'}  {info.datetime or '-'}  "
                            f"{info.href or '-'}" + ("  " + "  ".join(extras) if extras else "")))
        sys.stdout.flush()
    return code


def _human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


class _Lines:
    """Progress as a line every :data:`LINE_EVERY` seconds (stderr is not a terminal)."""

    def __init__(self, desc: str, total: int, initial: int, stream: TextIO) -> None:
        from tqdm import tqdm

        self.meter = tqdm.format_meter
        self.desc, self.total, self.n, self.initial = desc, total, initial, initial
        self.stream = stream
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LINE_EVERY:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else None
        text = self.meter(self.n, self.total, elapsed, prefix=self.desc, unit="B", unit_scale=True, unit_divisor=1024,
                          rate=rate, ncols=0)
        self.stream.write(f"shaperesolver: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        self._line(time.monotonic())


def _progress(desc: str, total: int, initial: int) -> Any:
    stream = sys.stderr
    if not stream.isatty():
        return _Lines(desc, total, initial, stream)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
                mininterval=0.2, leave=True)
