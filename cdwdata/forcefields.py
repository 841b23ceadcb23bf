"""One force-field interface for the Langevin integrator: ED, ML and toy models behind it.

A force field maps lattice configurations ``Q`` of shape ``(..., L, L)`` to the total force
``F`` and the local electron density ``n`` (same shape). Calls are pure: no cache of the last
configuration. The integrator only calls :meth:`ForceField.evaluate` on torch tensors; users
call :meth:`forces` / :meth:`density` with numpy arrays.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from cdwdata.params import HolsteinParams, check_configuration, check_filling, check_temperature


class ForceField(abc.ABC):
    """Abstract force field.

    Attributes
    ----------
    name : str
        Short identifier stored in dataset attrs (``"ed"``, a model name, ``"tdgl"``).
    params : HolsteinParams
        Model parameters the force field is valid for.
    f : float
        Filling fraction the force field is valid for.
    """

    name: str = "forcefield"
    params: HolsteinParams
    f: float

    @abc.abstractmethod
    def evaluate(self, Q):
        """Return ``(F, n)`` for a torch tensor ``Q`` (..., L, L), same dtype and device."""

    def evaluate_with_mu(self, Q):
        """``(F, n, mu)``: :meth:`evaluate` plus the chemical potential of each configuration
        (``mu`` of shape ``Q.shape[:-2]``), or None for force fields without one."""
        F, n = self.evaluate(Q)
        return F, n, None

    def forces(self, Q: Any) -> np.ndarray:
        """Total force for numpy configurations (..., L, L) -> float64 array of that shape."""
        return self._numpy_call(Q)[0]

    def density(self, Q: Any) -> np.ndarray:
        """Local electron density for numpy configurations (..., L, L)."""
        return self._numpy_call(Q)[1]

    def attrs(self) -> dict[str, Any]:
        """Metadata stored with every trajectory this force field produced."""
        return {"forcefield": self.name, "f": self.f}

    def _numpy_call(self, Q: Any):
        import torch

        Qn = check_configuration(Q)
        with torch.no_grad():
            F, n = self.evaluate(torch.as_tensor(Qn, dtype=torch.float64, device=self.device))
        return F.cpu().numpy().astype(np.float64), n.cpu().numpy().astype(np.float64)

    @property
    def device(self):
        """torch device the force field computes on (CPU unless the subclass says otherwise)."""
        return "cpu"


class EDForceField(ForceField):
    """Exact-diagonalisation forces at bath temperature ``T`` and filling ``f``.

    Parameters
    ----------
    T, f : float
        Electron temperature (>= 0) and filling (0 < f < 1).
    params : HolsteinParams, optional
    device : str or torch.device, optional
        Where the numpy-facing calls diagonalise (``"cuda"`` when available and asked for).
    """

    name = "ed"

    def __init__(self, T: float, f: float, params: HolsteinParams | None = None,
                 device: Any = "cpu") -> None:
        self.T = check_temperature(T)
        self.f = check_filling(f)
        self.params = params or HolsteinParams()
        self._device = device

    @property
    def device(self):
        return self._device

    def evaluate(self, Q):
        F, n, _ = self.evaluate_with_mu(Q)
        return F, n

    def evaluate_with_mu(self, Q):
        import torch

        from cdwdata import ed

        if Q.device.type == "cpu":
            # LAPACK through numpy: as fast as torch's and far more robust when the CPU is
            # shared (torch's OpenMP threads degrade badly under load).
            # A float32 hot loop diagonalises in float32 LAPACK (half the time).
            eig = "float32" if Q.dtype == torch.float32 else "float64"
            res = ed.solve(Q.detach().double().numpy(), self.T, self.f, self.params,
                           eig_dtype=eig)
            return (torch.from_numpy(res.F).to(Q.dtype), torch.from_numpy(res.n).to(Q.dtype),
                    torch.as_tensor(res.mu, dtype=torch.float64))
        res = ed.solve(Q, self.T, self.f, self.params)
        return res.F.to(Q.dtype), res.n.to(Q.dtype), res.mu.to(torch.float64)

    def attrs(self) -> dict[str, Any]:
        return {"forcefield": self.name, "f": self.f, "electron_T": self.T}
