"""The settings of the network edge, light enough to import before anything is sent.

:class:`HttpSettings` (timeouts, retries, the deadline and caps every request keeps) and
the check of a ``url=`` value.  :mod:`.transport` does the sending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import UsageError

__all__ = ["HttpSettings", "check_api_url", "CONTROL"]

#: characters no URL we send or accept may hold (controls, quotes, brackets, backslash)
CONTROL = re.compile(r"[\x00-\x20\x7f\"'<>\\]")


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retries and limits for every request a resolver makes.

    ``connect_timeout`` / ``read_timeout`` bound each socket operation; ``deadline``
    bounds each request as a whole (connect, redirects, headers and body, cut by the
    watchdog) and a whole search or static-catalog walk (every page, retry, redirect and
    back-off included).  ``max_bytes`` caps one response, ``max_total_bytes`` and
    ``max_items`` everything one search or walk reads.  Exceeding any of them is a
    :class:`CatalogError` (the resolver then falls back as for any web failure).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_bytes: int = 20 * 2**20
    deadline: float = 120.0
    max_total_bytes: int = 64 * 2**20
    max_items: int = 100_000
    max_redirects: int = 5


def check_api_url(url: str) -> str:
    """Validate a ``url=`` parameter (a usage error when it is not an http(s) URL)."""
    try:
        parts = urlparse(url)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or CONTROL.search(url):
        raise UsageError(f"url={url!r} is not an http(s) URL of a STAC API")
    return url
