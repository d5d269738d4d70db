"""shaperesolver: choose the shape model (DEM) for ISIS cubes and write it into their labels.

Quick use from a processing chain::

    from shaperesolver import Resolver

    with Resolver() as r:                      # one session, cache and settings
        res = r.resolve("image.cub")           # web -> SYSTEM -> ellipsoid
        r.write(res)                           # splice IsisCube > Kernels > ShapeModel
        ds = r.open_model(res)                 # the DEM as a gdal.Dataset

Importing the package reads no environment variable and touches no disk or network.
"""

import logging

from . import errors as _errors
from ._version import __version__
from .batch import write_batch
from .bodies import Body, canonical, lookup
from .errors import *  # noqa: F403 - the whole exception tree is public
from .label import CubeLabel, WriteOutcome, read_label, write_shape_model
from .resolver import DEFAULT_COLLECTION, DEFAULT_URL, Resolution, ResolutionError, Resolver, resolve
from .transport import HttpSettings

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "Body",
    "canonical",
    "lookup",
    "CubeLabel",
    "WriteOutcome",
    "read_label",
    "write_shape_model",
    "Resolver",
    "Resolution",
    "ResolutionError",
    "resolve",
    "write_batch",
    "HttpSettings",
    "DEFAULT_URL",
    "DEFAULT_COLLECTION",
] + _errors.__all__
