"""The mirror: the chosen DEMs brought home, with a catalog of their own.

Owns: ``layout`` (item keys and directories, walked without following links; atomic
writes), ``download`` (one file fetched whole: resumed only on proof, ``file:checksum``
compared, bounded), ``document`` (the mirror's ``catalog.json`` and item documents, under
``flock``), ``prune`` (older versions only) and ``core`` (:class:`Mirror`, which
orchestrates them, with a claim per file between processes sharing the directory).

May import: ``errors``, ``base``, ``cube``, ``net``, ``catalog``, ``models`` and ``policy``.
"""

from .core import CATALOG, DEFAULT_MAX_SIZE, MIN_RATE, SLOW_TIME, Mirror, Mirrored

__all__ = ["Mirror", "Mirrored", "DEFAULT_MAX_SIZE", "CATALOG", "MIN_RATE", "SLOW_TIME"]
