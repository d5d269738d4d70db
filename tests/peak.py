"""Peak memory of a child Python, measured so the parent's size does not leak in.

``getrusage(RUSAGE_SELF).ru_maxrss`` of a process started by ``fork`` + ``exec`` keeps the
high-water mark of the address space it replaced, so a child of a 400 MiB pytest reports
at least 400 MiB whatever it does itself (seen in CI after the pgstac and Dask tests).
``VmHWM`` in ``/proc/self/status`` belongs to the process's own address space only.
"""

# An expression for child code given with ``python -c``: the child's own peak RSS in KiB.
PEAK_KIB = "int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
