"""KPM densities at a fixed chemical potential (cdwdata.kpm) against exact diagonalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cdwdata import ed, kpm
from cdwdata.errors import InputError, ParameterError
from cdwdata.params import HolsteinParams, Lattice


def _config(L: int, seed: int, sigma: float = 1.5, cdw: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return sigma * rng.standard_normal((L, L)) + cdw * Lattice(L).sign


@pytest.mark.parametrize("T", [0.1, 0.3])
@pytest.mark.parametrize("mu", [-4.0, -0.5, 1.0])
def test_matches_ed_at_default_tolerance(mu, T):
    Q = _config(12, 1)
    n, info = kpm.density(Q, mu, T, return_info=True)
    exact = ed.density_at(Q, mu, T)
    assert np.abs(n - exact).max() <= 1e-3
    assert info.expansion_error <= 1e-4
    assert n.shape == Q.shape and n.dtype == np.float64


def test_tighter_tolerance_is_met():
    Q = _config(12, 2, cdw=1.0)
    for tol in (1e-5, 1e-8):
        n = kpm.density(Q, 0.3, 0.2, tol=tol)
        assert np.abs(n - ed.density_at(Q, 0.3, 0.2)).max() <= tol


def test_other_parameters_and_float32_products():
    p = HolsteinParams(t=0.7, g=2.0)
    Q = _config(8, 3)
    exact = ed.density_at(Q, 0.2, 0.15, p)
    assert np.abs(kpm.density(Q, 0.2, 0.15, p, tol=1e-6) - exact).max() <= 1e-6
    n32 = kpm.density(Q.astype(np.float32), 0.2, 0.15, p, dtype="float32")
    assert np.abs(n32 - exact).max() <= 1e-3


def test_batch_shapes_and_per_configuration_mu_and_T():
    Q = np.stack([[_config(8, s + 3 * r) for s in range(3)] for r in range(2)])  # (2, 3, 8, 8)
    mu = np.array([[-1.0, 0.0, 1.0], [0.5, -0.5, 2.0]])
    T = np.array([0.1, 0.2, 0.3])  # broadcasts over the last batch axis
    n = kpm.density(Q, mu, T, tol=1e-6)
    assert n.shape == Q.shape
    for r in range(2):
        for s in range(3):
            one = ed.density_at(Q[r, s], mu[r, s], T[s])
            assert np.abs(n[r, s] - one).max() <= 1e-6
    with pytest.raises(InputError, match="batch shape"):
        kpm.density(Q, np.zeros(4), 0.1)


def test_probing_search_on_a_lattice_larger_than_the_colour_distance():
    """L = 24: the first distances colour far fewer than N sites; a weakly disordered metal
    (the slowest decay) must still meet the tolerance, and a fixed short distance must not."""
    Q = _config(24, 4, sigma=0.4)
    exact = ed.density_at(Q, -0.3, 0.3)
    n, info = kpm.density(Q, -0.3, 0.3, tol=1e-4, return_info=True)
    assert info.n_colours < Q.size or len(info.distances) > 1
    assert info.distances[0] < 12
    assert np.abs(n - exact).max() <= 1e-4
    n4, info4 = kpm.density(Q, -0.3, 0.3, tol=1e-4, distance=4, return_info=True)
    assert info4.n_colours == 16 and np.isnan(info4.probing_estimate)
    assert np.abs(n4 - exact).max() > 1e-4  # shows the search is needed


def test_particle_number_sum_rule_at_the_ed_chemical_potential():
    Q = _config(12, 5, cdw=1.5)
    for f, T in ((0.5, 0.1), (0.3, 0.25)):
        res = ed.solve(Q, T, f)
        n = kpm.density(Q, res.mu, T, tol=1e-7)
        assert abs(n.sum() - f * Q.size) <= 1e-7 * Q.size
        np.testing.assert_allclose(n, res.n, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 6), elements=st.floats(-20, 20)),
       st.floats(0.1, 3.0), st.floats(0.0, 5.0))
def test_gershgorin_bounds_contain_the_spectrum(Q, t, g):
    p = HolsteinParams(t=t, g=g)
    lo, hi = kpm.gershgorin_bounds(Q, p)
    H = Lattice(6).hopping_matrix(t)
    H[np.diag_indices(36)] = -g * Q.ravel()
    eps = np.linalg.eigvalsh(H)
    tol = 1e-9 * (1 + np.abs(eps).max())
    assert lo - tol <= eps[0] and eps[-1] <= hi + tol


@pytest.mark.parametrize("L,d", [(8, 2), (12, 5), (16, 4), (20, 6), (30, 7), (16, 9)])
def test_colouring_keeps_same_colour_sites_apart(L, d):
    colours, n = kpm.colouring(L, d)
    assert colours.shape == (L, L) and len(np.unique(colours)) == n
    x, y = np.indices((L, L))
    for c in range(n):
        xs, ys = x[colours == c], y[colours == c]
        dx = np.abs(xs[:, None] - xs[None])
        dy = np.abs(ys[:, None] - ys[None])
        sep = np.maximum(np.minimum(dx, L - dx), np.minimum(dy, L - dy))
        off = ~np.eye(len(xs), dtype=bool)
        assert (sep[off] >= d).all()
    if d > L // 2:
        assert n == L * L  # every site its own colour: exact diagonal


def test_next_distance_changes_the_colouring_and_ends_exact():
    L, d, seen = 40, 8, []
    while kpm.colouring(L, d)[1] < L * L:
        seen.append(kpm.colouring(L, d)[1])
        d = kpm.next_distance(L, d)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("T,mu", [(0.05, 0.0), (0.1, 3.0), (0.3, -5.0)])
def test_order_selection_meets_its_tolerance(T, mu):
    from numpy.polynomial import chebyshev as C
    from scipy.special import expit

    a, b = np.array([12.0]), np.array([-1.0])
    for tol in (1e-3, 1e-6):
        c, bound = kpm.chebyshev_coefficients(a, b, np.array([mu]), np.array([T]), tol)
        x = np.cos(np.linspace(0, np.pi, 20001))
        err = np.abs(C.chebval(x, c[0]) - expit(-(a[0] * x + b[0] - mu) / T)).max()
        assert bound <= tol and err <= bound + 1e-13
        shorter = C.chebval(x, c[0, : c.shape[1] * 3 // 4])
        assert np.abs(shorter - expit(-(a[0] * x + b[0] - mu) / T)).max() > tol / 100


def test_order_grows_with_width_over_temperature():
    Q = _config(8, 6)
    assert kpm.expansion_order(Q, 0.0, 0.05) > 1.5 * kpm.expansion_order(Q, 0.0, 0.1)
    assert kpm.expansion_order(2 * Q, 0.0, 0.1) > 1.5 * kpm.expansion_order(Q, 0.0, 0.1)


def test_torch_backend_on_cpu_matches_scipy():
    torch = pytest.importorskip("torch")
    Q = np.stack([_config(8, 7), _config(8, 8)])
    ref = kpm.density(Q, [0.0, 1.0], 0.2, tol=1e-6)
    n = kpm.density(Q, [0.0, 1.0], 0.2, tol=1e-6, backend="torch", device="cpu")
    np.testing.assert_allclose(n, ref, atol=1e-10)
    nt = kpm.density(torch.as_tensor(Q), torch.tensor([0.0, 1.0]), 0.2, tol=1e-6)
    assert isinstance(nt, torch.Tensor) and nt.dtype == torch.float64
    np.testing.assert_allclose(nt.numpy(), ref, atol=1e-10)


@pytest.mark.requires_cuda
def test_cuda_matches_cpu():
    import torch

    Q = _config(16, 9)
    ref = kpm.density(Q, 0.5, 0.1, tol=1e-6)
    n = kpm.density(torch.as_tensor(Q, device="cuda"), 0.5, 0.1, tol=1e-6)
    assert n.device.type == "cuda"
    np.testing.assert_allclose(n.cpu().numpy(), ref, atol=1e-9)


@pytest.mark.parametrize("bad", [
    dict(T=0.0), dict(T=-0.1), dict(mu=np.nan), dict(tol=0.0), dict(backend="jax"),
    dict(dtype="float16"), dict(distance=0)])
def test_invalid_arguments_raise(bad):
    args = dict(mu=0.0, T=0.1) | bad
    Q = _config(8, 10)
    with pytest.raises((ParameterError, InputError)):
        kpm.density(Q, **args)


def test_invalid_configurations_raise():
    with pytest.raises(InputError):
        kpm.density(np.zeros((7, 7)), 0.0, 0.1)
    Q = np.zeros((8, 8))
    Q[2, 3] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        kpm.density(Q, 0.0, 0.1)
