"""The cube label and its write transaction.

Owns: ``pvlscan`` (a bounded scanner of ISIS PVL that keeps byte offsets), ``pvlformat``
(statements formatted as ISIS writes them), ``label`` (read a cube's label area; splice
one ShapeModel statement) and ``txn`` (the crash-safe write: lock, journal, proof).

May import: ``shaperesolver.errors`` and ``shaperesolver.base``.
"""
