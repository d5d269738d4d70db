"""The network edge: every byte that crosses it, and every address it may reach.

Owns: ``transport`` (the only user of ``requests``: one deadline per request from the
first byte, address rules checked and pinned, answers parsed and classified) and
``relay`` (GDAL's only road to a web model: a loopback relay that makes each request
under the same rules).

May import: ``shaperesolver.errors``, ``shaperesolver._version`` and ``shaperesolver.base``.
"""
