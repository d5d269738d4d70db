"""The command line: parse, plan, execute, report.

Owns: ``isisargs`` (ISIS's parameter grammar), ``main`` (the command), ``report`` (what
a run prints and logs) and ``modes`` (``list=`` and ``mirror=`` runs).

May import: every other room.
"""

from .main import main

__all__ = ["main"]
