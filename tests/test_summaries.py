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
    dom = xr.open_zarr(out["domain-size"], consolidated=False)
    assert dom.sizes[schema.STEP] == 3 and np.isfinite(dom[schema.LDOM]).all()
