"""Fit windows chosen from the data: the Porod windows of S(q) and the window sensitivity of
alpha. Synthetic curves with known power laws; the rules must recover any exponent, not only
the paper's -3 and -2."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cdwdata import analysis as an
from cdwdata import schema
from cdwdata.errors import ParameterError

Q_FINE = np.linspace(0.0, np.pi * np.sqrt(2), 1200)


def broken_power_law(q, q0, inner=-3.0, outer=-2.0, q_x=1.0):
    """Flat core (S = 1, q <= q0), then q**inner up to q_x, then q**outer (continuous)."""
    s = np.ones_like(q)
    mid = (q > q0) & (q <= q_x)
    s[mid] = (q[mid] / q0) ** inner
    far = q > q_x
    s[far] = (q_x / q0) ** inner * (q[far] / q_x) ** outer
    return s


def curves(q0s, q=Q_FINE, **kw):
    data = np.stack([broken_power_law(q, q0, **kw) for q0 in q0s])
    t = np.arange(1, len(q0s) + 1) * 10.0
    return xr.DataArray(data, dims=(schema.STEP, schema.QR),
                        coords={schema.QR: q, schema.STEP: np.arange(len(q0s)),
                                schema.TIME: (schema.STEP, t)}, name=schema.S)


def sign(L):
    x, y = np.indices((L, L))
    return np.where((x + y) % 2 == 0, 1.0, -1.0)


@pytest.mark.parametrize("w", [4, 8])
def test_porod_window_starts_at_the_wavenumber_of_the_wall_spacing(w):
    # stripes of width w: rho = 1 / 2w exactly, and the window starts at the fundamental pi/w
    L = 16
    m = np.where((np.arange(L) // w) % 2 == 0, 1.0, -1.0)[:, None] * np.ones((1, L))
    n = xr.DataArray(0.5 + 0.5 * sign(L) * m, dims=(schema.X, schema.Y))
    rho = an.interface_density(an.order_parameter(n))
    assert float(rho) == pytest.approx(1 / (2 * w))
    win = an.porod_window(rho)
    assert float(win[an.Q_WALL]) == pytest.approx(np.pi / w)
    assert float(win[an.Q_MIN]) == pytest.approx(an.POROD_START * np.pi / w)
    assert float(win[an.Q_MAX]) == pytest.approx(min(an.POROD_SPAN * float(win[an.Q_MIN]),
                                                     an.LARGE_Q[0]))
    assert "rho" in win.attrs["rule"]


def random_disks(L, count, radii, rng):
    """Checkerboard order with the phase flipped inside random disks: sharp walls."""
    x, y = np.indices((L, L))
    m = np.ones((L, L))
    for _ in range(count):
        cx, cy = rng.uniform(0, L, 2)
        r = rng.uniform(*radii)
        dx = (x - cx + L / 2) % L - L / 2
        dy = (y - cy + L / 2) % L - L / 2
        m[dx * dx + dy * dy < r * r] *= -1
    return 0.5 + 0.5 * m * sign(L)


def test_window_from_the_walls_finds_porods_law_of_sharp_walls():
    # polydisperse sharp-walled domains obey Porod's law S ~ q^-3 between the domain and
    # the lattice scales; the window chosen from the measured wall density finds it
    rng = np.random.default_rng(0)
    n = xr.DataArray(np.stack([random_disks(128, 15, (6, 14), rng) for _ in range(8)]),
                     dims=(schema.RUN, schema.X, schema.Y))
    Sq = an.radial_structure_factor(an.structure_factor(n, f=0.5)).mean(schema.RUN)
    rho = an.interface_density(an.order_parameter(n)).mean(schema.RUN)
    win = an.porod_window(rho)
    fit = an.pooled_slope(Sq, win[an.Q_MIN], win[an.Q_MAX])
    assert int(fit[an.N_POINTS]) >= 5
    assert float(fit[an.SLOPE]) == pytest.approx(-3.0, abs=0.2)


@pytest.mark.parametrize(("inner", "outer"), [(-3.0, -2.0), (-2.5, -1.5), (-4.0, -2.7)])
def test_windows_recover_any_exponent(inner, outer):
    # domains grow: the core shrinks in q and the walls thin out; the windows follow the
    # walls and the fits find the true slopes, whatever they are
    q0 = np.array([0.02, 0.015, 0.012, 0.01])
    Sq = curves(q0, inner=inner, outer=outer, q_x=1.0)
    rho = xr.DataArray(q0 / np.pi, dims=schema.STEP)  # walls 2 core widths apart
    win = an.porod_window(rho)
    np.testing.assert_allclose(win[an.Q_MIN].values, 2 * q0 * an.POROD_START)
    each = an.pooled_slope(Sq, win[an.Q_MIN], win[an.Q_MAX])
    np.testing.assert_allclose(each[an.SLOPE].values, inner, atol=1e-9)
    assert each[an.SLOPE].dims == (schema.STEP,) and (each[an.N_POINTS] >= 3).all()
    late = an.pooled_slope(Sq, win[an.Q_MIN], win[an.Q_MAX], dim=schema.STEP)
    assert float(late[an.SLOPE]) == pytest.approx(inner, abs=1e-9)
    assert float(late[an.SLOPE_ERR]) < 1e-8
    large = an.pooled_slope(Sq, *an.LARGE_Q, dim=schema.STEP)
    assert float(large[an.SLOPE]) == pytest.approx(outer, abs=1e-9)


def test_pooled_slope_error_covers_noise():
    rng = np.random.default_rng(5)
    q0 = np.array([0.02, 0.015, 0.012, 0.01])
    Sq = curves(q0)
    noisy = Sq * np.exp(0.05 * rng.standard_normal(Sq.shape))
    win = an.porod_window(xr.DataArray(q0 / np.pi, dims=schema.STEP))
    late = an.pooled_slope(noisy, win[an.Q_MIN], win[an.Q_MAX], dim=schema.STEP)
    err = float(late[an.SLOPE_ERR])
    assert 0 < err < 0.1
    assert abs(float(late[an.SLOPE]) + 3.0) < 4 * err


def test_porod_window_stops_at_the_large_q_window():
    rho = xr.DataArray([0.04, 0.1, 0.3, 0.0], dims=schema.STEP)
    win = an.porod_window(rho)
    q_min, q_max = win[an.Q_MIN].values, win[an.Q_MAX].values
    np.testing.assert_allclose(q_min[:2], 2 * np.pi * rho.values[:2] * an.POROD_START)
    assert q_max[0] == pytest.approx(an.POROD_SPAN * q_min[0])  # 0.25 .. 0.75
    assert q_max[1] == pytest.approx(an.LARGE_Q[0])  # capped: 0.63 .. pi/2
    # walls closer than 4 lattice spacings, or none at all: no window, NaN slope, no error
    assert np.isnan(q_min[2:]).all() and np.isnan(q_max[2:]).all()
    Sq = curves([0.02] * 4)
    fit = an.pooled_slope(Sq, win[an.Q_MIN], win[an.Q_MAX])
    assert np.isnan(fit[an.SLOPE].values[2:]).all() and (fit[an.N_POINTS].values[2:] == 0).all()
    with pytest.raises(ParameterError, match="span"):
        an.porod_window(rho, span=1.0)


def test_pooled_slope_leaves_out_curves_with_too_few_shells():
    q = np.arange(0, 40) * 2 * np.pi / 80  # an L = 80 shell grid
    Sq = xr.DataArray(np.stack([np.where(q > 0, q, 1.0) ** -3.0] * 2), dims=("step", "q"),
                      coords={"q": q})
    lo = xr.DataArray([0.2, 0.2], dims="step")
    hi = xr.DataArray([1.0, 0.25], dims="step")  # the second window holds 1 shell
    fit = an.pooled_slope(Sq, lo, hi, dim="step")
    assert float(fit[an.SLOPE]) == pytest.approx(-3.0)
    assert int(fit[an.N_POINTS]) == int(((q >= 0.2) & (q <= 1.0)).sum())


def growth(rng, law, runs=16, noise=0.02, t=None):
    t = np.linspace(0, 1000, 201) if t is None else np.asarray(t, dtype=float)
    tt = np.where(t > 0, t, 1.0)
    data = law(tt)[None, None, :] * (1 + noise * rng.standard_normal((1, runs, t.size)))
    return xr.DataArray(data, dims=(schema.T, schema.RUN, schema.STEP),
                        coords={schema.T: [0.1], schema.STEP: np.arange(t.size) * 100,
                                schema.TIME: (schema.STEP, t)}, name=schema.LDOM)


def test_alternative_windows_scale_with_the_run():
    t = np.linspace(0, 1000, 201)
    assert an.alternative_windows(t) == [(50.0, 500.0), (200.0, 1000.0)]
    assert an.growth_window(t) == (100.0, 1000.0)
    assert an.alternative_windows([0, 10, 30]) == [(1.5, 15.0), (6.0, 30.0)]


def test_window_error_is_small_for_a_power_law_and_large_for_a_crossover():
    rng = np.random.default_rng(11)
    t = np.linspace(0, 1000, 201)
    pure = growth(rng, lambda t: 1.3 * t**0.15)
    fit = an.growth_exponent(pure, an.growth_window(t), n_boot=100)
    sens = an.window_sensitivity(pure, fit[an.ALPHA], an.alternative_windows(t))
    assert sens[an.ALPHA_ALT].dims == (schema.T, an.ALT_WINDOW)
    np.testing.assert_allclose(sens[an.ALT_T_MIN].values, [50.0, 200.0])
    np.testing.assert_allclose(sens[an.ALPHA_ALT].values, 0.15, atol=0.01)
    assert float(sens[an.ALPHA_WINDOW_ERR].squeeze()) < 0.01
    # L ~ t^0.5 up to t = 150, then t^0.1: the windows disagree by far more than the noise
    def cross(t):
        return np.where(t < 150, t**0.5, 150**0.5 * (t / 150) ** 0.1)
    bent = growth(rng, cross)
    fit = an.growth_exponent(bent, an.growth_window(t), n_boot=100)
    sens = an.window_sensitivity(bent, fit[an.ALPHA], an.alternative_windows(t))
    err = float(sens[an.ALPHA_WINDOW_ERR].squeeze())
    assert err > 0.05 > 5 * float(fit[an.ALPHA_ERR].squeeze())
    alt = sens[an.ALPHA_ALT].squeeze().values
    assert err == pytest.approx(np.max(np.abs(alt - float(fit[an.ALPHA].squeeze()))))


def test_window_error_of_a_short_run_is_nan_where_a_window_is_too_short():
    rng = np.random.default_rng(2)
    t = [0.0, 10.0, 20.0, 30.0, 40.0]  # t_end/20..t_end/2 = 2..20 holds 2 times
    L = growth(rng, lambda t: t**0.3, t=t)
    fit = an.growth_exponent(L, an.growth_window(t), n_boot=0)
    sens = an.window_sensitivity(L, fit[an.ALPHA], an.alternative_windows(t))
    alt = sens[an.ALPHA_ALT].squeeze().values
    assert np.isnan(alt[0]) and np.isfinite(alt[1])
    assert float(sens[an.ALPHA_WINDOW_ERR].squeeze()) == pytest.approx(
        abs(alt[1] - float(fit[an.ALPHA].squeeze())))
    tiny = growth(rng, lambda t: t**0.3, t=[0.0, 10.0, 20.0])
    nan_alpha = xr.DataArray([np.nan], dims=schema.T, coords={schema.T: [0.1]})
    sens = an.window_sensitivity(tiny, nan_alpha, an.alternative_windows([0.0, 10.0, 20.0]))
    assert np.isnan(sens[an.ALPHA_ALT]).all() and np.isnan(sens[an.ALPHA_WINDOW_ERR]).all()


@pytest.mark.parametrize("inner", [-3.0, -2.5])
def test_windows_on_a_lattice_momentum_grid(inner):
    # S(k) = G(|k - Q|) on the 64 x 64 grid, radially averaged in shells of width 2 pi / L:
    # the chosen windows hold enough shells and the slopes come out close to the truth
    L = 64
    k = 2 * np.pi * np.arange(L) / L
    kx, ky = np.meshgrid(k, k, indexing="ij")
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    qabs = np.hypot(wrap(kx - np.pi), wrap(ky - np.pi))
    S = xr.DataArray(broken_power_law(qabs.ravel(), 0.08, inner=inner, outer=-2.0,
                                      q_x=1.4).reshape(L, L),
                     dims=(schema.KX, schema.KY), coords={schema.KX: k, schema.KY: k})
    Sq = an.radial_structure_factor(S)
    win = an.porod_window(xr.DataArray(4 * 0.08 / (2 * np.pi)))  # q_wall = 4 q0
    fit = an.pooled_slope(Sq, win[an.Q_MIN], win[an.Q_MAX])
    assert int(fit[an.N_POINTS]) >= 5
    assert float(win[an.Q_MAX]) <= an.LARGE_Q[0]
    assert float(fit[an.SLOPE]) == pytest.approx(inner, abs=0.05)
    large = an.pooled_slope(Sq, *an.LARGE_Q)
    assert int(large[an.N_POINTS]) >= 10
    assert float(large[an.SLOPE]) == pytest.approx(-2.0, abs=0.05)
