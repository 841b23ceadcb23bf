"""cdw analyze: stored summaries agree with the analysis functions and carry their windows."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cdwdata import analysis, schema, store
from cdwdata.cli import main
from cdwdata.quench import QuenchConfig, run_quench
from cdwdata.summaries import AnalysisSettings, analyze_store


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    path = tmp_path_factory.mktemp("traj") / "q.zarr"
    cfg = QuenchConfig(L=8, temperatures=(0.1, 0.3), fillings=(0.5,), runs=3, steps=60,
                       save_every=10, seed=3)
    run_quench(cfg, path, progress=False)
    return path


def test_outputs_match_analysis_functions(trajectory, tmp_path):
    out = analyze_store(trajectory, tmp_path / "a", AnalysisSettings(window=(0.5, 3.0)))
    assert set(out) == {"order-parameter", "structure-factor", "domain-size",
                        "growth-exponents"}
    n = store.open_dataset(trajectory)[schema.N].load()
    L_direct = analysis.domain_size(analysis.structure_factor(n))
    dom = xr.open_zarr(out["domain-size"], consolidated=False).load()
    np.testing.assert_allclose(dom[schema.LDOM].values, L_direct.values, rtol=1e-12)
    np.testing.assert_allclose(dom["L_mean"].values, L_direct.mean("run").values, rtol=1e-12)
    phi = xr.open_zarr(out["order-parameter"], consolidated=False)[schema.PHI]
    assert phi.dims == (schema.T, schema.F_FILL, schema.RUN, schema.STEP, schema.X, schema.Y)
    np.testing.assert_allclose(phi.values, analysis.order_parameter(n).values, atol=1e-6)
    sf = xr.open_zarr(out["structure-factor"], consolidated=False)
    assert sf[schema.S].dims[-2:] == (schema.KX, schema.KY)
    assert sf["porod_slope"].dims == (schema.T, schema.F_FILL, schema.STEP)
    growth = xr.open_zarr(out["growth-exponents"], consolidated=False).load()
    assert growth.attrs["window"] == [0.5, 3.0]
    assert growth.attrs["kind"] == "growth-exponents"
    assert growth["alpha"].dims == (schema.T, schema.F_FILL)
    assert np.isfinite(growth["alpha"]).all() and (growth["alpha_err"] > 0).all()
    # the stored store says where it came from and with which parameters
    assert growth.attrs["source_store"] == str(trajectory)
    assert growth.attrs["g"] == 3.5
    # the walls: their density, orientation and filling, per frame and run
    direct_phi = analysis.order_parameter(n)
    for name, want in ((analysis.WALL, analysis.interface_density(direct_phi)),
                       (analysis.WALL_C4, analysis.wall_anisotropy(direct_phi)),
                       (analysis.WALL_DN, analysis.wall_density_excess(n, direct_phi))):
        assert dom[name].dims == (schema.T, schema.F_FILL, schema.RUN, schema.STEP)
        np.testing.assert_allclose(dom[name].values, want.values, rtol=1e-12, atol=1e-15)


def test_cli_refuses_to_overwrite_and_default_window(trajectory, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["analyze", str(trajectory), "--out", str(out), "--boot", "20"]) == 0
    assert "alpha" in capsys.readouterr().out
    growth = xr.open_zarr(out / "growth-exponents.zarr", consolidated=False)
    t_end = float(store.open_dataset(trajectory)[schema.TIME][-1])
    assert growth.attrs["window"] == [t_end / 10, t_end]
    before = (out / "domain-size.zarr" / "zarr.json").read_bytes()
    assert main(["analyze", str(trajectory), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "domain-size.zarr" / "zarr.json").read_bytes() == before


def test_rejects_training_sets(tmp_path):
    from cdwdata.errors import StoreError

    path = tmp_path / "ts.zarr"
    store.create_trainset(path, 8, (0.5,), ["random"], [0], [-1], 0.1, {"kind": "training-set"})
    with pytest.raises(StoreError, match="not a trajectory"):
        analyze_store(path, tmp_path / "x")


def test_short_run_keeps_summaries_and_reports_why_alpha_is_missing(tmp_path):
    path = tmp_path / "short.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=2, steps=20,
                            save_every=10, seed=1), path, progress=False)
    out = analyze_store(path, tmp_path / "a")
    growth = xr.open_zarr(out["growth-exponents"], consolidated=False).load()
    assert np.isnan(growth["alpha"]).all()
    assert "need >= 3" in growth.attrs["fit_note"]
    # the alternative windows are too short as well: NaN, no error
    assert np.isnan(growth[analysis.ALPHA_ALT]).all()
    assert np.isnan(growth[analysis.ALPHA_WINDOW_ERR]).all()
    sf = xr.open_zarr(out["structure-factor"], consolidated=False)
    assert sf[analysis.QUALITY].dims == (schema.T, schema.F_FILL)
    dom = xr.open_zarr(out["domain-size"], consolidated=False)
    assert dom.sizes[schema.STEP] == 3 and np.isfinite(dom[schema.LDOM]).all()


def _cell_window_steps(ds, window):
    t = ds[schema.TIME].values
    return np.flatnonzero((t >= window[0]) & (t <= window[1]) & (t > 0))


def test_late_time_summaries_use_the_one_window(trajectory, tmp_path):
    out = analyze_store(trajectory, tmp_path / "w", AnalysisSettings(n_boot=20))
    t = store.open_dataset(trajectory)[schema.TIME].values
    window = list(analysis.growth_window(t))
    sf = store.open_dataset(out["structure-factor"]).load()
    dom = store.open_dataset(out["domain-size"]).load()
    growth = store.open_dataset(out["growth-exponents"]).load()
    for ds in (sf, dom, growth):
        assert ds.attrs["window"] == window
    assert sf.attrs["collapse_window"] == window == sf.attrs["late_window"]
    late = _cell_window_steps(sf, window)
    assert sf.attrs["collapse_frames"] == late.size
    # collapse quality over the growth window, from the analysis functions directly
    x, y = analysis.scaling_collapse(sf["Sq_mean"].isel(step=late), dom["L_mean"].isel(step=late))
    want = analysis.collapse_quality(x, y)
    assert sf[analysis.QUALITY].dims == (schema.T, schema.F_FILL)
    np.testing.assert_allclose(sf[analysis.QUALITY].values,
                               want.transpose(schema.T, schema.F_FILL).values, rtol=1e-12)
    # the Porod windows follow the measured wall density, stored per step; slopes over them
    rho = dom[analysis.WALL].mean(schema.RUN)
    win = analysis.porod_window(rho)
    np.testing.assert_allclose(sf["q_wall"].values,
                               (2 * np.pi * rho).transpose(*sf["q_wall"].dims).values)
    np.testing.assert_allclose(sf["porod_q_min"].values,
                               win[analysis.Q_MIN].transpose(*sf["porod_q_min"].dims).values)
    np.testing.assert_allclose(sf["porod_q_max"].values,
                               win[analysis.Q_MAX].transpose(*sf["porod_q_max"].dims).values)
    assert sf.attrs["large_q_window"] == list(analysis.LARGE_Q)
    assert "2 pi rho" in sf.attrs["porod_window_rule"] and "porod_qL_window" not in sf.attrs
    pooled = analysis.pooled_slope(sf["Sq_mean"].isel(step=late),
                                   win[analysis.Q_MIN].isel(step=late),
                                   win[analysis.Q_MAX].isel(step=late), dim=schema.STEP)
    np.testing.assert_allclose(sf["porod_slope_late"].values,
                               pooled[analysis.SLOPE].transpose(schema.T, schema.F_FILL).values)
    large = analysis.pooled_slope(sf["Sq_mean"].isel(step=late), *analysis.LARGE_Q,
                                  dim=schema.STEP)
    np.testing.assert_allclose(sf["large_q_slope_late"].values,
                               large[analysis.SLOPE].transpose(schema.T, schema.F_FILL).values)
    q = sf[schema.QR].values
    enough = ((q >= analysis.LARGE_Q[0]) & (q <= analysis.LARGE_Q[1])).sum() >= 3
    assert bool(np.isfinite(sf["large_q_slope_late"]).all()) == enough  # L = 8: too few shells
    # window sensitivity of alpha over the two alternative windows
    alts = analysis.alternative_windows(t)
    assert growth.attrs["alt_windows"] == [list(w) for w in alts]
    assert growth[analysis.ALPHA_ALT].dims == (schema.T, schema.F_FILL, analysis.ALT_WINDOW)
    for i, w in enumerate(alts):
        direct = analysis.growth_exponent(dom[schema.LDOM], w, n_boot=0)[analysis.ALPHA]
        np.testing.assert_allclose(growth[analysis.ALPHA_ALT].isel(alt_window=i).values,
                                   direct.transpose(schema.T, schema.F_FILL).values)
    dev = np.abs(growth[analysis.ALPHA_ALT] - growth[analysis.ALPHA]).max(analysis.ALT_WINDOW)
    np.testing.assert_allclose(growth[analysis.ALPHA_WINDOW_ERR].values, dev.values)


def test_fixed_porod_window_override(trajectory, tmp_path):
    out = analyze_store(trajectory, tmp_path / "o",
                        AnalysisSettings(window=(0.5, 3.0), porod_qL=(2.0, 6.0),
                                         large_q=(1.0, 2.2), n_boot=0))
    sf = store.open_dataset(out["structure-factor"]).load()
    dom = store.open_dataset(out["domain-size"]).load()
    assert sf.attrs["porod_qL_window"] == [2.0, 6.0]
    assert sf.attrs["large_q_window"] == [1.0, 2.2] and "fixed" in sf.attrs["porod_window_rule"]
    np.testing.assert_allclose(sf["porod_q_min"].values,
                               (2.0 / dom["L_mean"]).transpose(*sf["porod_q_min"].dims).values)
    assert sf.attrs["collapse_window"] == [0.5, 3.0]


def test_cli_prints_windows_and_late_time_numbers(trajectory, tmp_path, capsys):
    assert main(["analyze", str(trajectory), "--out", str(tmp_path / "p"), "--boot", "10"]) == 0
    text = capsys.readouterr().out
    t_end = float(store.open_dataset(trajectory)[schema.TIME][-1])
    assert f"growth exponent fitted over t = {t_end / 10:g} .. {t_end:g}" in text
    assert f"t = {t_end / 20:g} .. {t_end / 2:g} and t = {t_end / 5:g} .. {t_end:g}" in text
    assert "alpha_window_err" in text and "collapse_msd" in text
    assert "q_min = q_wall" in text and "large-q window: q = 1.571 .. 3.142" in text
    assert "anisotropy <cos 4 theta>" in text and "hole-rich" in text
    dom = store.open_dataset(tmp_path / "p" / "domain-size.zarr").load()
    last = dom[analysis.WALL_C4].sel(T=0.3, f=0.5).isel(step=-1).values
    assert "| 0.3 | 0.5 | " in text and f"{np.nanmean(last):.3f} ± " in text
    growth = store.open_dataset(tmp_path / "p" / "growth-exponents.zarr").load()
    err = float(growth[analysis.ALPHA_WINDOW_ERR].sel(T=0.1, f=0.5))
    assert f"| 0.1 | 0.5 | {float(growth['alpha'].sel(T=0.1, f=0.5)):.3f} |" in text
    assert f"{err:.3f}" in text
    # an explicit --porod-qL still works and is recorded
    assert main(["analyze", str(trajectory), "--out", str(tmp_path / "p2"), "--boot", "0",
                 "--porod-qL", "2", "6", "--large-q", "1.0", "2.2"]) == 0
    assert "fixed: q L(t) = 2 .. 6" in capsys.readouterr().out


def test_window_outside_the_run_gives_nan_not_an_error(trajectory, tmp_path):
    out = analyze_store(trajectory, tmp_path / "late", AnalysisSettings(window=(1e3, 2e3),
                                                                        n_boot=0))
    sf = store.open_dataset(out["structure-factor"]).load()
    assert sf.attrs["collapse_frames"] == 0 and np.isnan(sf[analysis.QUALITY]).all()
    assert np.isnan(sf["porod_slope_late"]).all() and np.isnan(sf["large_q_slope_late"]).all()
    growth = store.open_dataset(out["growth-exponents"]).load()
    assert np.isnan(growth["alpha"]).all() and np.isnan(growth[analysis.ALPHA_WINDOW_ERR]).all()
    assert np.isfinite(growth[analysis.ALPHA_ALT]).any()  # the run's own windows still fit


def test_analysis_of_some_cells_and_runs_equals_the_same_slice_of_the_whole(trajectory,
                                                                           tmp_path):
    """A store still being written is analysed on its finished cells and runs; the result is
    the corresponding slice of the full analysis, and the selection is recorded."""
    settings = AnalysisSettings(window=(0.5, 3.0))
    whole = analyze_store(trajectory, tmp_path / "all", settings)
    part = analyze_store(trajectory, tmp_path / "part", settings, temperatures=[0.3],
                         runs=[0, 2])
    full = xr.open_zarr(whole["domain-size"], consolidated=False).load()
    some = xr.open_zarr(part["domain-size"], consolidated=False).load()
    np.testing.assert_allclose(some[schema.LDOM].values,
                               full[schema.LDOM].isel(T=[1], run=[0, 2]).values, rtol=1e-12)
    assert '"runs": [0, 2]' in some.attrs["selection"]
    with pytest.raises(Exception, match="not in the store"):
        analyze_store(trajectory, tmp_path / "bad", settings, temperatures=[0.2])
    with pytest.raises(Exception, match="not in the store"):
        analyze_store(trajectory, tmp_path / "bad2", settings, runs=[5])
