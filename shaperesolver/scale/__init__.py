"""Batches and scale-out: many cubes, threads, processes and Dask clusters.

Owns: ``batch`` (resolve and write a list of cubes; each body searched once).

May import: ``errors``, ``base``, ``cube``, ``net``, ``catalog``, ``models`` and ``policy``.
"""
