"""Exact diagonalisation: physics of the electron solver (docs/conventions.md).

Every test states a physical property (gradient of a free energy, sum rule, symmetry,
limiting case, cross-check of two backends) rather than a stored snapshot of output.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import expit

from cdwdata import HolsteinParams, Lattice, ed


def _cdw(L: int, rng, amp: float = 0.8, noise: float = 0.2) -> np.ndarray:
    """Checkerboard distortion plus noise: a configuration with a large gap at f = 1/2."""
    return amp * Lattice(L).sign + noise * rng.normal(size=(L, L))


# ------------------------------------------------------------------ forces = -grad A


def _fd_gradient(Q, T, f, params, sites, h=1e-5):
    """Central finite difference of ed.free_energy at the given flat site indices."""
    L = Q.shape[-1]
    batch = []
    for i in sites:
        for s in (+1.0, -1.0):
            Qs = Q.copy().reshape(-1)
            Qs[i] += s * h
            batch.append(Qs.reshape(L, L))
    A = ed.free_energy(np.stack(batch), T, f, params).reshape(len(sites), 2)
    return (A[:, 0] - A[:, 1]) / (2 * h)


@pytest.mark.parametrize("f", [0.5, 0.4, 0.3])
@pytest.mark.parametrize("T", [0.05, 0.1, 0.5])
def test_forces_are_minus_gradient_of_free_energy(T, f, backend, params, rng):
    L = 4
    Q = rng.normal(0.0, 0.5, (L, L)) + 0.4 * Lattice(L).sign
    sites = [0, 3, 5, 10, 15]
    F = np.asarray(ed.forces(Q, T, f, params, backend=backend)).reshape(-1)[sites]
    grad = _fd_gradient(Q, T, f, params, sites)
    assert np.max(np.abs(F + grad)) < 1e-7
    assert np.max(np.abs(F)) > 0.1  # not a vacuous comparison


@pytest.mark.parametrize("f", [0.5, 0.3])
def test_forces_are_minus_gradient_on_L6_with_other_params(f, rng):
    p = HolsteinParams(t=0.7, g=2.0, k=1.3, kappa=-0.2)
    Q = rng.normal(0.0, 0.7, (6, 6))
    sites = [0, 7, 20, 35]
    F = ed.forces(Q, 0.1, f, p).reshape(-1)[sites]
    assert np.max(np.abs(F + _fd_gradient(Q, 0.1, f, p, sites))) < 1e-7


def test_forces_are_minus_gradient_at_T0_with_a_gap(params, rng):
    """At T = 0 with a gap at the Fermi level A is the (smooth) sum of occupied levels."""
    Q = _cdw(6, rng)
    res = ed.solve(Q, 0.0, 0.5, params)
    assert res.eps[18] - res.eps[17] > 1.0  # precondition: gapped
    sites = [0, 1, 14, 29]
    F = res.F.reshape(-1)[sites]
    assert np.max(np.abs(F + _fd_gradient(Q, 0.0, 0.5, params, sites))) < 1e-7


# ---------------------------------------------------------------------------- sum rule


@pytest.mark.parametrize("f", [0.5, 0.4, 0.3, 0.37, 0.9])
@pytest.mark.parametrize("T", [0.01, 0.1, 1.0])
def test_sum_rule_at_finite_T(T, f, backend, params, rng):
    Q = rng.normal(0.0, 1.0, (3, 6, 6))
    res = ed.solve(Q, T, f, params, backend=backend)
    n, occ, eps, mu = (np.asarray(a) for a in (res.n, res.occ, res.eps, res.mu))
    assert np.allclose(n.sum((-2, -1)), f * 36, rtol=0, atol=1e-9)
    # The occupations are Fermi-Dirac at the returned chemical potential.
    assert np.allclose(occ, expit((mu[..., None] - eps) / T), atol=1e-12)
    assert np.all((n > 0) & (n < 1))


@pytest.mark.parametrize("f", [0.005, 0.995])
@pytest.mark.parametrize("T", [0.01, 3.0, 100.0])
def test_sum_rule_at_extreme_fillings_and_temperatures(T, f, backend, params, rng):
    """mu far outside the band (f -> 0 or 1, high T): the bracket of the mu search must hold.

    For T >> bandwidth, n_i -> f and mu -> T log(f / (1 - f)) + O(bandwidth).
    """
    Q = rng.normal(0.0, 1.0, (2, 6, 6))
    res = ed.solve(Q, T, f, params, backend=backend)
    n, mu = np.asarray(res.n), np.asarray(res.mu)
    assert np.allclose(n.sum((-2, -1)), f * 36, rtol=0, atol=1e-9)
    if T == 100.0:
        assert np.allclose(n, f, atol=0.01)
        assert np.allclose(mu, T * np.log(f / (1 - f)), atol=2 * (4 * params.t + 3 * params.g))


@pytest.mark.parametrize(("L", "f"), [(4, 0.5), (4, 0.25), (6, 1 / 3), (6, 0.5), (8, 0.375)])
def test_sum_rule_at_T0(L, f, backend, params, rng, request):
    Q = rng.normal(0.0, 1.0, (2, L, L))
    n = np.asarray(ed.density(Q, 0.0, f, params, backend=backend))
    assert np.allclose(n.sum((-2, -1)), f * L * L, rtol=0, atol=1e-10)
    assert np.all((n > -1e-12) & (n < 1 + 1e-12))


# ---------------------------------------------------------------- particle-hole symmetry


@pytest.mark.parametrize("T", [0.0, 0.05, 0.5])
def test_particle_hole_symmetry_at_half_filling(T, backend, params, rng, request):
    """n_i(-Q) = 1 - n_i(Q) at f = 1/2.

    Derivation: write H(Q) = T_hop - g diag(Q), with T_hop = -t on nearest-neighbour bonds.
    With S = diag((-1)**(x+y)) (the lattice is bipartite), S T_hop S = -T_hop and S commutes
    with diagonal matrices, so S H(Q) S = -T_hop - g diag(Q) = -H(-Q).  Hence H(-Q) has the
    levels -eps_m(Q) with eigenvectors S psi_m (same |psi_m(i)|^2).  At f = 1/2 the flipped
    spectrum has mu(-Q) = -mu(Q), and f_FD(-eps + mu) = 1 - f_FD(eps - mu), so
    n_i(-Q) = sum_m |psi_m(i)|^2 (1 - occ_m(Q)) = 1 - n_i(Q) by completeness.  At T = 0
    the equal sharing of a degenerate Fermi shell is symmetric too.
    """
    Q = rng.normal(0.0, 1.0, (2, 6, 6))
    n_plus = np.asarray(ed.density(Q, T, 0.5, params, backend=backend))
    n_minus = np.asarray(ed.density(-Q, T, 0.5, params, backend=backend))
    assert np.allclose(n_minus, 1.0 - n_plus, atol=1e-10)
    assert np.max(np.abs(n_plus - 0.5)) > 0.05  # the symmetry is not trivially 1/2 = 1/2


def test_particle_hole_symmetry_fails_away_from_half_filling(params, rng):
    """Control: the relation is special to f = 1/2 (guards against a vacuous check)."""
    Q = rng.normal(0.0, 1.0, (6, 6))
    n_plus = ed.density(Q, 0.1, 0.4, params)
    n_minus = ed.density(-Q, 0.1, 0.4, params)
    assert not np.allclose(n_minus, 1.0 - n_plus, atol=1e-3)
    # ... but f -> 1 - f together with Q -> -Q is a symmetry.
    assert np.allclose(ed.density(-Q, 0.1, 0.6, params), 1.0 - n_plus, atol=1e-10)


# ---------------------------------------------------------------------- g = 0 limit


@pytest.mark.parametrize("f", [0.5, 0.4, 0.3, 0.123])
@pytest.mark.parametrize("T", [0.01, 0.3])
def test_free_electrons_are_uniform_at_finite_T(T, f, backend, rng):
    p = HolsteinParams(g=0.0)
    Q = rng.normal(0.0, 2.0, (2, 6, 6))  # irrelevant at g = 0
    n = np.asarray(ed.density(Q, T, f, p, backend=backend))
    assert np.allclose(n, f, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n_el", range(1, 16))
def test_free_electrons_at_T0_share_a_degenerate_shell_equally(n_el, backend, rng, request):
    """L = 4 free band -2(cos kx + cos ky) has shells of size 1, 4, 6, 4, 1.

    When round(f N) ends inside a shell, the eigenvectors of that shell are arbitrary; only
    equal sharing gives a basis-independent, translation-invariant (uniform) density.
    """
    p = HolsteinParams(g=0.0)
    N = 16
    f = (n_el + 0.2) / N  # round(f N) = n_el, but f != n_el / N
    n = np.asarray(ed.density(rng.normal(size=(4, 4)), 0.0, f, p, backend=backend))
    assert np.allclose(n, n_el / N, rtol=0, atol=1e-12)
    assert abs(n.sum() - n_el) < 1e-12


def test_free_electron_shell_structure_is_degenerate():
    """Precondition of the test above: n_el = 3 and 8 end inside degenerate shells."""
    res = ed.solve(np.zeros((4, 4)), 0.0, 3 / 16, HolsteinParams(g=0.0))
    assert np.allclose(res.eps, [-4] + [-2] * 4 + [0] * 6 + [2] * 4 + [4], atol=1e-12)
    assert np.allclose(res.occ, [1] + [0.5] * 4 + [0] * 11, atol=1e-12)


def test_free_electrons_at_T0_on_L6_are_uniform(rng):
    p = HolsteinParams(g=0.0)
    for n_el in (5, 7, 13, 18, 23):
        n = ed.density(rng.normal(size=(6, 6)), 0.0, n_el / 36, p)
        assert np.allclose(n, n_el / 36, atol=1e-12)


# ----------------------------------------------------------------- atomic limit t -> 0


@pytest.mark.parametrize("T", [0.05, 0.5])
def test_atomic_limit_matches_independent_chemical_potential(T, backend, rng):
    """For t -> 0 the levels are -g Q_i on single sites: n_i = f_FD(-g Q_i - mu)."""
    p = HolsteinParams(t=1e-9)
    Q = rng.normal(0.0, 1.0, (4, 4))
    f = 0.3
    levels = -p.g * Q
    mu = brentq(lambda m: expit((m - levels) / T).sum() - f * 16, -50, 50, xtol=1e-14)
    n = np.asarray(ed.density(Q, T, f, p, backend=backend))
    assert np.allclose(n, expit((mu - levels) / T), atol=1e-7)


def test_atomic_limit_at_T0_fills_the_deepest_sites(rng):
    p = HolsteinParams(t=1e-9)
    Q = rng.normal(0.0, 1.0, (6, 6))
    n = ed.density(Q, 0.0, 0.25, p)
    expected = np.zeros(36)
    expected[np.argsort(-Q.ravel())[:9]] = 1.0  # largest Q = lowest level -g Q
    assert np.allclose(n.ravel(), expected, atol=1e-7)


# ----------------------------------------------------------------------- symmetries


@pytest.mark.parametrize("T", [0.0, 0.1])
@pytest.mark.parametrize("shift", [(1, 0), (2, 3), (5, 5)])
def test_density_is_translation_covariant(shift, T, backend, params, rng, request):
    Q = rng.normal(0.0, 1.0, (6, 6))
    n = np.asarray(ed.density(Q, T, 0.4, params, backend=backend))
    n_shifted = np.asarray(ed.density(Lattice.translate(Q, *shift), T, 0.4, params,
                                      backend=backend))
    assert np.allclose(n_shifted, Lattice.translate(n, *shift), atol=1e-10)


@pytest.mark.parametrize("T", [0.0, 0.1])
@pytest.mark.parametrize("center", [(0, 0), (2, 5), (3, 1)])
def test_density_and_forces_are_d4_covariant(center, T, backend, params, rng, request):
    lat = Lattice(6)
    Q = rng.normal(0.0, 1.0, (6, 6))
    res = ed.solve(Q, T, 0.4, params, backend=backend)
    Qg = np.stack([lat.apply_d4(Q, op, center) for op in range(8)])
    res_g = ed.solve(Qg, T, 0.4, params, backend=backend)
    for op in range(8):
        assert np.allclose(res_g.n[op], lat.apply_d4(np.asarray(res.n), op, center), atol=1e-10)
        assert np.allclose(res_g.F[op], lat.apply_d4(np.asarray(res.F), op, center), atol=1e-10)
    # Not vacuous: the configuration itself is not D4 symmetric.
    assert not np.allclose(Qg[1], Q)


# --------------------------------------------------------------------- backends agree


@pytest.mark.parametrize("T", [0.0, 0.02, 0.3])
@pytest.mark.parametrize("f", [0.5, 0.3])
def test_numpy_and_torch_backends_agree(T, f, params, rng, request):
    Q = rng.normal(0.0, 1.0, (3, 6, 6))
    a = ed.solve(Q, T, f, params, backend="numpy")
    b = ed.solve(Q, T, f, params, backend="torch")
    for name in ("n", "F", "mu", "eps", "occ"):
        va, vb = getattr(a, name), getattr(b, name)
        assert isinstance(vb, np.ndarray), name
        assert va.shape == vb.shape, name
        assert np.allclose(va, vb, rtol=0, atol=1e-10), name


@pytest.mark.parametrize("T", [0.0, 0.1])
def test_torch_tensor_input_returns_torch_tensors(T, params, rng, request):
    Q = rng.normal(0.0, 1.0, (2, 4, 4))
    res = ed.solve(torch.from_numpy(Q), T, 0.4, params)
    ref = ed.solve(Q, T, 0.4, params)
    shapes = {"n": (2, 4, 4), "F": (2, 4, 4), "mu": (2,), "eps": (2, 16), "occ": (2, 16)}
    for name, shape in shapes.items():
        v = getattr(res, name)
        assert isinstance(v, torch.Tensor), name
        assert tuple(v.shape) == shape, name
        assert v.dtype == torch.float64, name
        assert v.device.type == "cpu", name
        assert np.allclose(v.numpy(), getattr(ref, name), atol=1e-10), name
    assert isinstance(ed.density(torch.from_numpy(Q), T, 0.4, params), torch.Tensor)
    assert isinstance(ed.forces(torch.from_numpy(Q), T, 0.4, params), torch.Tensor)


def test_float32_torch_input_is_accepted(params, rng):
    Q = rng.normal(0.0, 1.0, (4, 4))
    n32 = ed.density(torch.tensor(Q, dtype=torch.float32), 0.1, 0.5, params)
    assert isinstance(n32, torch.Tensor)
    assert np.allclose(n32.double().numpy(), ed.density(Q.astype(np.float32), 0.1, 0.5, params),
                       atol=1e-10)


@pytest.mark.requires_cuda
def test_cuda_tensor_input_stays_on_gpu_and_agrees(params, rng):
    Q = rng.normal(0.0, 1.0, (3, 6, 6))
    res = ed.solve(torch.tensor(Q, device="cuda"), 0.1, 0.4, params)
    assert res.n.device.type == "cuda"
    assert np.allclose(res.n.cpu().numpy(), ed.density(Q, 0.1, 0.4, params), atol=1e-10)


# ------------------------------------------------------------------------ batching


@pytest.mark.parametrize("T", [0.0, 0.1])
def test_batch_equals_loop_over_members(T, backend, params, rng, request):
    Q = rng.normal(0.0, 1.0, (2, 3, 4, 4))
    res = ed.solve(Q, T, 0.4, params, backend=backend)
    assert np.shape(res.n) == (2, 3, 4, 4) and np.shape(res.mu) == (2, 3)
    for a, b in itertools.product(range(2), range(3)):
        one = ed.solve(Q[a, b], T, 0.4, params, backend=backend)
        assert np.shape(one.n) == (4, 4) and np.shape(one.mu) == ()
        assert np.allclose(res.n[a, b], one.n, rtol=0, atol=1e-13)
        assert np.allclose(res.F[a, b], one.F, rtol=0, atol=1e-13)
        assert np.allclose(res.mu[a, b], one.mu, rtol=0, atol=1e-12)


#: Known core bug: the bisection for mu exits when *every* member of the batch has converged,
#: so members that converged early keep bisecting; mu, n and F of one configuration then
#: depend (at the ulp level) on which other configurations share the batch.


def test_batch_members_are_bit_identical_to_solo_solves(backend, params, rng):
    """Bit-identity is what makes ED-Langevin runs independent of how runs are batched."""
    Q = rng.normal(0.0, 1.5, (12, 4, 4))
    res = ed.solve(Q, 0.1, 0.5, params, backend=backend)
    for i in range(len(Q)):
        one = ed.solve(Q[i], 0.1, 0.5, params, backend=backend)
        assert np.array_equal(res.eps[i], one.eps)  # LAPACK itself is batch independent
        assert np.array_equal(res.mu[i], one.mu), i
        assert np.array_equal(res.n[i], one.n), i


# -------------------------------------------------------------------- T -> 0 continuity


@pytest.mark.parametrize(("L", "f", "kind"), [(6, 0.5, "cdw"), (6, 1 / 3, "random"),
                                              (4, 0.375, "random")])
def test_small_T_is_continuous_with_T0_when_gapped(L, f, kind, params, rng):
    Q = _cdw(L, rng) if kind == "cdw" else rng.normal(0.0, 1.0, (L, L))
    r0 = ed.solve(Q, 0.0, f, params)
    n_el = round(f * L * L)
    gap = r0.eps[n_el] - r0.eps[n_el - 1]
    assert gap > 0.1  # precondition, so that exp(-gap / 2T) is negligible at T = 1e-4
    r1 = ed.solve(Q, 1e-4, f, params)
    assert np.allclose(r1.n, r0.n, rtol=0, atol=1e-9)
    assert np.allclose(r1.F, r0.F, rtol=0, atol=1e-8)
    assert r0.eps[n_el - 1] < r1.mu < r0.eps[n_el]
    # Free energy is continuous too (A(T) - A(0) = O(T exp(-gap/2T))).
    assert abs(ed.free_energy(Q, 1e-4, f, params) - ed.free_energy(Q, 0.0, f, params)) < 1e-8


def test_equal_sharing_is_the_small_T_limit_of_a_degenerate_shell():
    """g = 0, L = 4, 3 electrons: the 4-fold shell at -2t holds 2, i.e. 1/2 per level."""
    p = HolsteinParams(g=0.0)
    Q = np.zeros((4, 4))
    r0 = ed.solve(Q, 0.0, 3 / 16, p)
    r1 = ed.solve(Q, 1e-4, 3 / 16, p)
    assert np.allclose(r1.occ, r0.occ, atol=1e-9)
    assert np.allclose(r1.n, r0.n, atol=1e-12)


# ------------------------------------------------------------------------ bad input

BAD_CONFIGURATIONS = {
    "nan": lambda rng: np.where(np.arange(36).reshape(6, 6) == 7, np.nan, rng.normal(size=(6, 6))),
    "inf": lambda rng: np.where(np.arange(36).reshape(6, 6) == 7, np.inf, rng.normal(size=(6, 6))),
    "-inf_in_batch": lambda rng: np.concatenate(
        [rng.normal(size=(1, 4, 4)), np.full((1, 4, 4), -np.inf)]),
    "not_square": lambda rng: rng.normal(size=(6, 8)),
    "odd_L": lambda rng: rng.normal(size=(5, 5)),
    "tiny_L": lambda rng: rng.normal(size=(2, 2)),
    "one_dimensional": lambda rng: rng.normal(size=(16,)),
    "scalar": lambda rng: np.float64(1.0),
    "complex": lambda rng: rng.normal(size=(4, 4)) + 1j,
}


@pytest.fixture
def no_diagonalisation(monkeypatch):
    """Make any diagonalisation fail loudly, so a ValueError must come from validation."""

    def boom(*args, **kwargs):
        raise AssertionError("eigh was called on invalid input")

    monkeypatch.setattr(ed._Numpy, "eigh", staticmethod(boom))
    monkeypatch.setattr(ed._Torch, "eigh", lambda self, H: boom())


@pytest.mark.parametrize("case", sorted(BAD_CONFIGURATIONS))
def test_invalid_configuration_raises_before_diagonalising(case, backend, params, rng,
                                                           no_diagonalisation):
    Q = BAD_CONFIGURATIONS[case](rng)
    for fn in (ed.density, ed.forces, ed.solve):
        with pytest.raises(ValueError):
            fn(Q, 0.1, 0.5, params, backend=backend)


@pytest.mark.parametrize("case", ["nan", "inf", "-inf_in_batch", "not_square", "odd_L", "tiny_L",
                                  "one_dimensional"])
def test_invalid_torch_tensor_raises_before_diagonalising(case, params, rng, no_diagonalisation):
    Q = torch.from_numpy(np.asarray(BAD_CONFIGURATIONS[case](rng)))
    with pytest.raises(ValueError):
        ed.solve(Q, 0.1, 0.5, params)


@pytest.mark.parametrize(("T", "f", "word"), [(-0.1, 0.5, "T"), (np.nan, 0.5, "T"),
                                              (0.1, 0.0, "f"), (0.1, 1.0, "f"),
                                              (0.1, np.inf, "f")])
def test_invalid_T_or_f_raises_naming_it(T, f, word, backend, params, rng, no_diagonalisation):
    with pytest.raises(ValueError, match=rf"\b{word}\b"):
        ed.density(rng.normal(size=(4, 4)), T, f, params, backend=backend)


def test_unknown_backend_raises(params, rng):
    with pytest.raises(ValueError, match="backend"):
        ed.density(rng.normal(size=(4, 4)), 0.1, 0.5, params, backend="jax")


def test_input_is_not_modified(params, rng):
    Q = rng.normal(size=(2, 4, 4))
    Q_copy = Q.copy()
    ed.solve(Q, 0.1, 0.5, params)
    ed.free_energy(Q, 0.1, 0.5, params)
    assert np.array_equal(Q, Q_copy)


# -------------------------------------------------------------------- elastic force


def _elastic_force_loop(Q, k, kappa):
    L = Q.shape[-1]
    out = np.zeros_like(Q)
    for x in range(L):
        for y in range(L):
            nn = (Q[..., (x + 1) % L, y] + Q[..., (x - 1) % L, y]
                  + Q[..., x, (y + 1) % L] + Q[..., x, (y - 1) % L])
            out[..., x, y] = -k * Q[..., x, y] - kappa * nn
    return out


@pytest.mark.parametrize("L", [4, 6, 10])
def test_elastic_force_matches_hand_written_loop(L, rng):
    p = HolsteinParams(k=1.7, kappa=-0.3)
    Q = rng.normal(size=(3, L, L))
    expected = _elastic_force_loop(Q, p.k, p.kappa)
    assert np.allclose(ed.elastic_force(Q, p), expected, atol=1e-14)
    got_t = ed.elastic_force(torch.from_numpy(Q), p)
    assert isinstance(got_t, torch.Tensor)
    assert np.allclose(got_t.numpy(), expected, atol=1e-14)


def test_total_force_decomposes_into_electronic_and_elastic(params, rng, backend):
    Q = rng.normal(size=(6, 6))
    res = ed.solve(Q, 0.2, 0.4, params, backend=backend)
    expected = params.g * (np.asarray(res.n) - 0.5) + _elastic_force_loop(Q, params.k,
                                                                           params.kappa)
    assert np.allclose(res.F, expected, atol=1e-12)
