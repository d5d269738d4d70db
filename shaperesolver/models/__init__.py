"""Opening and checking shape models, and the local ISIS data area.

Owns: ``raster`` (GDAL's side: open a GeoTIFF or cube, read its facts), ``modelcheck``
(pure rules: is this DEM radii of that body), ``dsk`` (NAIF DSK files, read by CSPICE in
an isolated child), ``isisfiles`` (ISIS file names: the data area and ``$variables``) and
``kerneldb`` (ISIS's DEM kernel databases: SHAPE=SYSTEM).

May import: ``shaperesolver.errors``, ``shaperesolver.base``, ``shaperesolver.net``.
"""
