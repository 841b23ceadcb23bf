"""Kernel polynomial method (KPM): local densities at a fixed chemical potential in O(N).

``n_i(Q; mu, T) = [f_FD((H - mu) / T)]_ii`` with the sparse single-particle matrix ``H``
(``-t`` on nearest-neighbour bonds, ``-g Q_i`` on the diagonal; CONTRACT.md section 1), the
grand-canonical counterpart of :func:`cdwdata.ed.density_at` for lattices far beyond exact
diagonalisation.

Three steps, each with a stated error:

1. **Scaling.** Gershgorin's theorem puts every eigenvalue of ``H`` in
   ``[min_i(-g Q_i) - 4|t|, max_i(-g Q_i) + 4|t|]`` (each row has four hoppings ``-t``); the
   affine map of that interval onto ``[-1, 1]`` gives ``H~`` with spectrum inside ``[-1, 1]``.
2. **Expansion.** The Fermi function in the scaled variable, ``F(x) = f_FD((a x + b - mu)/T)``,
   is analytic, so its Chebyshev series converges geometrically; the coefficients come from a
   DCT of ``F`` at Chebyshev nodes (no kernel damping: the series is that of ``F`` itself).
   The order ``M`` is the smallest with ``sum_{k >= M} |c_k| <= expansion_tol``. Since
   ``|T_k| <= 1`` on ``[-1, 1]``, this bounds ``||F(H~) - p_M(H~)||_2`` and hence the error of
   every diagonal element; the order grows like ``(spectral width) / (pi T) * log(1/tol)``.
3. **Diagonal by probing.** A lattice colouring with same-colour sites at least ``d`` apart
   (along x or y, periodic) gives one probe vector per colour, the sum of its sites' unit
   vectors; ``(p_M(H~) v_c)_i`` for a site ``i`` of colour ``c`` is ``p_M(H~)_ii`` plus the
   elements ``p_M(H~)_ij`` to the other sites of that colour, which decay exponentially with
   distance. How fast depends on the state (measured by ED on 40x40 lattices: at r = 12,
   ``max |rho_ij|`` is 1e-12 in late-quench CDW states, 1e-5 early in a quench, 1e-3 in a
   weakly disordered metal at T = 0.1), so the distance is found per call, a posteriori: the
   densities at ``d`` and at the next, larger distance ``d'`` are computed in one pass, and
   ``max_i |n_i(d) - n_i(d')|`` (the probing error at ``d``, whose own error at ``d'`` is
   exponentially smaller) must be below the probing share of the tolerance; otherwise ``d`` grows
   (x1.4) until it is, or until ``d > L/2``, where every site has its own colour and the
   diagonal is exact. The probe sets are fixed by ``L`` and ``d``: the result is deterministic,
   not stochastic.

Cost per configuration: ``M`` sparse products of ``H~`` (5 non-zeros per row) with an
``(N, n_colours)`` block, i.e. ``O(M * n_colours * N)``, linear in N at fixed T and tolerance.

Backends: ``"scipy"`` (scipy.sparse CSR, numpy in and out) and ``"torch"`` (torch sparse CSR
on the CPU or CUDA; torch tensors in give torch tensors out on their device).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from cdwdata.errors import InputError, ParameterError
from cdwdata.params import HolsteinParams, Lattice, check_configuration, check_lattice_shape

__all__ = ["KPMInfo", "chebyshev_coefficients", "colouring", "density",
           "expansion_order", "gershgorin_bounds", "next_distance", "probing_distance"]

#: Default total tolerance on max |n_KPM - n_exact|.
DEFAULT_TOL = 1e-3
#: Share of the tolerance given to the truncation of the Chebyshev series (the rest: probing).
EXPANSION_SHARE = 0.1
#: First probing distance tried: ``ceil(START_LENGTH * log(8 / probing_tol))`` (8 at the default
#: tolerance), enough for gapped (CDW) states.
START_LENGTH = 0.8
#: Factor between successive probing distances of the a-posteriori search.
DISTANCE_GROWTH = 1.4
#: Largest Chebyshev order the automatic choice accepts (T far too small for the width).
MAX_ORDER = 200_000


@dataclass(frozen=True)
class KPMInfo:
    """How one :func:`density` call was computed.

    Attributes
    ----------
    order : int
        Chebyshev order M (number of terms), the largest over the batch.
    distance : int
        Minimum separation (lattice spacings along x or y) of same-coloured sites.
    n_colours : int
        Number of probe vectors per configuration.
    expansion_error : float
        Bound on the truncation error of the Chebyshev series (max over the batch).
    probing_estimate : float
        Largest change of any density between the last two probing distances computed (the
        probing error of the coarser one, an upper estimate of the returned one's); 0 when
        every site has its own colour, NaN for a fixed ``distance`` (not checked).
    distances : tuple of int
        Every probing distance computed (the last is ``distance``).
    bounds : ndarray (B, 2)
        Gershgorin interval of each configuration.
    seconds : float
        Wall time of the expansion (matrix products).
    backend : str
    """

    order: int
    distance: int
    n_colours: int
    expansion_error: float
    probing_estimate: float
    distances: tuple
    bounds: np.ndarray
    seconds: float
    backend: str


# --- spectrum bounds and expansion ----------------------------------------------------------

def gershgorin_bounds(Q, params: HolsteinParams | None = None) -> np.ndarray:
    """Interval containing the spectrum of ``H`` for each configuration: ``(..., 2)``.

    Diagonal ``-g Q_i``, four off-diagonal ``-t`` per row: every eigenvalue lies in
    ``[min_i(-g Q_i) - 4|t|, max_i(-g Q_i) + 4|t|]``.
    """
    p = params or HolsteinParams()
    Q = np.asarray(Q, dtype=np.float64)
    d = -p.g * Q
    r = 4.0 * abs(p.t)
    lo = d.min(axis=(-2, -1)) - r
    hi = d.max(axis=(-2, -1)) + r
    return np.stack([lo, hi], axis=-1)


def _fermi_scaled(x, a, b, mu, T):
    """``f_FD((a x + b - mu) / T)`` for x of shape (K,) and per-configuration a, b, mu, T (B,)."""
    from scipy.special import expit

    return expit(-((a[:, None] * x[None, :] + b[:, None]) - mu[:, None]) / T[:, None])


def _order_estimate(a, b, mu, T, tol: float) -> int:
    """Geometric-convergence estimate from the nearest pole of F (Bernstein ellipse)."""
    z = ((mu - b) + 1j * math.pi * T) / a
    w = z + np.sqrt(z - 1) * np.sqrt(z + 1)
    rho = np.maximum(np.abs(w), 1 / np.abs(w))
    return int(np.max(np.log(4.0 / tol) / np.log(rho))) + 8


def chebyshev_coefficients(a, b, mu, T, tol: float, order: int | None = None):
    """Chebyshev coefficients of ``F(x) = f_FD((a x + b - mu)/T)`` on ``[-1, 1]``.

    Parameters
    ----------
    a, b, mu, T : arrays (B,)
        Half-width and centre of the spectral interval, chemical potential, temperature.
    tol : float
        Truncation tolerance: the order M is the smallest with ``sum_{k>=M} |c_k| <= tol`` for
        every configuration.
    order : int, optional
        Use this order instead (the truncation bound is still reported).

    Returns
    -------
    c : ndarray (B, M)
        Coefficients of ``sum_k c_k T_k(x)`` (``c_0`` already halved).
    bound : float
        ``max_b sum_{k>=M} |c_k|``, a bound on ``max_x |F(x) - p_M(x)|``.
    """
    from scipy.fft import dct

    a, b, mu, T = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (a, b, mu, T))
    est = _order_estimate(a, b, mu, T, tol)
    if order is not None:
        est = max(est, int(order))
    if est > MAX_ORDER:
        raise ParameterError(f"the Fermi function at T={T.min():g} over a spectral width "
                             f"{2 * a.max():.3g} needs about {est} Chebyshev terms (over "
                             f"{MAX_ORDER}): raise T or the tolerance")
    K = 1 << max(7, math.ceil(math.log2(2 * est + 64)))
    while True:
        x = np.cos(math.pi * (np.arange(K) + 0.5) / K)
        c = dct(_fermi_scaled(x, a, b, mu, T), type=2, axis=-1) / K
        c[:, 0] *= 0.5
        # the coefficients beyond K/2 must be negligible for the interpolant's to be the series'
        if np.abs(c[:, K // 2:]).sum(-1).max() <= 1e-3 * tol or K >= 4 * MAX_ORDER:
            break
        K *= 2
    tail = np.cumsum(np.abs(c[:, ::-1]), axis=-1)[:, ::-1]  # tail[:, m] = sum_{k>=m} |c_k|
    if order is None:
        ok = (tail <= tol).all(axis=0)
        M = int(np.argmax(ok)) if ok.any() else K
        M = max(M, 2)
    else:
        M = max(int(order), 2)
    bound = float(tail[:, M].max()) if M < K else 0.0
    return c[:, :M], bound


def expansion_order(Q, mu, T, tol: float = DEFAULT_TOL * EXPANSION_SHARE,
                    params: HolsteinParams | None = None) -> int:
    """Chebyshev order that :func:`density` uses for ``Q`` at ``mu``, ``T`` (max over a batch)."""
    Q = check_configuration(Q)
    lead = Q.shape[:-2]
    a, b = _scaling(gershgorin_bounds(Q, params).reshape(-1, 2))
    mu_b, T_b = _per_config(mu, T, lead)
    return chebyshev_coefficients(a, b, mu_b, T_b, tol)[0].shape[-1]


def _scaling(bounds: np.ndarray):
    lo, hi = bounds[:, 0], bounds[:, 1]
    return 0.5 * (hi - lo), 0.5 * (hi + lo)


# --- probing ---------------------------------------------------------------------------------

def probing_distance(tol: float) -> int:
    """First probing distance of the a-posteriori search at probing tolerance ``tol``."""
    return max(4, math.ceil(START_LENGTH * math.log(8.0 / tol)))


def next_distance(L: int, distance: int) -> int:
    """The next larger distance whose colouring differs (``L // 2 + 1`` means exact)."""
    d = max(distance + 1, math.ceil(DISTANCE_GROWTH * distance))
    m = L // distance
    while d <= L // 2 and L // d == m:  # same number of intervals: same colouring
        d += 1
    return min(d, L // 2 + 1)


@lru_cache(maxsize=32)
def _axis_colours(L: int, distance: int) -> tuple[np.ndarray, int]:
    """Colour of each coordinate 0..L-1 along one periodic axis, and the number of colours.

    The ring is cut into ``m = L // distance`` intervals of (nearly) equal length ``>= distance``;
    a coordinate's colour is its position inside its interval, so two coordinates of one colour
    are at least ``distance`` apart both ways round the ring. ``m = 1``: every coordinate its own.
    """
    m = max(1, L // distance)
    starts = (np.arange(m + 1) * L) // m
    idx = np.searchsorted(starts, np.arange(L), side="right") - 1
    pos = np.arange(L) - starts[idx]
    pos.setflags(write=False)
    return pos, int(np.diff(starts).max())


def colouring(L: int, distance: int) -> tuple[np.ndarray, int]:
    """Site colours ``(L, L)`` (ints) and their number, for same-colour sites at least
    ``distance`` apart along x or y (periodic). ``distance > L // 2`` gives every site its own
    colour (exact diagonal)."""
    if distance < 1:
        raise ParameterError(f"distance={distance} must be >= 1")
    cx, nx = _axis_colours(int(L), int(distance))
    return cx[:, None] * nx + cx[None, :], nx * nx


# --- the expansion ----------------------------------------------------------------------------

def _per_config(mu, T, lead) -> tuple[np.ndarray, np.ndarray]:
    B = int(np.prod(lead, dtype=int))
    out = []
    for name, v in (("mu", mu), ("T", T)):
        arr = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise InputError(f"{name} must be finite, got {arr}")
        try:
            arr = np.broadcast_to(arr, lead).reshape(B)
        except ValueError:
            raise InputError(f"{name} of shape {arr.shape} does not match the batch shape "
                             f"{tuple(lead)} of Q") from None
        out.append(arr)
    if (out[1] <= 0).any():
        raise ParameterError(f"T={out[1][out[1] <= 0][0]!r}: KPM densities need T > 0")
    return out[0], out[1]


def _block_csr_parts(Qflat: np.ndarray, L: int, a, b, p: HolsteinParams):
    """CSR arrays of the block-diagonal scaled matrix ``(H - b) / a`` of a batch (B, N)."""
    B, N = Qflat.shape
    nb = Lattice(L).neighbors  # (N, 4)
    offs = (np.arange(B) * N)[:, None, None]
    cols = np.concatenate([nb[None] + offs, (np.arange(N)[None, :, None] + offs)], axis=-1)
    diag = (-p.g * Qflat - b[:, None]) / a[:, None]
    hop = np.broadcast_to((-p.t / a)[:, None, None], (B, N, 4))
    vals = np.concatenate([hop, diag[..., None]], axis=-1)
    indptr = np.arange(0, 5 * B * N + 1, 5)
    return indptr, cols.reshape(-1), vals.reshape(-1)


class _Scipy:
    name = "scipy"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def matrix(self, indptr, cols, vals, n):
        import scipy.sparse as sp

        return sp.csr_matrix((vals.astype(self.dtype), cols, indptr), shape=(n, n))

    def array(self, x):
        return np.asarray(x, dtype=self.dtype)

    @staticmethod
    def index(x):
        return x

    @staticmethod
    def matmul(A, V):
        return A @ V

    @staticmethod
    def to_numpy(x):
        return np.asarray(x, dtype=np.float64)


class _Torch:
    name = "torch"

    def __init__(self, dtype, device):
        import torch

        self.torch = torch
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[str(dtype)]
        self.device = torch.device(device)

    def matrix(self, indptr, cols, vals, n):
        import warnings

        t = self.torch
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return t.sparse_csr_tensor(t.as_tensor(indptr, device=self.device),
                                       t.as_tensor(cols, device=self.device),
                                       t.as_tensor(vals, dtype=self.dtype, device=self.device),
                                       size=(n, n), check_invariants=False)

    def array(self, x):
        return self.torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def index(self, x):
        return self.torch.as_tensor(x, dtype=self.torch.long, device=self.device)

    @staticmethod
    def matmul(A, V):
        return A @ V

    @staticmethod
    def to_numpy(x):
        return x.double().cpu().numpy()


def _expand(ops, Qflat, L, a, b, coef, blocks, p):
    """``sum_k c_k [T_k(H~) V]_(i, colour(i))`` for one chunk of configurations and each
    colouring in ``blocks`` (a list of ``(colours (L, L), n_colours)``), in one pass whose
    probe block holds every colouring's vectors side by side. Returns a list of (B, N) arrays."""
    B, N = Qflat.shape
    indptr, cols, vals = _block_csr_parts(Qflat, L, a, b, p)
    A = ops.matrix(indptr, cols, vals, B * N)
    rows = np.arange(B * N)
    width = sum(nc for _, nc in blocks)
    V0 = np.zeros((B * N, width))
    gathers, start = [], 0
    for colours, nc in blocks:
        col_of = np.tile(colours.reshape(-1), B) + start
        V0[rows, col_of] = 1.0
        gathers.append((ops.index(rows), ops.index(col_of)))
        start += nc
    V0 = ops.array(V0)
    c = ops.array(coef)  # (B, M); site values are gathered as (B, N) and scaled per config
    M = coef.shape[-1]
    acc = [c[:, 0:1] * V0[r, k].reshape(B, N) for r, k in gathers]
    V1 = ops.matmul(A, V0)
    for j, (r, k) in enumerate(gathers):
        acc[j] += c[:, 1:2] * V1[r, k].reshape(B, N)
    for m in range(2, M):
        V2 = ops.matmul(A, V1)
        V2 *= 2.0
        V2 -= V0
        for j, (r, k) in enumerate(gathers):
            acc[j] += c[:, m:m + 1] * V2[r, k].reshape(B, N)
        V0, V1 = V1, V2
    return [ops.to_numpy(x) for x in acc]


def _chunk_size(N: int, n_colours: int, budget: float = 2.5e8) -> int:
    """Configurations per block product so that one (B N, n_colours) array stays ~250 MB."""
    return max(1, int(budget // (8 * N * n_colours)))


def _run(ops, Qflat, L, a, b, coef, distances, p) -> list[np.ndarray]:
    """Densities (B, N) at each probing distance in ``distances``, chunked over the batch."""
    blocks = [colouring(L, d) for d in distances]
    N = L * L
    out = [np.empty_like(Qflat) for _ in distances]
    step = _chunk_size(N, sum(nc for _, nc in blocks))
    for s in range(0, Qflat.shape[0], step):
        sl = slice(s, s + step)
        for o, n in zip(out, _expand(ops, Qflat[sl], L, a[sl], b[sl], coef[sl], blocks, p),
                        strict=True):
            o[sl] = n.reshape(-1, N)
    return out


def density(Q, mu, T, params: HolsteinParams | None = None, *, tol: float = DEFAULT_TOL,
            order: int | None = None, distance: int | None = None, backend: str | None = None,
            device: Any = None, dtype: str = "float64", return_info: bool = False):
    """Local densities ``n_i(Q; mu, T)`` at a fixed chemical potential, by KPM (O(N)).

    Parameters
    ----------
    Q : array (..., L, L)
        Configurations (numpy array or torch tensor).
    mu, T : float or array broadcastable to ``Q.shape[:-2]``
        Chemical potential(s) and temperature(s) > 0.
    params : HolsteinParams, optional
    tol : float
        Target of max |n_KPM - n_exact| (default 1e-3): 10% to the Chebyshev truncation (a
        bound), 90% to probing (checked a posteriori, see the module docstring).
    order : int, optional
        Chebyshev order instead of the one chosen from ``tol``.
    distance : int, optional
        Fixed probing distance (no a-posteriori check) instead of the search.
    backend : {"scipy", "torch"}, optional
        Default: "torch" for torch input (on its device), else "scipy".
    device : str, optional
        torch device for the torch backend with numpy input (default: cuda if available).
    dtype : {"float64", "float32"}
        Precision of the matrix products (float32 halves the memory traffic; its rounding,
        about 1e-6 here, comes on top of ``tol``).
    return_info : bool
        Also return a :class:`KPMInfo`.

    Returns
    -------
    n : same shape (and kind) as ``Q``; ``(n, info)`` with ``return_info``.
    """
    p = params or HolsteinParams()
    is_torch = type(Q).__module__.startswith("torch")
    out_device = None
    if is_torch:
        out_device, out_dtype = Q.device, Q.dtype
        check_lattice_shape(Q.shape)
        Qn = check_configuration(Q.detach().cpu().double().numpy())
        backend = backend or "torch"
        device = device or out_device
    else:
        Qn = check_configuration(Q)
        backend = backend or "scipy"
    if not 0 < tol < 1:
        raise ParameterError(f"tol={tol!r} must be in (0, 1)")
    if dtype not in ("float64", "float32"):
        raise ParameterError(f"dtype={dtype!r}: use 'float64' or 'float32'")
    if backend == "scipy":
        ops = _Scipy(dtype)
    elif backend == "torch":
        import torch

        ops = _Torch(dtype, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    else:
        raise ParameterError(f"backend={backend!r}: use 'scipy' or 'torch'")

    lead, L = Qn.shape[:-2], Qn.shape[-1]
    N = L * L
    Qflat = Qn.reshape(-1, N)
    mu_b, T_b = _per_config(mu, T, lead)
    bounds = gershgorin_bounds(Qflat.reshape(-1, L, L), p)
    a, b = _scaling(bounds)
    coef, exp_err = chebyshev_coefficients(a, b, mu_b, T_b, EXPANSION_SHARE * tol, order)
    probe_tol = (1 - EXPANSION_SHARE) * tol

    t0 = time.perf_counter()
    if distance is not None:
        d = min(int(distance), L // 2 + 1)
        if d < 1:
            raise ParameterError(f"distance={distance!r} must be >= 1")
        n = _run(ops, Qflat, L, a, b, coef, [d], p)[0]
        tried, change = [d], (0.0 if colouring(L, d)[1] == N else math.nan)
    else:
        d = min(probing_distance(probe_tol), L // 2 + 1)
        if colouring(L, d)[1] == N:  # small lattice: exact diagonal straight away
            n, tried, change = _run(ops, Qflat, L, a, b, coef, [d], p)[0], [d], 0.0
        else:
            d2 = next_distance(L, d)
            n_prev, n = _run(ops, Qflat, L, a, b, coef, [d, d2], p)
            tried = [d, d2]
            change = float(np.abs(n - n_prev).max())
            while change > probe_tol and colouring(L, tried[-1])[1] < N:
                d2 = next_distance(L, tried[-1])
                n_prev, n = n, _run(ops, Qflat, L, a, b, coef, [d2], p)[0]
                tried.append(d2)
                change = float(np.abs(n - n_prev).max())
            if colouring(L, tried[-1])[1] == N:
                change = 0.0
    seconds = time.perf_counter() - t0
    d = tried[-1]
    n = n.reshape(Qn.shape)
    if is_torch:
        import torch

        n = torch.as_tensor(n, dtype=out_dtype, device=out_device)
    if not return_info:
        return n
    info = KPMInfo(order=int(coef.shape[-1]), distance=int(d), n_colours=colouring(L, d)[1],
                   expansion_error=exp_err, probing_estimate=change, distances=tuple(tried),
                   bounds=bounds.reshape(*lead, 2), seconds=seconds, backend=ops.name)
    return n, info
