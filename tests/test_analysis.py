"""Physics tests of cdwdata.analysis: sum rules, exact limits, brute-force cross-checks, laziness."""

from __future__ import annotations

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cdwdata import analysis as an
from cdwdata import schema
from cdwdata.errors import InputError

X, Y = schema.X, schema.Y
BACKENDS = ("numpy", "dask")


# --- helpers -----------------------------------------------------------------------------------
def sign(L: int) -> np.ndarray:
    x, y = np.indices((L, L))
    return np.where((x + y) % 2 == 0, 1.0, -1.0)


def field(values: np.ndarray, lead: tuple[str, ...] = (), **coords) -> xr.DataArray:
    """DataArray with dims (*lead, x, y) and integer lattice coordinates."""
    L = values.shape[-1]
    c = {X: np.arange(L), Y: np.arange(L), **coords}
    return xr.DataArray(values, dims=(*lead, X, Y), coords=c, name=schema.N)


def as_backend(da: xr.DataArray, backend: str) -> xr.DataArray:
    """numpy-backed, or dask-backed data (chunked along every dim) with numpy coordinates."""
    if backend == "numpy":
        return da
    chunks = tuple(max(1, s // 2) for s in da.shape)
    return da.copy(data=dsa.from_array(da.values, chunks=chunks))


class _CountingScheduler:
    """dask scheduler that counts how often something is computed."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, dsk, keys, **kwargs):
        self.n += 1
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Array backend of the analysis input: ``"numpy"`` or ``"dask"`` (STYLE principle 8)."""
    return request.param


def stripes(L: int, w: int, amp: float = 0.5, f: float = 0.5) -> np.ndarray:
    """Checkerboard domains of alternating sign in stripes of width w along x."""
    m = np.where((np.arange(L) // w) % 2 == 0, 1.0, -1.0)[:, None] * np.ones((1, L))
    return f + amp * sign(L) * m


def stripe_inverse_length(w: int) -> float:
    """Exact 1/L of eq. 15 for stripes of width w (2w dividing L), independent of any FFT.

    The square wave m(x) of period 2w has Fourier weights |c_j|**2 = 1/(w sin(pi j/2w))**2
    at p = pi j / w for odd j in [-w, w) (they sum to 1 by Parseval); multiplying by the
    checkerboard moves them to k = Q + p, so |k - Q| = pi |j| / w.
    """
    j = np.arange(-w, w)
    j = j[j % 2 != 0]
    weight = 1.0 / (w * np.sin(np.pi * j / (2 * w))) ** 2
    assert np.isclose(weight.sum(), 1.0)
    return float((weight * np.pi * np.abs(j) / w).sum())


# --- order parameter -------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [0.3, 1.0])
def test_phi_of_checkerboard_is_delta(backend, delta):
    # eq. 11: n = (1 + delta (-1)^(x+y)) / 2 ->  phi = (delta/2) s - (-delta/2) s ... = delta
    n = field(0.5 * (1 + delta * sign(8)))
    phi = an.order_parameter(as_backend(n, backend)).compute()
    np.testing.assert_allclose(phi.values, delta, atol=1e-14)
    shifted = an.order_parameter(n.roll({X: 1})).values
    np.testing.assert_allclose(shifted, -delta, atol=1e-14)
    assert phi.attrs == schema.attrs(schema.PHI)
    assert phi.name == schema.PHI


def test_phi_flips_sign_under_one_site_translation(rng):
    n = field(rng.uniform(0, 1, (3, 6, 6)), lead=(schema.RUN,))
    phi = an.order_parameter(n)
    for shift in ({X: 1}, {Y: 1}, {X: 3}):
        moved = an.order_parameter(n.roll(shift))
        np.testing.assert_allclose(moved.values, -phi.roll(shift).values, atol=1e-14)
    np.testing.assert_allclose(an.order_parameter(n.roll({X: 1, Y: 1})).values,
                               phi.roll({X: 1, Y: 1}).values, atol=1e-14)


def test_phi_keeps_leading_dims_in_any_order(rng):
    v = rng.uniform(0, 1, (2, 3, 4, 4))
    n = xr.DataArray(v, dims=(schema.STEP, X, schema.RUN, Y))
    phi = an.order_parameter(n)
    assert set(phi.dims) == set(n.dims) and phi.dims[-2:] == (X, Y)
    direct = an.order_parameter(n.transpose(schema.RUN, schema.STEP, X, Y))
    xr.testing.assert_allclose(phi.transpose(*direct.dims), direct)


def test_missing_lattice_dims_raise():
    with pytest.raises(InputError, match="x"):
        an.order_parameter(xr.DataArray(np.zeros((4, 4)), dims=("a", "b")))


# --- structure factor ------------------------------------------------------------------------------
def test_structure_factor_matches_direct_definition(rng):
    L = 6
    n = rng.uniform(0, 1, (L, L))
    f = 0.37
    S = an.structure_factor(field(n), f=f)
    x, y = np.indices((L, L))
    for m1, m2 in [(0, 0), (1, 2), (3, 3), (5, 1)]:
        kx, ky = 2 * np.pi * m1 / L, 2 * np.pi * m2 / L
        amp = ((n - f) * np.exp(1j * (kx * x + ky * y))).sum() / L**2
        assert np.isclose(float(S.isel({schema.KX: m1, schema.KY: m2})), abs(amp) ** 2)
    np.testing.assert_allclose(S[schema.KX].values, 2 * np.pi * np.arange(L) / L)
    np.testing.assert_allclose(S[schema.KY].values, 2 * np.pi * np.arange(L) / L)
    assert S.dims == (schema.KX, schema.KY)
    assert S.attrs == schema.attrs(schema.S)
    assert S[schema.KX].attrs == schema.attrs(schema.KX)


@settings(max_examples=25, deadline=None)
@given(
    arrays(np.float64, (2, 8, 8), elements=st.floats(-3, 3)),
    st.floats(-1, 1),
)
def test_parseval_sum_rule(n, f):
    # sum_k |(1/N) sum_i a_i e^{ik.r_i}|^2 = (1/N^2) * N * sum_i a_i^2 = mean_i a_i^2
    S = an.structure_factor(field(n, lead=(schema.RUN,)), f=f)
    np.testing.assert_allclose(
        S.sum((schema.KX, schema.KY)).values, ((n - f) ** 2).mean((-2, -1)),
        rtol=1e-10, atol=1e-12,
    )


def test_structure_factor_translation_and_rotation_invariant(rng):
    n = field(rng.uniform(0, 1, (8, 8)))
    S = an.structure_factor(n, f=0.5).values
    np.testing.assert_allclose(an.structure_factor(n.roll({X: 3, Y: 5}), f=0.5).values, S,
                               atol=1e-14)
    # x <-> y swaps kx and ky
    swapped = an.structure_factor(field(n.values.T), f=0.5).values
    np.testing.assert_allclose(swapped, S.T, atol=1e-14)


@pytest.mark.parametrize("amp", [0.5, 0.2])
def test_checkerboard_is_single_peak_at_Q(backend, amp):
    L = 8
    n = field(0.5 + amp * sign(L))
    S = an.structure_factor(as_backend(n, backend), f=0.5).compute()
    peak = S.sel({schema.KX: np.pi, schema.KY: np.pi})
    assert np.isclose(float(peak), amp**2)
    assert np.isclose(float(S.sum()), amp**2)
    assert (S.values.ravel() > 1e-20).sum() == 1


def test_filling_from_coordinate_broadcasts_along_f(rng):
    L = 4
    v = rng.uniform(0, 1, (3, L, L))
    fs = np.array([0.3, 0.4, 0.5])
    n = field(v, lead=(schema.F_FILL,), f=fs)
    S = an.structure_factor(n)
    for i, f in enumerate(fs):
        ref = an.structure_factor(field(v[i]), f=float(f))
        np.testing.assert_allclose(S.isel({schema.F_FILL: i}).values, ref.values, atol=1e-15)
    assert schema.F_FILL in S.coords
    # scalar coordinate, attr, explicit argument and "mean"
    one = field(v[0]).assign_coords({schema.F_FILL: 0.3})
    np.testing.assert_allclose(an.structure_factor(one).values,
                               an.structure_factor(field(v[0]), f=0.3).values)
    np.testing.assert_allclose(an.structure_factor(field(v[0]).assign_attrs(f=0.3)).values,
                               an.structure_factor(field(v[0]), f=0.3).values)
    Smean = an.structure_factor(field(v[0]), f="mean")
    assert np.isclose(float(Smean.isel({schema.KX: 0, schema.KY: 0})), 0.0, atol=1e-30)
    with pytest.raises(InputError, match="filling"):
        an.structure_factor(field(v[0]))


# --- domain size -----------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [1, 2, 4, 8, 16])
def test_domain_size_of_stripes_is_exact(backend, w):
    L = 32
    n = field(stripes(L, w))
    Ld = an.domain_size(an.structure_factor(as_backend(n, backend), f=0.5)).compute()
    assert np.isclose(float(Ld), 1.0 / stripe_inverse_length(w), rtol=1e-10)
    # stripes along y give the same L (D4)
    Ly = an.domain_size(an.structure_factor(field(stripes(L, w).T), f=0.5))
    assert np.isclose(float(Ly), float(Ld), rtol=1e-12)
    assert Ld.attrs == schema.attrs(schema.LDOM)


def test_domain_size_grows_with_stripe_width():
    # L_15(w) = w / (sum over the Porod-like tail): ~ w / log(w), monotone in w
    Ls = [1.0 / stripe_inverse_length(w) for w in (2, 4, 8, 16)]
    assert np.all(np.diff(Ls) > 0)
    ratio = np.array(Ls) / np.array([2, 4, 8, 16])
    assert np.all(np.diff(ratio) < 0)  # slower than linear: the logarithmic correction


def test_domain_size_degenerate_cases():
    L = 8
    uniform = an.domain_size(an.structure_factor(field(np.full((L, L), 0.5)), f=0.5))
    assert np.isnan(float(uniform))
    perfect = an.domain_size(an.structure_factor(field(0.5 + 0.5 * sign(L)), f=0.5))
    assert float(perfect) > 1e10 or np.isinf(float(perfect))


# --- radial average --------------------------------------------------------------------------------
@pytest.mark.parametrize("binning", ["width", "exact"])
def test_radial_average_counts_and_peak(backend, rng, binning):
    L = 12
    n = field(rng.uniform(0, 1, (2, L, L)), lead=(schema.RUN,))
    S = an.structure_factor(n, f=0.5)
    Sq = an.radial_structure_factor(as_backend(S, backend), binning=binning).compute()
    counts = Sq[an.COUNT].values
    assert counts.sum() == L * L
    assert counts[0] == 1 and Sq[schema.QR].values[0] == 0.0
    np.testing.assert_allclose(Sq.isel({schema.QR: 0}).values,
                               S.sel({schema.KX: np.pi, schema.KY: np.pi}).values)
    # sum rule survives the shell average
    np.testing.assert_allclose((Sq * Sq[an.COUNT]).sum(schema.QR).values,
                               S.sum((schema.KX, schema.KY)).values)
    q = Sq[schema.QR].values
    assert np.all(np.diff(q) > 0) and q.max() <= np.pi * np.sqrt(2) + 1e-12
    if binning == "width":
        j = np.rint(q * L / (2 * np.pi))
        assert np.all(np.abs(q * L / (2 * np.pi) - j) <= 0.5)
    else:
        # exact shells: q = (2 pi / L) sqrt(integer)
        m2 = (q * L / (2 * np.pi)) ** 2
        np.testing.assert_allclose(m2, np.rint(m2), atol=1e-9)
    assert Sq[schema.QR].attrs == schema.attrs(schema.QR)


def test_radial_average_of_isotropic_function_is_exact():
    L = 16
    k = 2 * np.pi * np.arange(L) / L
    dq = np.hypot(*np.meshgrid(an._wrap(k - np.pi), an._wrap(k - np.pi), indexing="ij"))
    S = xr.DataArray(np.exp(-dq), dims=(schema.KX, schema.KY),
                     coords={schema.KX: k, schema.KY: k})
    Sq = an.radial_structure_factor(S, binning="exact")
    np.testing.assert_allclose(Sq.values, np.exp(-Sq[schema.QR].values), rtol=1e-12)


# --- correlation function --------------------------------------------------------------------------
def brute_force_correlation(Q: np.ndarray) -> dict[int, float]:
    """C at each squared minimum-image distance, by the double sum over sites."""
    L = Q.shape[0]
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for dx in range(L):
        for dy in range(L):
            mx = dx if dx < L // 2 else dx - L
            my = dy if dy < L // 2 else dy - L
            d2 = mx * mx + my * my
            c = 0.0
            for x in range(L):
                for y in range(L):
                    c += Q[x, y] * Q[(x + dx) % L, (y + dy) % L]
            sums[d2] = sums.get(d2, 0.0) + c / L**2
            counts[d2] = counts.get(d2, 0) + 1
    return {d2: sums[d2] / counts[d2] for d2 in sums}


def test_correlation_function_matches_brute_force(backend, rng):
    L = 6
    Q = rng.standard_normal((L, L))
    C = an.correlation_function(as_backend(field(Q), backend)).compute()
    ref = brute_force_correlation(Q)
    d2 = np.rint(C[schema.R].values ** 2).astype(int)
    np.testing.assert_allclose(C.values, [ref[d] for d in d2], rtol=1e-12)
    assert np.isclose(float(C.sel({schema.R: 0.0})), (Q**2).mean())
    assert C[an.COUNT].values.sum() == L * L
    np.testing.assert_array_equal(C[an.PARITY].values, d2 % 2)


def test_correlation_of_checkerboard_and_envelopes():
    L = 8
    C = an.correlation_function(field(2.0 * sign(L)))
    # Q_i Q_j = 4 (-1)^(dx+dy): the parity coordinate gives the sign exactly
    np.testing.assert_allclose(C.values, 4.0 * (1 - 2 * C[an.PARITY].values), atol=1e-12)
    upper, lower = an.correlation_envelopes(C)
    np.testing.assert_allclose(upper.values, 4.0, atol=1e-12)
    np.testing.assert_allclose(lower.values, -4.0, atol=1e-12)
    assert upper.sizes[schema.R] + lower.sizes[schema.R] == C.sizes[schema.R]
    assert upper[schema.R].values[0] == 0.0 and lower[schema.R].values[0] == 1.0
    connected = an.correlation_function(field(2.0 * sign(L) + 3.0), subtract_mean=True)
    np.testing.assert_allclose(connected.values, C.values, atol=1e-12)


# --- ensembles ---------------------------------------------------------------------------------------
def test_ensemble_mean_and_standard_error(backend, rng):
    v = rng.standard_normal((5, 7))
    da = xr.DataArray(v, dims=(schema.RUN, schema.STEP), name=schema.LDOM,
                      attrs=schema.attrs(schema.LDOM))
    out = an.ensemble_mean(as_backend(da, backend)).compute()
    np.testing.assert_allclose(out[an.MEAN].values, v.mean(0))
    np.testing.assert_allclose(out[an.SEM].values, v.std(0, ddof=1) / np.sqrt(5))
    np.testing.assert_allclose(out[an.SEM].values, v.std(0) / np.sqrt(4))
    assert out[an.MEAN].attrs == schema.attrs(schema.LDOM)
    assert out[an.SEM].attrs["units"] == "lattice spacing"
    single = an.ensemble_mean(da.isel({schema.RUN: [0]}))
    assert np.isnan(single[an.SEM].values).all()


# --- scaling, Porod, growth --------------------------------------------------------------------------
def synthetic_Sq(Ls: np.ndarray, q: np.ndarray) -> xr.DataArray:
    """S(q, t) = L^2 G(qL) with G(x) = 1 / (1 + x^2)^(3/2): exact dynamical scaling."""
    Lt = Ls[:, None]
    data = Lt**2 / (1 + (q[None, :] * Lt) ** 2) ** 1.5
    return xr.DataArray(data, dims=(schema.STEP, schema.QR),
                        coords={schema.STEP: np.arange(Ls.size), schema.QR: q})


def test_scaling_collapse_of_exact_scaling_form():
    q = np.linspace(0.0, 2.0, 200)
    Ls = np.array([3.0, 5.0, 8.0, 13.0])
    Sq = synthetic_Sq(Ls, q)
    L = xr.DataArray(Ls, dims=(schema.STEP,))
    x, y = an.scaling_collapse(Sq, L)
    assert x.dims == y.dims == Sq.dims
    np.testing.assert_allclose(x.values, q[None, :] * Ls[:, None])
    np.testing.assert_allclose(y.values, Sq.values / Ls[:, None] ** 2)
    good = float(an.collapse_quality(x, y))
    assert good < 1e-5  # only the linear-interpolation error of a smooth curve
    # the wrong length (no growth) does not collapse
    bad = float(an.collapse_quality(*an.scaling_collapse(Sq, xr.full_like(L, 5.0))))
    assert bad > 0.1 > 1e4 * good
    assert np.isnan(float(an.collapse_quality(x.isel({schema.STEP: [0]}),
                                              y.isel({schema.STEP: [0]}))))


def test_porod_slope_of_power_law(backend):
    q = np.linspace(0.0, 3.0, 50)
    amp = np.array([1.0, 2.0, 7.0])
    data = amp[:, None] * np.where(q > 0, q, 1.0)[None, :] ** -3.0
    Sq = xr.DataArray(data, dims=(schema.T, schema.QR), coords={schema.QR: q})
    out = an.porod_slope(as_backend(Sq, backend), (0.5, 2.0)).compute()
    np.testing.assert_allclose(out[an.SLOPE].values, -3.0, atol=1e-12)
    np.testing.assert_allclose(out[an.SLOPE_ERR].values, 0.0, atol=1e-10)
    assert out.attrs["n_points"] == ((q >= 0.5) & (q <= 2.0)).sum()
    with pytest.raises(InputError, match="need >= 3"):
        an.porod_slope(Sq, (0.5, 0.55))


def synthetic_growth(rng, alphas=(0.5, 0.25), runs=32, noise=0.05, A=1.5):
    t = np.geomspace(1, 1000, 30)
    a = np.asarray(alphas)[:, None, None]
    data = A * t[None, None, :] ** a * (1 + noise * rng.standard_normal((len(alphas), runs,
                                                                        t.size)))
    steps = np.arange(t.size)
    return xr.DataArray(
        data, dims=(schema.T, schema.RUN, schema.STEP),
        coords={schema.T: [0.1, 0.3][: len(alphas)], schema.STEP: steps,
                schema.TIME: (schema.STEP, t)},
        name=schema.LDOM,
    )


def test_growth_exponent_recovers_alpha(backend, rng):
    L = synthetic_growth(rng)
    fit = an.growth_exponent(as_backend(L, backend), window=(10, 1000), n_boot=300,
                             seed=1).compute()
    alpha, err = fit[an.ALPHA].values, fit[an.ALPHA_ERR].values
    assert np.all(err > 0) and np.all(err < 0.02)
    assert np.all(np.abs(alpha - np.array([0.5, 0.25])) < 4 * err)
    np.testing.assert_allclose(fit[an.PREFACTOR].values, 1.5, rtol=0.1)
    assert fit.attrs["window"] == [10.0, 1000.0] and fit.attrs["time_axis"] == schema.TIME
    # seeded bootstrap is reproducible; the harmonic mean gives the same exponent here
    again = an.growth_exponent(L, window=(10, 1000), n_boot=300, seed=1)
    np.testing.assert_allclose(again[an.ALPHA_ERR].values, err)
    harm = an.growth_exponent(L, window=(10, 1000), mean="harmonic")
    np.testing.assert_allclose(harm[an.ALPHA].values, alpha, atol=0.01)


def test_growth_exponent_error_is_honest(rng):
    # over many synthetic ensembles the bootstrap error matches the scatter of alpha
    alphas, errs = [], []
    for _ in range(30):
        fit = an.growth_exponent(synthetic_growth(rng, alphas=(0.5,), runs=8, noise=0.2),
                                 window=(10, 1000), n_boot=100)
        alphas.append(float(fit[an.ALPHA].squeeze()))
        errs.append(float(fit[an.ALPHA_ERR].squeeze()))
    ratio = np.std(alphas, ddof=1) / np.mean(errs)
    assert 0.5 < ratio < 2.0


def test_growth_exponent_without_runs_and_bad_window(rng):
    L = synthetic_growth(rng, alphas=(0.5,), noise=0.0).isel({schema.T: 0, schema.RUN: 0})
    L = L.drop_vars(schema.TIME)  # falls back to the step coordinate
    fit = an.growth_exponent(L.assign_coords({schema.STEP: np.geomspace(1, 1000, 30)}),
                             window=(10, 1000))
    assert np.isclose(float(fit[an.ALPHA]), 0.5)
    assert fit.attrs["time_axis"] == schema.STEP
    with pytest.raises(InputError, match="need >= 3"):
        an.growth_exponent(L, window=(1000, 2000))


# --- laziness ----------------------------------------------------------------------------------------
def test_dask_input_stays_lazy_and_matches_numpy(rng):
    L = 8
    v = 0.5 + 0.3 * rng.standard_normal((2, 3, 4, L, L))
    coords = {schema.T: [0.1, 0.2], schema.RUN: np.arange(3), schema.STEP: np.arange(4),
              schema.F_FILL: 0.5}
    n = field(v, lead=(schema.T, schema.RUN, schema.STEP), **coords)
    nd = n.copy(data=dsa.from_array(v, chunks=(1, 2, 2, 4, 4)))
    counter = _CountingScheduler()

    def pipeline(n):
        phi = an.order_parameter(n)
        S = an.structure_factor(n)
        Sq = an.radial_structure_factor(S)
        Ld = an.domain_size(S)
        C = an.correlation_function(n)
        upper, _ = an.correlation_envelopes(C)
        x, y = an.scaling_collapse(Sq.mean(schema.RUN), Ld.mean(schema.RUN))
        return {
            "phi": phi, "S": S, "Sq": Sq, "L": Ld, "C": C, "upper": upper, "x": x, "y": y,
            "sem": an.ensemble_mean(Ld)[an.SEM],
            "quality": an.collapse_quality(x, y, x_range=(0.1, 10.0)),
            "slope": an.porod_slope(Sq, (0.5, 2.5))[an.SLOPE],
            "alpha": an.growth_exponent(Ld, window=(1, 3), n_boot=20)[an.ALPHA],
            "walls": an.interface_density(phi),
        }

    with dask.config.set(scheduler=counter):
        lazy = pipeline(nd)
    assert counter.n == 0
    eager = pipeline(n)
    for name, da in lazy.items():
        assert dask.is_dask_collection(da), name
        assert not dask.is_dask_collection(eager[name]), name
        xr.testing.assert_allclose(da.compute(), eager[name])


def test_accessor(rng):
    ds = xr.Dataset({schema.N: field(rng.uniform(0, 1, (2, 6, 6)), lead=(schema.RUN,))},
                    attrs={schema.F_FILL: 0.5})
    xr.testing.assert_identical(ds.cdw.phi(), an.order_parameter(ds[schema.N]))
    ref = an.structure_factor(ds[schema.N], f=0.5)
    xr.testing.assert_allclose(ds.cdw.structure_factor(), ref)
    xr.testing.assert_allclose(ds.cdw.domain_size(), an.domain_size(ref))
    xr.testing.assert_allclose(ds.cdw.radial_structure_factor(), an.radial_structure_factor(ref))


def test_interface_density_of_stripes():
    L, w = 16, 4
    phi = an.order_parameter(field(stripes(L, w)))
    # walls every w rows: L/w walls x L bonds each out of 2 L^2 bonds
    assert np.isclose(float(an.interface_density(phi)), (L / w) * L / (2 * L * L))
    assert float(an.interface_density(an.order_parameter(field(0.5 + 0.5 * sign(L))))) == 0.0


def test_momentum_convention_is_read_from_coordinates(rng):
    # the same S on a [-pi, pi) grid (fftshift) or without coordinates gives the same L, S(q)
    S = an.structure_factor(field(rng.uniform(0, 1, (8, 8))), f=0.5)
    shifted = S.roll({schema.KX: 4, schema.KY: 4}, roll_coords=True)
    shifted = shifted.assign_coords({d: an._wrap(shifted[d].values)
                                     for d in (schema.KX, schema.KY)})
    bare = S.drop_vars([schema.KX, schema.KY])
    for other in (shifted, bare):
        assert np.isclose(float(an.domain_size(other)), float(an.domain_size(S)))
        np.testing.assert_allclose(an.radial_structure_factor(other).values,
                                   an.radial_structure_factor(S).values)


# --- domain-wall orientation and filling ----------------------------------------------------------
def _domains(L: int, kind: str) -> np.ndarray:
    x, y = np.indices((L, L))
    if kind == "axis":  # a band along y: two straight walls along the y axis
        return np.where((x >= L // 4) & (x < 3 * L // 4), 1.0, -1.0)
    if kind == "diagonal":  # bands along the diagonal
        return np.where(np.sin(2 * np.pi * (x + y) / L) >= 0, 1.0, -1.0)
    r = np.hypot(x - L / 2 + 0.5, y - L / 2 + 0.5)
    return np.where(r < L / 4, 1.0, -1.0)


@pytest.mark.parametrize("kind, want, tol", [("axis", 1.0, 1e-9), ("diagonal", -1.0, 0.005),
                                             ("circle", 0.0, 0.01)])
def test_wall_anisotropy_of_axis_diagonal_and_round_walls(backend, kind, want, tol):
    phi = field(np.stack([_domains(64, kind), 0.3 * _domains(64, kind)]), ("run",))
    c4 = an.wall_anisotropy(as_backend(phi, backend))
    assert c4.name == an.WALL_C4 and c4.dims == ("run",)
    np.testing.assert_allclose(c4.values, want, atol=tol)  # independent of the amplitude


def test_wall_anisotropy_is_invariant_under_the_lattice_symmetries(rng):
    x, y = np.indices((48, 48))
    blob = np.where(np.hypot(x - 20, (y - 25) / 1.7) < 9, 1.0, -1.0)  # an ellipse
    blob = blob + 0.2 * rng.normal(size=blob.shape)
    base = float(an.wall_anisotropy(field(blob)))
    for img in (blob.T, blob[::-1], np.rot90(blob), np.roll(blob, (7, -3), (0, 1))):
        assert float(an.wall_anisotropy(field(np.ascontiguousarray(img)))) == \
            pytest.approx(base, abs=1e-10)
    assert np.isnan(float(an.wall_anisotropy(field(np.ones((8, 8))))))
    with pytest.raises(an.ParameterError):
        an.wall_anisotropy(field(blob), sigma=0.0)


def test_wall_density_excess_measures_the_holes_on_the_walls(backend):
    L = 32
    phi = _domains(L, "axis")
    x = np.indices((L, L))[0]
    on_wall = np.isin(x, [L // 4 - 1, L // 4, 3 * L // 4 - 1, 3 * L // 4])
    n = np.where(on_wall, 0.2, 0.45)
    got = an.wall_density_excess(as_backend(field(n), backend),
                                 as_backend(field(phi), backend))
    assert float(got) == pytest.approx(0.2 - n.mean())
    assert np.isnan(float(an.wall_density_excess(field(n), field(np.ones((L, L))))))
