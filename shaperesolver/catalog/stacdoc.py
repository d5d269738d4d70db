"""The STAC documents shaperesolver reads, checked at the edge and in one place.

Promise: every value taken from a STAC answer -- a search page of an API, a document
of a static catalog, the items, assets and links in them -- is read through this
module, which checks its JSON type (object, list, string, boolean, non-negative
integer) before anything uses it.  A value of the wrong type raises
:class:`~shaperesolver.errors.StacShapeError` (a :class:`CatalogError`) naming the
document and the field (``http://h/search: links[1].body is a list, not an object``,
``item dem0003: properties is a list, not an object``), so a malformed answer never
surfaces as an ``AttributeError``, ``TypeError`` or ``ValueError`` further in.

What a bad value costs depends on where it is (the rule):

* **The answer** -- a search page or catalog document that is not an object;
  ``type`` not a string; ``features`` not a list; ``links`` not a list of objects, each with a string ``rel``
  and ``href``; a ``next`` link whose ``method`` is not a string, ``body`` not an
  object or ``merge`` not a boolean; a followed link (``next``, ``item``, ``child``)
  whose href does not parse as a URL; ``numberMatched`` or ``context.matched`` not a
  non-negative integer, or ``context`` not an object.  The whole answer is unusable:
  that request gave **no answer** (the cube fails untouched, or falls back under
  ``fallback=always``).
* **An item's identity** -- a feature that is not an object; ``id`` not a non-empty
  string; ``properties`` not an object; ``ssys:targets`` not a string or a list of
  strings; ``version`` not a string or an integer; ``deprecated`` not a boolean;
  ``datetime`` or ``start_datetime`` not a string.  The item cannot be placed (which
  body, which version, deprecated or not), so it is **skipped**: a resolve goes on as
  if it were not there (one debug log line), and ``list=`` lists it with its problem
  (under its bodies when ``ssys:targets`` could be read, else under the body asked
  for, or ``?``).
* **An item's assets** -- ``assets`` missing, empty or not an object of objects; an
  asset's ``href`` not a string, ``type`` not a string, ``roles`` not a list of
  strings or ``file:size`` not a non-negative integer.  The item is placed but
  **unusable**, like an item without a GeoTIFF asset: ``list=`` lists it with its
  problem, and when it is the item a resolve would choose, that body has no answer --
  an older version is never used in place of the newest one the catalog names.

Absent and ``null`` are the same for every optional field.  Fields not named here are
never read, so any value there (and any extra field) is accepted.  Strings must be
valid Unicode (a lone surrogate can be neither printed nor written).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, urljoin, urlsplit

from ..base.log import get as get_logger
from ..errors import StacShapeError, shorten

__all__ = ["Item", "Asset", "Link", "Page", "Unreadable", "Items", "obj", "array", "text", "flag", "count",
           "page", "read_item", "read_items", "assets", "item_id", "item_name", "parse_url", "join_url"]

log = get_logger(__name__)

T = TypeVar("T")
_MISSING: Any = object()
#: a version given as a JSON integer longer than this many bits is refused (``str()`` of
#: a 4300-digit integer raises in Python >= 3.11)
_VERSION_BITS = 256


# ---------------------------------------------------------------- one value


def kind(value: Any) -> str:
    """What ``value`` is, in JSON words (for messages)."""
    if value is _MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a huge integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _bad(value: Any, what: str, expected: str) -> StacShapeError:
    return StacShapeError(f"{what} is {kind(value)}, not {expected}")


def obj(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object (string keys)."""
    if not isinstance(value, Mapping):
        raise _bad(value, what, "an object")
    if not all(isinstance(k, str) for k in value):
        raise StacShapeError(f"{what} has a key that is not a string")
    return value


def array(value: Any, what: str) -> list[Any]:
    """``value`` if it is a JSON list."""
    if not isinstance(value, (list, tuple)):
        raise _bad(value, what, "a list")
    return list(value)


def text(value: Any, what: str, empty: bool = True) -> str:
    """``value`` if it is a string of valid Unicode (non-blank unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _bad(value, what, "a string" if empty else "a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise StacShapeError(f"{what} is not valid Unicode (it holds a lone surrogate)") from None
    return value


def flag(value: Any, what: str) -> bool:
    """``value`` if it is a JSON boolean."""
    if not isinstance(value, bool):
        raise _bad(value, what, "a boolean")
    return value


def count(value: Any, what: str) -> int:
    """``value`` if it is a non-negative JSON integer (not a boolean, not 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(value, what, "a non-negative integer")
    return value


def optional(doc: Mapping[str, Any], key: str, read: Callable[[Any, str], T], what: str) -> T | None:
    """``doc[key]`` read by ``read`` (``what`` names it), None when absent or null."""
    value = doc.get(key)
    return None if value is None else read(value, what)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    return tuple(text(v, f"{what}[{i}]") for i, v in enumerate(array(value, what)))


def parse_url(url: str, what: str) -> SplitResult:
    """``url`` split into its parts, its port and host read: a StacShapeError naming
    ``what`` when it does not parse (``http://[::1/x``, ``http://h:99999/``)."""
    try:
        parts = urlsplit(url)
        _ = parts.port, parts.hostname
    except ValueError as exc:
        raise StacShapeError(f"{what} {shorten(url, 100)!r} is not a URL ({shorten(str(exc), 60)})") from None
    return parts


def join_url(base: str, href: str, what: str) -> str:
    """``href`` made absolute against ``base``; it must parse (:func:`parse_url`)."""
    try:
        url = urljoin(base, href)
    except ValueError as exc:
        raise StacShapeError(f"{what} {shorten(href, 100)!r} is not a URL ({shorten(str(exc), 60)})") from None
    parse_url(url, what)
    return url


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class Link:
    """One link of an answer: ``method`` upper-cased (``GET`` when absent)."""

    rel: str
    href: str
    method: str = "GET"
    body: Mapping[str, Any] | None = None
    merge: bool = False


@dataclass(frozen=True)
class Page:
    """A search page or catalog document, its answer-level fields read."""

    #: the document's ``type`` (``FeatureCollection``, ``Feature``, ``Catalog``, ...)
    kind: str | None
    #: the features as served (each is read by :func:`read_items`)
    features: list[Any]
    links: tuple[Link, ...]
    #: ``numberMatched`` (or ``context.matched``), when the server gave it
    matched: int | None

    def next(self) -> Link | None:
        """The first ``next`` link."""
        return next((ln for ln in self.links if ln.rel == "next"), None)


def page(doc: Any, where: str, search: bool = False) -> Page:
    """Read the answer-level fields of ``doc`` (from ``where``); raises StacShapeError.

    A search page (``search``) and a static ``FeatureCollection`` must have a
    ``features`` list; a static ``Feature`` is its own one feature.
    """
    d = obj(doc, f"{where}: the {'answer' if search else 'document'}")
    kind_ = optional(d, "type", text, f"{where}: type")
    features: list[Any] = []
    if search or kind_ == "FeatureCollection":
        if d.get("features") is None:
            raise StacShapeError(f"{where}: not a STAC FeatureCollection (no 'features' list)")
        features = array(d["features"], f"{where}: features")
    elif kind_ == "Feature":
        features = [d]
    links = tuple(_link(v, f"{where}: links[{i}]") for i, v in enumerate(array(d.get("links") or [], f"{where}: links")))
    matched = optional(d, "numberMatched", count, f"{where}: numberMatched")
    context = optional(d, "context", obj, f"{where}: context")
    if matched is None and context is not None:
        matched = optional(context, "matched", count, f"{where}: context.matched")
    return Page(kind_, features, links, matched)


def _link(value: Any, what: str) -> Link:
    d = obj(value, what)
    rel = text(d.get("rel", _MISSING), f"{what}.rel")
    href = text(d.get("href", _MISSING), f"{what}.href")
    if rel != "next":
        return Link(rel, href)
    method = optional(d, "method", text, f"{what}.method")
    return Link(rel, href, "GET" if method is None else method.upper(), optional(d, "body", obj, f"{what}.body"),
                bool(optional(d, "merge", flag, f"{what}.merge")))


# ---------------------------------------------------------------- items


@dataclass(frozen=True)
class Item:
    """An item's identity, read; ``raw`` is the document as served."""

    raw: Mapping[str, Any]
    id: str
    targets: tuple[str, ...]
    version: str | None
    deprecated: bool
    datetime: str | None


@dataclass(frozen=True)
class Unreadable:
    """A feature that is not a readable item: its id and bodies when those could be read."""

    item_id: str | None
    targets: tuple[str, ...] | None
    problem: str


class Items(list[Mapping[str, Any]]):
    """The readable items of an answer (as served), and the ``unreadable`` ones."""

    def __init__(self, items: Iterable[Mapping[str, Any]] = (), unreadable: Iterable[Unreadable] = ()) -> None:
        super().__init__(items)
        self.unreadable: list[Unreadable] = list(unreadable)

    def add(self, other: Items) -> None:
        self.extend(other)
        self.unreadable.extend(other.unreadable)

    def copy(self) -> Items:
        return Items(self, self.unreadable)


def item_id(raw: Any) -> str:
    """The id of the item ``raw`` for messages (``?`` when it is not a readable string)."""
    try:
        return shorten(text(raw.get("id") if isinstance(raw, Mapping) else None, "id", empty=False), 100)
    except StacShapeError:
        return "?"


def item_name(raw: Any) -> str:
    """``item <id>`` for messages."""
    return f"item {item_id(raw)}"


def read_item(feature: Any, where: str) -> Item | Unreadable:
    """The identity of ``feature`` (``where`` names its place: ``URL: features[3]``)."""
    try:
        doc = obj(feature, where)
        item_id = text(doc.get("id", _MISSING), f"{where}.id", empty=False)
    except StacShapeError as exc:
        return Unreadable(None, None, str(exc))
    name = item_name(doc)
    targets: tuple[str, ...] | None = None
    try:
        props = obj(doc.get("properties", _MISSING), f"{name}: properties")
        value = props.get("ssys:targets")
        what = f"{name}: properties.ssys:targets"
        targets = () if value is None else (text(value, what),) if isinstance(value, str) else _strings(value, what)
        version = optional(props, "version", _version, f"{name}: properties.version")
        deprecated = bool(optional(props, "deprecated", flag, f"{name}: properties.deprecated"))
        when = optional(props, "datetime", text, f"{name}: properties.datetime")
        start = optional(props, "start_datetime", text, f"{name}: properties.start_datetime")
    except StacShapeError as exc:
        return Unreadable(item_id, targets, str(exc))
    return Item(doc, item_id, targets, version, deprecated, when if when is not None else start)


def _version(value: Any, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _VERSION_BITS:
            raise StacShapeError(f"{what} is an integer too large for a version")
        return str(value)
    if not isinstance(value, str):
        raise _bad(value, what, "a string or an integer")
    return text(value, what)


def read_items(features: Iterable[Any], where: str) -> Items:
    """The readable items among ``features`` (from ``where``), the others kept as unreadable."""
    out = Items()
    for index, feature in enumerate(features):
        got = read_item(feature, f"{where}: features[{index}]")
        if isinstance(got, Unreadable):
            log.debug("skipping a feature of %s: %s", where, got.problem)
            out.unreadable.append(got)
        else:
            out.append(got.raw)
    return out


# ---------------------------------------------------------------- assets


@dataclass(frozen=True)
class Asset:
    """One asset of an item, read."""

    key: str
    href: str
    media_type: str | None
    roles: tuple[str, ...]
    size: int | None


def assets(raw: Mapping[str, Any]) -> list[Asset]:
    """Every asset of the item ``raw``, read; StacShapeError for a malformed one, or none."""
    name = item_name(raw)
    value = raw.get("assets")
    if value is None or (isinstance(value, Mapping) and not value):
        raise StacShapeError(f"{name} has no assets")
    out = []
    for key, asset in obj(value, f"{name}: assets").items():
        what = f"{name}: assets.{shorten(key, 40)}"
        d = obj(asset, what)
        roles = d.get("roles")
        out.append(Asset(key, text(d.get("href", _MISSING), f"{what}.href"), optional(d, "type", text, f"{what}.type"),
                         () if roles is None else _strings(roles, f"{what}.roles"),
                         optional(d, "file:size", count, f"{what}.file:size")))
    return out
