"""Machine-learning force field of the Holstein model (paper section III, appendix B).

Entry points (torch is imported only when one of them is used)::

    ff = cdwdata.ml.load_model("holstein-f0.5")   # or a path to <name>.json/.safetensors
    ff.forces(Q); ff.density(Q)                    # numpy (..., L, L) in and out
    cdwdata.ml.list_models()                       # shipped models

    from cdwdata.ml.train import train             # -> metrics; writes model + card
    from cdwdata.ml.validate import validate       # -> report; parity plot, histogram

Submodules: :mod:`~cdwdata.ml.model` (network), :mod:`~cdwdata.ml.modelfile` (safetensors +
JSON card), :mod:`~cdwdata.ml.forcefield` (:class:`MLForceField`), :mod:`~cdwdata.ml.options`
(kinds, targets, losses, schedules), :mod:`~cdwdata.ml.data` (training sets in memory and
their split), :mod:`~cdwdata.ml.metrics` (error statistics), :mod:`~cdwdata.ml.train` (the
training loop), :mod:`~cdwdata.ml.validate`; the grand-canonical model:
:mod:`~cdwdata.ml.gcmodel`, :mod:`~cdwdata.ml.gctrain`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_model": "cdwdata.ml.forcefield",
    "list_models": "cdwdata.ml.forcefield",
    "MLForceField": "cdwdata.ml.forcefield",
    "MODELS_DIR": "cdwdata.ml.forcefield",
    "ForceModel": "cdwdata.ml.model",
}
_SUBMODULES = {"model", "modelfile", "forcefield", "options", "data", "metrics", "train",
               "validate"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"cdwdata.ml.{name}")
    raise AttributeError(f"module 'cdwdata.ml' has no attribute {name!r}")
