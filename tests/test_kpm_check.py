"""``cdw validate --kpm``: ML trajectory frames against KPM at the model's own solved mu."""

from __future__ import annotations

import numpy as np
import pytest

from cdwdata import ed, schema, store
from cdwdata.cli import main
from cdwdata.errors import InputError, StoreError
from cdwdata.ml import kpmcheck
from cdwdata.params import HolsteinParams
from cdwdata.quench import QuenchConfig, prepare_store, run_quench

CONFIG = QuenchConfig(L=16, temperatures=(0.1,), fillings=(0.5, 0.4), runs=2, steps=40,
                      save_every=20, seed=3, forcefield="holstein-f{f}",
                      frame_vars=(schema.Q, schema.N, schema.FORCE), frame_dtype="float32",
                      compute_dtype="float32", hot_start_T=0.5)


@pytest.fixture(scope="module")
def ml_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("kpm") / "ml.zarr"
    run_quench(CONFIG, path, progress=False, command="test")
    return path


def test_errors_agree_with_exact_densities_at_the_stored_mu(ml_store):
    res = kpmcheck.check_store(ml_store, tol=1e-5)
    assert dict(res.sizes) == {"T": 1, "f": 2, "run": 2, "step": 2}
    assert list(res["step"].values) == [20, 40]  # the hot start (step 0) is left out
    ds = store.open_dataset(ml_store)
    p = HolsteinParams()
    for f in (0.5, 0.4):
        for run in (0, 1):
            for step in (20, 40):
                cell = ds.sel(T=0.1, f=f, run=run, step=step)
                Q = cell["Q"].values.astype(float)
                mu = float(cell["mu"])
                exact = ed.density_at(Q, mu, 0.1)
                dn = cell["n"].values.astype(float) - exact
                r = res.sel(T=0.1, f=f, run=run, step=step)
                assert float(r["n_rmse"]) == pytest.approx(np.sqrt((dn ** 2).mean()), abs=1e-5)
                assert float(r["n_max"]) == pytest.approx(np.abs(dn).max(), abs=1e-5)
                wx, wy = np.unravel_index(np.abs(dn).argmax(), dn.shape)
                assert (int(r["worst_x"]), int(r["worst_y"])) == (wx, wy)
                # the stored ML forces are g (n - 1/2) + elastic, so dF = g dn (float32 frames)
                assert float(r["F_rmse"]) == pytest.approx(p.g * float(r["n_rmse"]), abs=1e-5)
                assert float(r["mu"]) == mu
                # at the model's solved mu the exact filling is close to f, not equal
                assert abs(float(r["filling_kpm"]) - f) < 0.05
    assert res.attrs["kind"] == "kpm-check" and res.attrs["model"] == "holstein-f{f}"
    assert (res["F_rmse"] > 0).all()


def test_model_source_and_selections(ml_store):
    a = kpmcheck.check_store(ml_store, steps=[40], runs=[1], fillings=[0.4], tol=1e-6)
    b = kpmcheck.check_store(ml_store, steps=[40], runs=[1], fillings=[0.4], tol=1e-6,
                             source="model")
    assert dict(a.sizes) == {"T": 1, "f": 1, "run": 1, "step": 1}
    np.testing.assert_allclose(a["n_rmse"], b["n_rmse"], atol=1e-5)
    w = kpmcheck.check_store(ml_store, window=(10, 40), every=2, runs=[0], fillings=[0.5])
    assert list(w["step"].values) == [20]
    with pytest.raises(InputError, match="not frames"):
        kpmcheck.check_store(ml_store, steps=[30])
    with pytest.raises(InputError, match="f=0.3"):
        kpmcheck.check_store(ml_store, fillings=[0.3])


def test_unwritten_frames_are_nan(tmp_path):
    path = tmp_path / "empty.zarr"
    prepare_store(path, CONFIG, command="test")
    res = kpmcheck.check_store(path, steps=[20])
    assert np.isnan(res["n_rmse"]).all()


def test_store_without_mu_is_refused(tmp_path, ml_store):
    ds = store.open_dataset(ml_store).drop_vars("mu").load()
    path = tmp_path / "nomu.zarr"
    store.save_dataset(ds, path)
    with pytest.raises(StoreError, match="'mu'"):
        kpmcheck.check_store(path)


def test_cli_prints_a_table_and_saves_the_dataset(ml_store, tmp_path, capsys):
    out = tmp_path / "kpm-report.zarr"
    assert main(["validate", "--kpm", str(ml_store), "--at", "40", "--runs", "0",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| T | f | run | step |" in text and "force RMSE" in text
    rep = store.open_dataset(out)
    assert dict(rep.sizes) == {"T": 1, "f": 2, "run": 1, "step": 1}
    assert rep.attrs["kind"] == "kpm-check" and rep.attrs["command"].startswith("cdw ")
    before = rep["F_rmse"].values.copy()
    assert main(["validate", "--kpm", str(ml_store), "--at", "20", "--out", str(out)]) == 2
    np.testing.assert_array_equal(store.open_dataset(out)["F_rmse"].values, before)
    assert main(["validate", "--kpm", str(ml_store), "--at", "20", "--out", str(out),
                 "--overwrite"]) == 0
    assert list(store.open_dataset(out)["step"].values) == [20]



def test_a_grand_canonical_model_is_checked_at_the_bath_temperature():
    # stores written before the fix record the electron_T of the first T of a T-scan in
    # their per-filling model attrs; a grand-canonical model runs at each cell's bath T
    old = {"forcefield_attrs": {"0.5": {"electron_T": 0.1, "grand_canonical": 1}}}
    assert kpmcheck._electron_T(old, 0.3, 0.5) == 0.3
    new = {"forcefield_attrs": {"0.5": {"electron_T_is_bath_T": 1, "grand_canonical": 1}}}
    assert kpmcheck._electron_T(new, 0.2, 0.5) == 0.2
    canonical = {"forcefield_attrs": {"0.5": {"electron_T": 0.1}}}
    assert kpmcheck._electron_T(canonical, 0.3, 0.5) == 0.1


def test_another_model_is_judged_on_the_same_frames(ml_store):
    own = kpmcheck.check_store(ml_store, steps=[40], runs=[0], fillings=[0.5],
                               source="model")
    other = kpmcheck.check_store(ml_store, steps=[40], runs=[0], fillings=[0.5],
                                 source="model", model="holstein-gc-v9")
    assert other.attrs["model"] == "holstein-gc-v9"
    assert float(own["mu"].squeeze()) == float(other["mu"].squeeze())  # the stored mu
    assert float(own["n_rmse"].squeeze()) != float(other["n_rmse"].squeeze())
    with pytest.raises(InputError, match="from-model"):
        kpmcheck.check_store(ml_store, steps=[40], model="holstein-gc-v9")
