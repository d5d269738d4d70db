"""The settings of the network edge, light enough to import before anything is sent.

:class:`HttpSettings` (timeouts, retries, the deadline and caps every request keeps) and
the check of a ``url=`` value.  :mod:`.transport` does the sending.
"""

from __future__ import annotations

import re

from ..base.record import Frozen, set_field
from ..errors import UsageError

__all__ = ["HttpSettings", "check_api_url", "CONTROL", "DEFAULT_DEADLINE"]

#: how long one request, search or catalog walk may take as a whole (s)
DEFAULT_DEADLINE = 120.0

#: characters no URL we send or accept may hold (controls, quotes, brackets, backslash)
CONTROL = re.compile(r"[\x00-\x20\x7f\"'<>\\]")


class HttpSettings(Frozen):
    """Timeouts, retries and limits for every request a resolver makes.

    ``connect_timeout`` / ``read_timeout`` bound each socket operation; ``deadline``
    bounds each request as a whole (connect, redirects, headers and body, cut by the
    watchdog) and a whole search or static-catalog walk (every page, retry, redirect and
    back-off included).  ``max_bytes`` caps one response, ``max_total_bytes`` and
    ``max_items`` everything one search or walk reads.  Exceeding any of them is a
    :class:`CatalogError` (the resolver then falls back as for any web failure).
    """

    # (fields named here, not slots: each default stays readable on the class, HttpSettings.deadline)
    _names = ("connect_timeout", "read_timeout", "retries", "backoff", "max_retry_after", "max_bytes", "deadline",
              "max_total_bytes", "max_items", "max_redirects")
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_bytes: int = 20 * 2**20
    deadline: float = DEFAULT_DEADLINE
    max_total_bytes: int = 64 * 2**20
    max_items: int = 100_000
    max_redirects: int = 5

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, max_retry_after: float = 60.0, max_bytes: int = 20 * 2**20,
                 deadline: float = DEFAULT_DEADLINE, max_total_bytes: int = 64 * 2**20, max_items: int = 100_000,
                 max_redirects: int = 5) -> None:
        set_field(self, "connect_timeout", connect_timeout)
        set_field(self, "read_timeout", read_timeout)
        set_field(self, "retries", retries)
        set_field(self, "backoff", backoff)
        set_field(self, "max_retry_after", max_retry_after)
        set_field(self, "max_bytes", max_bytes)
        set_field(self, "deadline", deadline)
        set_field(self, "max_total_bytes", max_total_bytes)
        set_field(self, "max_items", max_items)
        set_field(self, "max_redirects", max_redirects)


def check_api_url(url: str) -> str:
    """Validate a ``url=`` parameter (a usage error when it is not an http(s) URL)."""
    from urllib.parse import urlparse  # (the default URL is not checked: a run that sends nothing skips this)

    try:
        parts = urlparse(url)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or CONTROL.search(url):
        raise UsageError(f"url={url!r} is not an http(s) URL of a STAC API")
    return url
