"""The mirror: the chosen DEMs brought home, with a catalog of their own.

Owns: downloading (resume, validators, checksums), claims between concurrent mirrors,
pruning older versions and the mirror's catalog document.

May import: ``errors``, ``base``, ``cube``, ``net``, ``catalog``, ``models`` and ``policy``.
"""

from .core import CATALOG, DEFAULT_MAX_SIZE, MIN_RATE, SLOW_TIME, Mirror, Mirrored

__all__ = ["Mirror", "Mirrored", "DEFAULT_MAX_SIZE", "CATALOG", "MIN_RATE", "SLOW_TIME"]
