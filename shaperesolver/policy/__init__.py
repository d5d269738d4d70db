"""The resolve policy: web, then SYSTEM, then the ellipsoid.

Owns: ``resolver`` (:class:`Resolver`, the policy and the public entry points), ``state``
(what a resolver holds: settings, cache, HTTP made on first use, how it pickles), ``job``
(one cube: resolve, write, its record),
``options`` (defaults and the checks of every setting), ``types`` (the settings' types,
for type checkers), ``audit`` (what a cube's ShapeModel is worth now) and ``inventory`` (``list=``: the
catalog's items per body, marked with what a resolve chooses).

May import: every room below it: ``errors``, ``base``, ``cube``, ``net``, ``catalog``
and ``models``.
"""
