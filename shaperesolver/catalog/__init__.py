"""Catalogs and the cache: where shape models are found.

Owns: ``stac`` (STAC API searches and static catalog walks), ``choice`` (pure rules:
which item and asset a body's search chooses), ``cache`` (the on-disk answer cache) and
``weblookup`` (one search per body, shared between threads and processes).

May import: ``shaperesolver.errors``, ``shaperesolver.base`` and ``shaperesolver.net``.
"""
