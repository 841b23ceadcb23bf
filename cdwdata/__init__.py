"""cdwdata: machine-learning-accelerated phase-ordering simulations of charge density waves.

``import cdwdata`` is light: numpy only. Submodules that need torch, dask, zarr or intake
(``cdwdata.ed``, ``cdwdata.descriptor``, ``cdwdata.ml``, ``cdwdata.analysis``,
``cdwdata.catalog``, ...) are imported on first attribute access.
"""

from __future__ import annotations

import importlib

from cdwdata._version import __version__
from cdwdata.errors import (
    BlowUpError,
    CatalogError,
    CdwError,
    InputError,
    ModelError,
    ParameterError,
    StoreError,
)
from cdwdata.params import HolsteinParams, Lattice

_SUBMODULES = {
    "analysis",
    "catalog",
    "descriptor",
    "dynamics",
    "ed",
    "ensemble",
    "forcefields",
    "ml",
    "noise",
    "quench",
    "schema",
    "store",
    "toy",
}

__all__ = [
    "BlowUpError",
    "CatalogError",
    "CdwError",
    "HolsteinParams",
    "InputError",
    "Lattice",
    "ModelError",
    "ParameterError",
    "StoreError",
    "__version__",
    *sorted(_SUBMODULES),
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"cdwdata.{name}")
    raise AttributeError(f"module 'cdwdata' has no attribute {name!r}")
