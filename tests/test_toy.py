"""TDGL toy force field and model-A quench: exact gradients, ordered states, coarsening laws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from cdwdata import analysis as an
from cdwdata import schema
from cdwdata.errors import ParameterError
from cdwdata.forcefields import ForceField
from cdwdata.toy import TDGLForceField, tdgl_quench


def sign(L: int) -> np.ndarray:
    x, y = np.indices((L, L))
    return np.where((x + y) % 2 == 0, 1.0, -1.0)


@pytest.fixture
def ff() -> TDGLForceField:
    """Non-default coefficients so that a, b and c are all exercised."""
    return TDGLForceField(a=1.3, b=0.7, c=0.9, delta=0.4, f=0.45)


def test_is_a_forcefield(ff):
    assert isinstance(ff, ForceField)
    assert ff.name == "tdgl"
    assert ff.attrs()["forcefield"] == "tdgl" and ff.attrs()["f"] == 0.45
    with pytest.raises(ParameterError, match="c="):
        TDGLForceField(c=0.0)
    with pytest.raises(ParameterError):
        TDGLForceField(f=1.5)


def test_force_is_minus_finite_difference_gradient(ff, rng):
    Q = rng.standard_normal((6, 6))
    F = ff.forces(Q)
    h = 1e-5
    for site in [(0, 0), (2, 3), (5, 5), (1, 4)]:
        Qp, Qm = Q.copy(), Q.copy()
        Qp[site] += h
        Qm[site] -= h
        dV = (ff.potential(Qp) - ff.potential(Qm)) / (2 * h)
        assert np.isclose(F[site], -dV, rtol=1e-7, atol=1e-7)


def test_force_is_minus_autograd_gradient(ff, rng):
    Q = torch.tensor(rng.standard_normal((3, 8, 8)), requires_grad=True)
    ff.potential(Q).sum().backward()
    F, n = ff.evaluate(Q.detach())
    torch.testing.assert_close(F, -Q.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(n, 0.45 + 0.4 * Q.detach())


def test_numpy_and_torch_paths_agree(ff, rng):
    Q = rng.standard_normal((2, 3, 8, 8))
    np.testing.assert_allclose(ff.force_numpy(Q), ff.forces(Q), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ff.density(Q), 0.45 + 0.4 * Q)
    q32 = torch.tensor(Q, dtype=torch.float32)
    F32, n32 = ff.evaluate(q32)
    assert F32.dtype == n32.dtype == torch.float32 and F32.shape == q32.shape
    np.testing.assert_allclose(F32.numpy(), ff.forces(Q), rtol=1e-4, atol=1e-4)


def test_checkerboards_are_the_ordered_states():
    ff = TDGLForceField()  # a = b = 1, delta = 1/2, f = 1/2
    for s0 in (1.0, -1.0):
        Q = s0 * sign(8)
        np.testing.assert_allclose(ff.forces(Q), 0.0, atol=1e-14)
        n = xr.DataArray(ff.density(Q), dims=(schema.X, schema.Y))
        np.testing.assert_allclose(n.values, 0.5 + 0.5 * s0 * sign(8))  # n in {0, 1}
        np.testing.assert_allclose(an.order_parameter(n).values, s0)  # phi = 2 delta s0
        S = an.structure_factor(n, f=0.5)
        assert np.isclose(float(S.sel({schema.KX: np.pi, schema.KY: np.pi})), 0.25)
        assert np.isclose(float(S.sum()), 0.25)
    # the uniform state is a maximum of the double well: it is unstable
    assert np.all(ff.forces(np.full((4, 4), 1e-3) * sign(4)) * sign(4) > 0)


def test_quench_dataset_layout_and_reproducibility():
    ds = tdgl_quench(8, 20, dt=0.1, seed=3, runs=2, save_steps=[0, 5, 20])
    assert dict(ds.sizes) == {schema.RUN: 2, schema.STEP: 3, schema.X: 8, schema.Y: 8}
    assert ds[schema.N].dims == (schema.RUN, schema.STEP, schema.X, schema.Y)
    np.testing.assert_array_equal(ds[schema.STEP].values, [0, 5, 20])
    np.testing.assert_allclose(ds[schema.TIME].values, [0.0, 0.5, 2.0])
    assert ds[schema.N].attrs == schema.attrs(schema.N)
    assert float(ds[schema.F_FILL]) == 0.5
    assert ds.attrs["forcefield"] == "tdgl" and ds.attrs["seed"] == 3
    xr.testing.assert_identical(ds, tdgl_quench(8, 20, dt=0.1, seed=3, runs=2,
                                                save_steps=[0, 5, 20]))
    other = tdgl_quench(8, 20, dt=0.1, seed=4, runs=2, save_steps=[0, 5, 20])
    assert not np.allclose(other[schema.Q].values, ds[schema.Q].values)
    # the analysis reads the filling from the dataset
    assert an.structure_factor(ds[schema.N]).dims[-2:] == (schema.KX, schema.KY)


def test_quench_step_is_explicit_euler_with_the_forcefield(ff):
    ds = tdgl_quench(8, 3, dt=0.05, seed=0, runs=2, save_steps=[0, 1, 2, 3], forcefield=ff,
                     init_amp=0.5)
    Q = ds[schema.Q].values
    for k in range(3):
        np.testing.assert_allclose(Q[:, k + 1], Q[:, k] + 0.05 * ff.forces(Q[:, k]),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds[schema.N].values, ff.f + ff.delta * Q)


def test_quench_noise_has_the_right_strength():
    # with a = b -> tiny, c -> tiny the field diffuses freely: var grows by 2 T dt per step
    flat = TDGLForceField(a=1e-12, b=1e-12, c=1e-12)
    ds = tdgl_quench(32, 50, dt=0.01, seed=0, runs=4, noise=0.5, init_amp=0.0,
                     save_steps=[50], forcefield=flat)
    var = float(ds[schema.Q].var())
    assert np.isclose(var, 2 * 0.5 * 0.01 * 50, rtol=0.08)  # 4096 samples: 2.2% error


@pytest.mark.parametrize("kwargs", [{"L": 7}, {"steps": -1}, {"dt": 0.0}, {"noise": -1.0},
                                    {"runs": 0}, {"save_steps": [0, 99]}])
def test_quench_rejects_bad_input(kwargs):
    args = {"L": 8, "steps": 10, **kwargs}
    with pytest.raises(ParameterError):
        tdgl_quench(**args)


# --- coarsening: Allen-Cahn growth and Porod tail ------------------------------------------------
#: 64 x 64, 16 runs, t <= 100 (1000 Euler steps, dt = 0.1); small noise depins the ~1.4 site
#: wide walls from the lattice. Measured (seeds 0-3): alpha from the wall density 0.41-0.47,
#: alpha from eq. 15 0.30-0.34; Porod slope over qL in [1.5, 5] at t = 100: -3.0 +- 0.05
#: for the sign-hardened field, -3.3 .. -3.65 for the smooth density.
COARSEN = {"L": 64, "steps": 1000, "dt": 0.1, "seed": 1, "runs": 16, "noise": 0.02,
           "n_frames": 25}


@pytest.fixture(scope="module")
def coarsening():
    ds = tdgl_quench(**COARSEN)
    phi = an.order_parameter(ds[schema.N])
    S = an.structure_factor(ds[schema.N])
    return ds, phi, S


@pytest.mark.slow
def test_model_a_coarsening_follows_allen_cahn(coarsening):
    ds, phi, S = coarsening
    window = (10.0, 100.0)
    # wall density: L_w = 1 / rho has no logarithmic correction
    walls = an.growth_exponent(1.0 / an.interface_density(phi), window, mean="harmonic",
                               n_boot=200, seed=0)
    alpha_w, err_w = float(walls[an.ALPHA]), float(walls[an.ALPHA_ERR])
    # eq. 15: the q**-3 tail makes sum_k S |k - Q| ~ log(L) / L, so L_15 ~ L / log L and the
    # effective exponent is lower on these scales (it creeps up with L: 0.35 at L_15 ~ 11
    # on 128 x 128); harmonic mean because single runs can order completely (L_15 = inf)
    eq15 = an.growth_exponent(an.domain_size(S), window, mean="harmonic", n_boot=200, seed=0)
    alpha_15 = float(eq15[an.ALPHA])
    # Allen-Cahn 1/2, approached from below on a 64 x 64 lattice
    assert 0.38 <= alpha_w <= 0.6, (alpha_w, err_w)
    assert 0.0 < err_w < 0.1
    assert 0.22 <= alpha_15 <= 0.45, alpha_15
    assert alpha_15 < alpha_w


@pytest.mark.slow
def test_model_a_structure_factor_has_porod_tail_and_scales(coarsening):
    ds, phi, S = coarsening
    late = S.isel({schema.STEP: -1}).mean(schema.RUN)
    Lt = float(an.domain_size(late))
    soft = an.porod_slope(an.radial_structure_factor(late), (1.5 / Lt, 5.0 / Lt))
    # sharp walls: harden the field to +-1 checkerboards (n in {0, 1})
    hard_n = 0.5 + 0.5 * np.sign(phi) * xr.DataArray(sign(64), dims=(schema.X, schema.Y))
    hard_S = an.structure_factor(hard_n.isel({schema.STEP: -1}), f=0.5).mean(schema.RUN)
    Lh = float(an.domain_size(hard_S))
    hard = an.porod_slope(an.radial_structure_factor(hard_S), (1.5 / Lh, 5.0 / Lh))
    assert abs(float(hard[an.SLOPE]) + 3.0) < 0.35, hard
    # the smooth tanh-like walls (width ~ 1.4 sites) steepen the tail at these qL
    assert -4.2 < float(soft[an.SLOPE]) < -2.8, soft

    # dynamical scaling: S / L^2 vs qL collapses at late times, and not without rescaling
    late_steps = ds[schema.TIME].values >= 20
    Sq = an.radial_structure_factor(S.isel({schema.STEP: late_steps})).mean(schema.RUN)
    L = an.domain_size(S.isel({schema.STEP: late_steps}).mean(schema.RUN))
    good = float(an.collapse_quality(*an.scaling_collapse(Sq, L), x_range=(0.5, 4.0)))
    frozen = xr.full_like(L, float(L.isel({schema.STEP: 0})))
    bad = float(an.collapse_quality(*an.scaling_collapse(Sq, frozen), x_range=(0.5, 4.0)))
    assert good < 0.3 * bad, (good, bad)  # measured: ~0.008 vs ~0.08


@pytest.mark.slow
def test_model_a_correlation_envelopes(coarsening):
    ds, _, _ = coarsening
    C = an.correlation_function(ds[schema.Q].isel({schema.STEP: -1})).mean(schema.RUN)
    upper, lower = an.correlation_envelopes(C)
    near = {schema.R: slice(0, 4)}
    assert (upper.sel(near) > 0).all() and (lower.sel(near) < 0).all()
    # same-sublattice and opposite-sublattice curves are two sides of one envelope
    g_up = np.interp(lower[schema.R].values[:6], upper[schema.R].values, upper.values)
    np.testing.assert_allclose(-lower.values[:6], g_up, rtol=0.25)
