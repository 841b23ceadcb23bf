"""The choices of the canonical ML force field: model kinds, targets, losses and schedules.

No torch import here, so that ``cdw train --help`` lists the choices from the library without
loading torch. :mod:`cdwdata.ml.model` and :mod:`cdwdata.ml.train` check their arguments
against these tuples.
"""

from __future__ import annotations

#: The two kinds of canonical model: direct force regression (the paper) and
#: Behler-Parrinello site energies (see :mod:`cdwdata.ml.model`).
KINDS = ("force", "energy")
#: What the network output stands for: the total force (the paper) or only the electronic
#: force ``g (n - 1/2)``, the exact elastic force being added.
TARGETS = ("total", "electronic")
#: Learning-rate schedules of :func:`cdwdata.ml.train.train`.
SCHEDULES = ("plateau", "cosine", "none")
#: Loss functions: the paper's mean square error, or Huber (quadratic within ``huber_delta``
#: of the label, linear beyond), which does not let the few sites whose exact force is set by
#: the global chemical potential (domain-wall levels at mu; no local model can predict them,
#: see benchmarks/locality.py) dominate the fit of all the others.
LOSSES = ("mse", "huber")
#: Compute dtypes of a force field's hot loop.
COMPUTE_DTYPES = ("float32", "float64")
#: Precisions of the hidden layers of a grand-canonical model at inference
#: (:mod:`cdwdata.ml.inference`).
PRECISIONS = ("float32", "bf16")
#: Grand-canonical model kinds (a local density at a given (mu, T), solved for the filling):
#: the density network (:mod:`cdwdata.ml.gcmodel`) and learned levels (:mod:`cdwdata.ml.levels`).
GC_KINDS = ("density", "levels")


def check_precision(precision: str, dtype) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and fits the compute ``dtype`` (bf16
    hidden layers need float32 input and output layers); ModelError otherwise."""
    import torch

    from cdwdata.errors import ModelError

    if precision not in PRECISIONS:
        raise ModelError(f"precision={precision!r}: use one of {PRECISIONS}")
    if precision == "bf16" and dtype != torch.float32:
        raise ModelError("precision='bf16' needs dtype float32 (bf16 hidden layers, float32 "
                         "input and output layers)")
    return precision
