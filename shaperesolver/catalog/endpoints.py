"""Names of a STAC API's endpoints and the two ways it takes a body's names: light,
so the cache key of a search is known without loading the HTTP side."""

from __future__ import annotations

__all__ = ["search_url", "QUERY", "FILTER"]

#: the query extension (``{"query": {"target": {"in": [...]}}}``) and a CQL2 filter
QUERY, FILTER = "query", "filter"


def search_url(url: str) -> str:
    """``<url>/search`` with exactly one slash between the two."""
    return url.rstrip("/") + "/search"
