"""Exact diagonalisation (ED) of the electron Hamiltonian of the Holstein model.

Single-particle matrix: ``-t`` on nearest-neighbour bonds, ``-g Q_i`` on the diagonal
(CONTRACT.md section 1). Electrons are in quasi-equilibrium at temperature ``T`` with the
chemical potential fixed by the filling ``f``: ``sum_i n_i = f L**2``. At ``T = 0`` the lowest
``round(f L**2)`` levels are filled; a degenerate shell at the Fermi level is shared equally,
which is the ``T -> 0`` limit of the Fermi-Dirac result and keeps ``n`` basis-independent.

Two backends share the same code: ``"numpy"`` (LAPACK via numpy) and ``"torch"`` (runs on CUDA
when a GPU is present). Everything is float64 and batched over leading dimensions.

Public functions: :func:`density`, :func:`forces`, :func:`solve`, :func:`free_energy`,
:func:`elastic_force`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from cdwdata.errors import InputError
from cdwdata.params import (
    HolsteinParams,
    Lattice,
    check_configuration,
    check_filling,
    check_lattice_shape,
    check_temperature,
)

__all__ = ["EDResult", "density", "elastic_force", "forces", "free_energy", "solve"]

#: Relative tolerance under which two eigenvalues count as degenerate at T = 0.
DEGENERACY_RTOL = 1e-10
#: Bisection steps for mu: 120 halvings shrink any bracket (< 1e20 wide) to adjacent floats.
_BISECTION_STEPS = 120


@dataclass(frozen=True)
class EDResult:
    """Everything one diagonalisation gives, arrays of the input's kind (numpy or torch).

    Attributes
    ----------
    n : (..., L, L) local densities
    F : (..., L, L) total forces
    mu : (...) chemical potentials
    eps : (..., N) single-particle levels, ascending
    occ : (..., N) level occupations
    """

    n: Any
    F: Any
    mu: Any
    eps: Any
    occ: Any


class _Numpy:
    """The few array operations the solver needs, numpy flavour."""

    name = "numpy"

    @staticmethod
    def eigh(H):
        return np.linalg.eigh(H)

    @staticmethod
    def sigmoid(x):
        from scipy.special import expit

        return expit(x)

    @staticmethod
    def softplus(x):
        return np.logaddexp(0.0, x)

    where = staticmethod(np.where)
    abs = staticmethod(np.abs)

    @staticmethod
    def full_like(x, value):
        return np.full_like(x, value)

    @staticmethod
    def hamiltonian(Qflat, hop, g):
        H = np.repeat(hop[None], Qflat.shape[0], axis=0)
        i = np.arange(hop.shape[0])
        H[:, i, i] = -g * Qflat
        return H


class _Torch:
    """The same operations, torch flavour (any device)."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def eigh(self, H):
        return self.torch.linalg.eigh(H)

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def softplus(self, x):
        return self.torch.nn.functional.softplus(x)

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def abs(self, x):
        return self.torch.abs(x)

    def full_like(self, x, value):
        return self.torch.full_like(x, value)

    def hamiltonian(self, Qflat, hop, g):
        hop_t = self.torch.tensor(hop, dtype=Qflat.dtype, device=Qflat.device)
        H = hop_t.expand(Qflat.shape[0], -1, -1).clone()
        H.diagonal(dim1=-2, dim2=-1).copy_(-g * Qflat)
        return H


@lru_cache(maxsize=16)
def _hopping(L: int, t: float) -> np.ndarray:
    H = Lattice(L).hopping_matrix(t)
    H.setflags(write=False)
    return H


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _prepare(Q, backend: str):
    """Validate Q and return (ops, flat float64 batch (B, N), leading shape, L, to_output)."""
    if _is_torch(Q):
        import torch

        if Q.dtype.is_complex or Q.dtype == torch.bool:
            raise InputError(f"Q must be a real numeric tensor, got dtype {Q.dtype}")
        if not torch.isfinite(Q).all():
            bad = int((~torch.isfinite(Q)).sum())
            raise InputError(f"Q contains {bad} non-finite value(s) (NaN or inf)")
        check_lattice_shape(Q.shape)
        ops = _Torch()
        Qt = Q.to(torch.float64)
        return ops, Qt.reshape(-1, Q.shape[-1] * Q.shape[-2]), Q.shape[:-2], Q.shape[-1], None
    Q = check_configuration(Q)
    if backend == "numpy":
        return _Numpy, Q.reshape(-1, Q.shape[-1] ** 2), Q.shape[:-2], Q.shape[-1], None
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        Qt = torch.as_tensor(Q, dtype=torch.float64, device=device)
        to_np = lambda a: a.cpu().numpy()  # noqa: E731
        return _Torch(), Qt.reshape(-1, Q.shape[-1] ** 2), Q.shape[:-2], Q.shape[-1], to_np
    raise ValueError(f"backend={backend!r} is not known: use 'numpy' or 'torch'")


def _chemical_potential(ops, eps, T: float, n_el: float):
    """Bisection for mu with sum_m f_FD((eps_m - mu)/T) = n_el, vectorised over the batch.

    A fixed number of halvings (no early exit) takes every bracket down to adjacent floats, a
    fixed point of the iteration, so each configuration's mu is independent of its batch-mates.
    """
    lo = eps[..., 0] - 50.0 * T - 1.0
    hi = eps[..., -1] + 50.0 * T + 1.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        count = ops.sigmoid((mid[..., None] - eps) / T).sum(-1)
        below = count < n_el
        lo = ops.where(below, mid, lo)
        hi = ops.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _occupations(ops, eps, T: float, f: float, N: int):
    """Level occupations and chemical potential; exact ground state at T = 0."""
    if T > 0:
        mu = _chemical_potential(ops, eps, T, f * N)
        return ops.sigmoid((mu[..., None] - eps) / T), mu
    n_el = int(round(f * N))
    if n_el == 0:
        return eps * 0.0, eps[..., 0]
    e_f = eps[..., n_el - 1 : n_el]
    tol = DEGENERACY_RTOL * (1.0 + ops.abs(e_f))
    below = eps < e_f - tol
    degenerate = ops.abs(eps - e_f) <= tol
    one, zero = ops.full_like(eps, 1.0), ops.full_like(eps, 0.0)
    below_f = ops.where(below, one, zero)
    deg_f = ops.where(degenerate, one, zero)
    n_below = below_f.sum(-1, keepdims=True)
    n_deg = deg_f.sum(-1, keepdims=True)
    occ = below_f + deg_f * ((n_el - n_below) / n_deg)
    return occ, e_f[..., 0]


def elastic_force(Q, params: HolsteinParams | None = None):
    """Elastic force ``-k Q_i - kappa sum_{j nn i} Q_j`` (paper eq. 5), numpy or torch."""
    p = params or HolsteinParams()
    return -p.k * Q - p.kappa * Lattice.neighbor_sum(Q)


def solve(Q, T: float, f: float, params: HolsteinParams | None = None, backend: str = "numpy"):
    """Diagonalise and return densities, forces, mu, levels and occupations.

    Parameters
    ----------
    Q : array (..., L, L)
        Lattice distortions; numpy array, or torch tensor (then the torch backend is used on
        the tensor's device and torch tensors are returned).
    T : float
        Electron (bath) temperature, >= 0.
    f : float
        Filling fraction in (0, 1).
    params : HolsteinParams, optional
    backend : {"numpy", "torch"}
        For numpy input: LAPACK through numpy, or torch (CUDA if available).

    Returns
    -------
    EDResult
    """
    T = check_temperature(T)
    f = check_filling(f)
    p = params or HolsteinParams()
    ops, Qflat, lead, L, to_np = _prepare(Q, backend)
    N = L * L
    H = ops.hamiltonian(Qflat, _hopping(L, p.t), p.g)
    eps, psi = ops.eigh(H)
    del H
    occ, mu = _occupations(ops, eps, T, f, N)
    nflat = ((psi * psi) @ occ[..., None])[..., 0]
    Qgrid = Qflat.reshape(*lead, L, L)
    n = nflat.reshape(*lead, L, L)
    F = p.g * (n - 0.5) + elastic_force(Qgrid, p)
    res = EDResult(n=n, F=F, mu=mu.reshape(lead), eps=eps.reshape(*lead, N),
                   occ=occ.reshape(*lead, N))
    if to_np is not None:
        res = EDResult(**{k: to_np(v) for k, v in res.__dict__.items()})
    return res


def density(Q, T: float, f: float, params: HolsteinParams | None = None, backend: str = "numpy"):
    """Local electron density ``n_i`` (paper eq. 8), shape of ``Q``."""
    return solve(Q, T, f, params, backend).n


def forces(Q, T: float, f: float, params: HolsteinParams | None = None, backend: str = "numpy"):
    """Total force ``F_i = -k Q_i - kappa sum_nn Q_j + g (n_i - 1/2)`` (paper eqs. 4, 5, 7)."""
    return solve(Q, T, f, params, backend).F


def free_energy(Q, T: float, f: float, params: HolsteinParams | None = None):
    """Helmholtz free energy whose negative gradient is :func:`forces`, shape ``Q.shape[:-2]``.

    ``A = Omega(mu) + mu f N + (g/2) sum Q + (k/2) sum Q^2 + kappa sum_<ij> Q_i Q_j`` with the
    grand potential ``Omega = -T sum_m log(1 + exp(-(eps_m - mu)/T))``; at T = 0 the electronic
    part is the sum of the occupied levels. numpy only (it is a test and analysis tool).
    """
    p = params or HolsteinParams()
    Q = check_configuration(Q)
    res = solve(Q, T, f, p)
    N = Q.shape[-1] ** 2
    if T > 0:
        x = (res.mu[..., None] - res.eps) / T
        electronic = -T * np.logaddexp(0.0, x).sum(-1) + res.mu * f * N
    else:
        electronic = (res.occ * res.eps).sum(-1)
    bonds = (Q * (np.roll(Q, -1, -2) + np.roll(Q, -1, -1))).sum((-2, -1))
    lattice = 0.5 * p.g * Q.sum((-2, -1)) + 0.5 * p.k * (Q * Q).sum((-2, -1)) + p.kappa * bonds
    return electronic + lattice
