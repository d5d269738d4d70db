"""Foundations every room stands on: files read without trust, the body table, claims.

Owns: ``safeio`` (open and read files that may be hostile: regular files only, bounded,
never blocking; output files that are only replaced when regular), ``bodies`` (the body
table and its names; the table itself is ``bodytable``), ``claims`` (one process at a time
does a piece of work; the others wait for its result), ``memo`` (made once per key across
threads), ``log`` (the package's loggers, which load :mod:`logging` only when a message
could reach someone) and ``record`` (the value classes of a run's start, without
:mod:`dataclasses`' import cost).

May import: ``shaperesolver.errors`` only.
"""
