"""Audit: what each cube's ShapeModel is worth now, without writing a byte.

For one cube, :func:`audit` reads the label under a shared lock (nothing is opened for
writing), asks the policy what a resolve would choose now, opens and checks the model
the cube already names (:meth:`~shaperesolver.models.opener.ModelOpener.check_named`:
the address rules and deadline of a resolve, the model check and its cache), and gives
one status:

``current``
    the cube names what a resolve would choose (compared after expanding ``$base/...``,
    ``$ISISDATA/...``, ``~`` and dropping ``/vsicurl/``) and it opens; also a sky image or
    a body with no model that names the ellipsoid, and a ring observation's ``RingPlane``
``stale``
    another version of the body's web model than a resolve chooses (older, deprecated,
    or not the pinned one), or a SYSTEM model (a file of the ISIS data area) other than
    the one a resolve chooses; it still opens
``missing``
    a local path that does not exist (after expansion) or is not a regular file
``unreachable``
    a URL that gives no answer (or a ``/vsi`` form other than ``/vsicurl/``)
``wrong-body``
    the model fails the check for the cube's body (CRS, values, DSK center), or
    ``RingPlane`` on a cube that is not a ring observation
``unset``
    no Kernels group, no ShapeModel, or ``Null``, while a model exists for the body
``user``
    a model neither the catalog nor the SYSTEM data area knows, that opens and fits
``failed``
    the cube could not be read, or no model can be chosen now (the search gave no
    answer): says why; the cube is untouched

``current`` and ``user`` are fine; every other status is a cube to fix (the command
lists them in ``-errlist``).  Each body's catalog items are listed once per resolver
(the search a resolve makes for the body gives the list), each model checked once.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..base import bodies
from ..cube.label import CubeLabel, read_label
from ..errors import DataAreaError, ModelError, ModelMissingError, ModelUnreachableError, ShapeResolverError
from ..models import kerneldb
from .options import NULL, RINGPLANE, SKY, ring_observation

if TYPE_CHECKING:
    from .resolver import Resolution, Resolver

__all__ = ["Audit", "STATUSES", "FINE", "audit"]

#: every status, in the order a summary counts them
STATUSES = ("current", "user", "stale", "unset", "missing", "unreachable", "wrong-body", "failed")
#: the statuses that need nothing done
FINE = ("current", "user")


@dataclass(frozen=True)
class Audit:
    """One cube's audit.  Immutable.

    ``current`` is the ShapeModel the cube names (None: no Kernels group or no
    ShapeModel keyword), ``chosen`` what a resolve would write now (None: nothing can
    be chosen), ``status`` one of :data:`STATUSES`, ``reason`` why (None when
    ``current`` needs no words).
    """

    cube: str
    target: str | None
    body: str | None
    current: str | None
    chosen: str | None
    status: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the cube needs nothing done (``current`` or ``user``)."""
        return self.status in FINE

    def record(self) -> dict[str, Any]:
        """The fields as one JSON object (``--json`` prints one per line)."""
        return asdict(self)


def audit(resolver: Resolver, cube: str | os.PathLike[str], *, shape: str = "web", model: str | None = None,
          target: str | None = None, version: str | None = None) -> Audit:
    """Audit one cube against what ``resolver`` would choose now (never raises for the
    cube: a cube that cannot be read is ``failed``).  Parameters as :meth:`Resolver.resolve`."""
    path = os.fspath(cube)
    try:
        label = read_label(path, lock_wait=resolver.lock_wait, shared=True)
    except (ShapeResolverError, OSError, ValueError) as exc:
        return Audit(path, None, None, None, None, "failed", " ".join(str(exc).split()))
    name = target if target is not None else label.target
    current = label.shape_model if label.kernels is not None else None
    res: Resolution | None = None
    why_not: str | None = None
    try:
        res = resolver.resolve(label, shape=shape, model=model, target=target, version=version)  # type: ignore[arg-type]
    except ShapeResolverError as exc:
        why_not = " ".join(str(exc).split())
    body = res.body if res is not None else bodies.canonical(name)
    chosen = res.shape_model if res is not None else None
    try:
        status, reason = _status(resolver, label, name, body, current, res, shape.lower() == "web")
    except ShapeResolverError as exc:  # the catalog's list of the body gave no answer
        return Audit(path, name, body, current, chosen, "failed", " ".join(str(exc).split()))
    if res is None:  # what the cube names was judged; what it should name cannot be told now
        if status in ("current", "user", "stale", "unset"):
            status, reason = "failed", f"no model can be chosen now: {why_not}"
        else:
            reason = f"{reason}; and no model can be chosen now: {why_not}"
    return Audit(path, name, body, current, chosen, status, reason)


def _status(resolver: Resolver, label: CubeLabel, name: str, body: str, current: str | None,
            res: Resolution | None, web: bool) -> tuple[str, str | None]:
    chosen = res.shape_model if res is not None else None
    if current is None or current.strip().upper() in ("", NULL.upper()):
        what = ("no Kernels group" if label.kernels is None else "no ShapeModel" if current is None
                else "ShapeModel = Null")
        if body.upper() == SKY:
            return "current", f"{what}: a sky image uses no shape model"
        if chosen is not None and chosen.upper() == NULL.upper():
            return "current", f"{what}: the ellipsoid, as a resolve chooses (no model for {body})"
        return "unset", f"{what} while {chosen or 'a model'} exists for {body}"
    if current.strip().upper() == RINGPLANE.upper():
        if ring_observation(label, name) or (chosen or "").upper() == RINGPLANE.upper():
            return "current", "a ring observation: the ring plane"
        return "wrong-body", f"RingPlane is for ring observations; {name} is not one"
    try:
        resolver.models.check_named(current, body)
    except ModelMissingError as exc:
        return "missing", str(exc)
    except ModelUnreachableError as exc:
        return "unreachable", str(exc)
    except ModelError as exc:
        return "wrong-body", str(exc)
    here = _norm(resolver, current)
    if chosen is not None and here == _norm(resolver, chosen):
        return "current", None
    known = _known(resolver, here, name, web)
    if known is None:
        unknown = ("a model the catalog and the SYSTEM data area do not know" if web
                   else "a model the SYSTEM data area does not know (the catalog is asked only for shape=web)")
        return "user", f"{unknown}; it opens and fits {body}"
    return "stale", f"{known}; a resolve chooses {_chosen(res)}"


def _chosen(res: Resolution | None) -> str:
    if res is None:
        return "nothing now"
    if res.source == "web":
        return f"{res.shape_model} (item {res.item_id}, version {res.version})"
    return f"{res.shape_model} ({res.source})"


def _norm(resolver: Resolver, value: str) -> str:
    """A ShapeModel value in one form: a URL without ``/vsicurl/``, a local path expanded
    as ISIS expands it and with its links resolved."""
    text = value.strip()
    if text.startswith("/vsicurl/"):
        text = text[len("/vsicurl/"):]
    if "://" in text or text.startswith("/vsi"):
        return text
    try:
        return os.path.realpath(resolver.models.expand(text))
    except DataAreaError:
        return text


def _known(resolver: Resolver, here: str, name: str, web: bool) -> str | None:
    """What the catalog or the SYSTEM data area knows of the model at ``here`` (a
    normalised value), in words; None when neither knows it."""
    if not ("://" in here or here.startswith("/vsi")):
        try:
            root = os.path.realpath(kerneldb.data_area(resolver.isisdata))
        except DataAreaError:
            root = None
        if root is not None and here.startswith(root.rstrip(os.sep) + os.sep):
            return "names a SYSTEM model of the ISIS data area"
    if not web:
        return None
    for item in resolver.known_models(name):  # (NoAnswerError: the cube fails, says why)
        if any(_norm(resolver, h) == here for h in item.hrefs):
            return (f"names item {item.item_id}, version {item.version}"
                    + (" (deprecated)" if item.deprecated else ""))
    return None
