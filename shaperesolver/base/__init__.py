"""Foundations every room stands on: files read without trust, the body table, claims.

Owns: ``safeio`` (open and read files that may be hostile: regular files only, bounded,
never blocking; output files that are only replaced when regular), ``bodies`` (the body
table and its names), ``claims`` (one process at a time does a piece of work; the others
wait for its result).

May import: ``shaperesolver.errors`` only.
"""
