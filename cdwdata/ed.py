"""Exact diagonalisation (ED) of the electron Hamiltonian of the Holstein model.

Single-particle matrix: ``-t`` on nearest-neighbour bonds, ``-g Q_i`` on the diagonal
(docs/conventions.md). Electrons are in quasi-equilibrium at temperature ``T`` with the
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

from cdwdata.errors import InputError, ParameterError
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
        if H.dtype == np.float32:
            # divide and conquer in single precision: about half the time of float64 LAPACK
            from scipy.linalg import eigh as _eigh

            out = [_eigh(h, driver="evd", overwrite_a=True, check_finite=False) for h in H]
            return (np.stack([e for e, _ in out]).astype(np.float64),
                    np.stack([v for _, v in out]).astype(np.float64))
        return np.linalg.eigh(H)

    @staticmethod
    def sigmoid(x):
        from scipy.special import expit

        return expit(x)

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
    raise ParameterError(f"backend={backend!r} is not known: use 'numpy' or 'torch'")


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
    """Elastic force ``-k Q_i - kappa sum_{j nn i} Q_j`` (paper eq. 5), numpy or torch
    (:meth:`HolsteinParams.elastic_force`)."""
    return (params or HolsteinParams()).elastic_force(Q)


def solve(Q, T: float, f: float, params: HolsteinParams | None = None, backend: str = "numpy",
          eig_dtype: str = "float64"):
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
    eig_dtype : {"float64", "float32"}
        Precision of the eigensolver (numpy backend). ``"float32"`` halves the cost; levels
        and vectors are promoted to float64 before the occupations, so the densities carry
        single-precision rounding only (max |dn| ~ 1e-6, measured in ``tests/test_ed.py``).

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
    if eig_dtype == "float32" and ops is _Numpy:
        H = H.astype(np.float32)
    elif eig_dtype not in ("float32", "float64"):
        raise ParameterError(f"eig_dtype={eig_dtype!r}: use 'float32' or 'float64'")
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
    lattice = (0.5 * p.g * Q + p.elastic_site_energy(Q)).sum((-2, -1))
    return electronic + lattice


# --- fixed chemical potential (grand canonical) ---------------------------------------------

@dataclass(frozen=True)
class Spectrum:
    """One diagonalisation, reusable at any (mu, T): levels and level weights per site.

    Attributes
    ----------
    eps : (B, N) float64 levels, ascending
    weights : (B, N_sites, N) float64 ``|psi_m(i)|^2`` (each row and column sums to 1)
    L : int
    """

    eps: np.ndarray
    weights: np.ndarray
    L: int

    def density(self, mu, T) -> np.ndarray:
        """``n_i = sum_m |psi_m(i)|^2 f_FD((eps_m - mu)/T)`` at ``mu``, ``T`` of shape (B, K).

        Returns (B, K, L, L). ``T`` must be > 0 (the grand-canonical labels are thermal).
        """
        from scipy.special import expit

        mu = np.asarray(mu, dtype=float)
        T = np.asarray(T, dtype=float)
        if mu.ndim == 1:
            mu, T = mu[:, None], T[:, None]
        if (T <= 0).any():
            raise InputError("grand-canonical densities need T > 0")
        occ = expit((mu[..., None] - self.eps[:, None, :]) / T[..., None])  # (B, K, N)
        n = np.einsum("bim,bkm->bki", self.weights, occ)
        return n.reshape(*n.shape[:2], self.L, self.L)

    def chemical_potential(self, T, f) -> np.ndarray:
        """mu giving filling ``f`` at temperature ``T`` (arrays of shape (B, K)) -> (B, K)."""
        T = np.asarray(T, dtype=float)
        f = np.asarray(f, dtype=float)
        N = self.eps.shape[-1]
        out = np.empty(np.broadcast_shapes(T.shape, f.shape))
        Tb, fb = np.broadcast_to(T, out.shape), np.broadcast_to(f, out.shape)
        for k in range(out.shape[1]):
            for b in range(out.shape[0]):
                out[b, k] = _chemical_potential(_Numpy, self.eps[b], float(Tb[b, k]),
                                                float(fb[b, k]) * N)
        return out


def spectrum(Q, params: HolsteinParams | None = None) -> Spectrum:
    """Diagonalise configurations ``Q (..., L, L)`` once (float64 LAPACK); see :class:`Spectrum`."""
    p = params or HolsteinParams()
    Q = check_configuration(Q)
    L = Q.shape[-1]
    Qflat = Q.reshape(-1, L * L)
    eps, psi = _Numpy.eigh(_Numpy.hamiltonian(Qflat, _hopping(L, p.t), p.g))
    return Spectrum(eps=eps, weights=psi * psi, L=L)


def density_at(Q, mu, T: float, params: HolsteinParams | None = None) -> np.ndarray:
    """Local densities at a fixed chemical potential ``mu`` (scalar or one per configuration)
    and temperature ``T > 0``: ``(..., L, L) -> (..., L, L)``. The exact grand-canonical
    reference of :func:`cdwdata.kpm.density` and of the grand-canonical ML model."""
    T = check_temperature(T)
    Q = check_configuration(Q)
    lead = Q.shape[:-2]
    sp = spectrum(Q, params)
    mu = np.broadcast_to(np.asarray(mu, dtype=float), lead).reshape(-1)
    n = sp.density(mu[:, None], np.full((mu.size, 1), T))[:, 0]
    return n.reshape(Q.shape)
