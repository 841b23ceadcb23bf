"""torch.compile'd whole-lattice kernels of a level model (opt-in: ``compile=True``).

Two parts of a force call are chains of elementwise passes over (sites, levels) arrays
around small GEMMs, which fusion shortens:

* the network and its head: the folded first layer, the hidden layers with SiLU, the last
  layer, the softmax of the weights and the levels ``out - g Q_i``
  (:meth:`cdwdata.ml.levels.LevelPlan._levels` written as one function);
* the Fermi sum of every site at one mu per configuration: ``n`` and ``dn/dmu``
  (:func:`cdwdata.ml.levels.fermi_sum`, which the eager plan computes in cache-sized chunks).

Everything else (the descriptor, the cluster refinement, the Newton steps on the active
sites) stays eager. The compiled kernels round differently from the eager ones (measured:
3e-8 in the weights, 8e-6 in the levels, ~2e-7 in n), so a trajectory made with them is
marked (``compile`` in its attrs) and resumed only with them. Each process compiles once per
lattice shape (about 10 s on the 2-core CPU; inductor caches the result on disk); on a CPU
torch.compile needs a C++ compiler at run time, on a GPU triton.
"""

from __future__ import annotations

import torch
from torch import nn

from cdwdata.errors import ModelError


def level_network(G: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, layers: list,
                  Wo: torch.Tensor, bo: torch.Tensor, g: float, K: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and levels ``(w, e)`` (n, K) of feature rows ``G`` (n, F) through the folded
    network (hidden layers in ``W1``'s dtype, the last layer in ``Wo``'s)."""
    h = nn.functional.silu(torch.addmm(b1, G.to(W1.dtype), W1))
    for W, b in layers:
        h = nn.functional.silu(torch.addmm(b, h, W))
    out = torch.addmm(bo, h.to(Wo.dtype), Wo)
    return torch.softmax(out[:, :K], dim=-1), out[:, K:] - g * G[:, :1].to(Wo.dtype)


class CompiledLevels:
    """The two kernels of a :class:`~cdwdata.ml.levels.LevelPlan`, compiled on first use
    (static shapes: one graph per lattice shape and batch)."""

    def __init__(self, plan) -> None:
        if plan.model.pairs:
            raise ModelError("compile=True is built for plain level models (e.g. "
                             "holstein-gc-v12); this model has pair blocks")
        from cdwdata.ml.levels import fermi_sum

        self.plan = plan
        self._network = torch.compile(level_network, dynamic=False)
        self._fermi = torch.compile(fermi_sum, dynamic=False)
        self._T = torch.full((1,), plan.T, dtype=plan.dtype, device=plan.device)

    def levels(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        return self._call(self._network, G, p.W1, p.b1, list(p.layers), p.Wo, p.bo, p.g,
                          p.model.components)

    def fermi(self, e, w, mu) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, dn/dmu)`` (n,) of levels ``e`` with weights ``w`` (n, K) at ``mu`` (0-d, or
        one per row: (n, 1)) and the plan's T."""
        return self._call(self._fermi, w, e, mu, self._T)

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # a missing compiler or backend: say what the option needs
            if isinstance(err, ModelError):
                raise
            raise ModelError(f"torch.compile failed ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300] if str(err) else ''}); "
                             "compile=True needs a working torch.compile (a C++ compiler on "
                             "a CPU, triton on a GPU); run without it") from err
