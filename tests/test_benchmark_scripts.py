"""The prepared benchmark scripts run (tiny sizes, CPU), so they cannot rot between the
sessions that have the hardware they are for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


#: Packages cdwdata uses that the GPU machine's image does not hold (its README and
#: benchmarks/gpu_check.sh: torch, numpy, scipy, safetensors and xarray are there).
NOT_ON_THE_GPU_IMAGE = ("zarr", "numcodecs", "dask", "distributed", "intake", "hvplot",
                        "holoviews", "panel")


def test_gpu_check_smoke_runs_on_cpu_and_writes_its_report(tmp_path):
    # run as on the GPU machine: the packages it lacks cannot be imported
    script = ROOT / "benchmarks" / "gpu_check.py"
    code = ("import runpy, sys\n"
            f"for name in {NOT_ON_THE_GPU_IMAGE!r}:\n"
            "    sys.modules[name] = None\n"
            f"sys.argv = [{str(script)!r}, '--smoke', '--out', {str(tmp_path)!r}]\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, cwd=ROOT)
    rep = json.loads((tmp_path / "gpu-check.json").read_text())
    assert {r["precision"] for r in rep["langevin"]} == {"float32", "bf16"}
    assert [r["start"] for r in rep["langevin"]][-1].startswith("late frames")
    compiled = [r for r in rep["langevin"] if r["compile"]]
    assert len(compiled) == 1  # reported even where torch.compile cannot build (no compiler)
    for row in rep["langevin"]:
        if "error" in row:
            assert row["compile"] and "torch.compile" in row["error"]
            continue
        assert row["site_steps_per_s"] > 0 and row["filling_rel_error"] < 1e-6
    assert rep["ed"][0]["seconds_per_config"] > 0
    assert rep["compile"][0]["times"]["descriptor_eager"]["median_ms"] > 0
    assert len(rep["paper"]) == 2
    z = np.load(tmp_path / rep["paper"][0]["file"])
    assert z["L"].shape == (3, 2) and np.isfinite(z["L"]).all()


def test_tiered_gate_of_one_network_with_itself_is_that_network(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tiered_gate

    from cdwdata.quench import QuenchConfig, run_quench

    path = tmp_path / "ed.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=140,
                            save_every=20, seed=3, forcefield="ed"), path, progress=False)
    rows = tiered_gate.measure("holstein-gc-v9", "holstein-gc-v9", str(path), runs=(0,),
                               every=20, fillings=(0.5,))
    assert {r["band"] for r in rows} == {"early"}
    for r in rows:
        assert abs(r["rmse_tiered"] - r["rmse_large"]) < 1e-12 and r["rmse_large"] > 0
    shares = [r["large_share"] for r in sorted(rows, key=lambda r: r["gate"])]
    assert shares == sorted(shares, reverse=True)  # a lower gate sends more sites up


def test_gauss_levels_match_the_moments_and_become_exact():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from level_count import gauss_levels

    r = np.random.default_rng(4)
    eps = np.sort(r.normal(0, 2, 40))
    p = r.random((3, 40))
    p /= p.sum(1, keepdims=True)
    for K in (1, 4, 8):
        nodes, w = gauss_levels(eps, p, K)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
        for k in range(2 * K):  # a K-point Gauss rule integrates degree 2K - 1 exactly
            np.testing.assert_allclose((w * nodes**k).sum(1), (p * eps**k).sum(1),
                                       rtol=1e-8, atol=1e-8 * 2.0**k)
    nodes, w = gauss_levels(eps, p, 40)  # as many nodes as atoms: the measure itself
    f = lambda x: 1 / (1 + np.exp((x - 0.3) / 0.1))  # noqa: E731
    np.testing.assert_allclose((w * f(nodes)).sum(1), (p * f(eps)).sum(1), atol=1e-9)


def test_open_cluster_oracle_limits():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cluster_oracle import cluster_density
    from scipy.special import expit

    from cdwdata.params import HolsteinParams

    params = HolsteinParams()
    Q = np.random.default_rng(2).normal(0, 1.5, (8, 8))
    mu, T = 0.3, 0.2
    # a one-site cluster is the bare level
    np.testing.assert_allclose(cluster_density(Q, mu, T, params, 0),
                               expit((mu + params.g * Q) / T), atol=1e-12)
    # the five-site star around (3, 4), written out by hand
    x, y = 3, 4
    sites = [(x, y), (x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)]
    H = np.diag([-params.g * Q[a, b] for a, b in sites])
    H[0, 1:] = H[1:, 0] = -params.t
    ev, V = np.linalg.eigh(H)
    want = float((V[0] ** 2 * expit((mu - ev) / T)).sum())
    assert abs(cluster_density(Q, mu, T, params, 1)[x, y] - want) < 1e-12


def test_cluster_refine_scan_runs_and_an_everywhere_cluster_is_the_oracle(tmp_path,
                                                                         monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cluster_refine

    from cdwdata.quench import QuenchConfig, run_quench

    path = tmp_path / "ed.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=2000,
                            save_every=500, seed=3, forcefield="ed"), path, progress=False)
    out = tmp_path / "refine.json"
    monkeypatch.setattr(sys, "argv", [
        "cluster_refine.py", "--model", "holstein-gc-v10", "--store", str(path), "--runs", "0",
        "--specs", "8:3:0.01", "5:1e4:0", "--out", str(out)])
    cluster_refine.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["sites"] for r in rows] == [25, 21]
    assert rows[1]["refined_mean"] == 1.0  # every site: the open-cluster oracle
    assert 0.0 <= rows[0]["refined_mean"] < 1.0 and rows[0]["rmse"]["0.5"] > 0


def test_scaling_benchmark_tiles_a_stored_frame_to_any_size(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import stored_state

    from cdwdata import store
    from cdwdata.quench import QuenchConfig, run_quench

    path = tmp_path / "q.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=20,
                            save_every=10, seed=3, forcefield="tdgl"), path, progress=False)
    Q = store.open_dataset(path)["Q"].isel(T=0, f=0, run=0)
    last, first = Q.isel(step=-1).values, Q.sel(step=10).values
    np.testing.assert_array_equal(stored_state(str(path), 16), np.tile(last, (2, 2)))
    np.testing.assert_array_equal(stored_state(f"{path}:10", 12), np.tile(first, (2, 2))[:12, :12])
    assert stored_state(str(path), 8).shape == (8, 8)


def test_scaling_benchmark_picks_the_frame_that_tiles_without_a_seam(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import state_for_size

    from cdwdata.quench import QuenchConfig, run_quench

    specs = []
    for L in (8, 12):
        path = tmp_path / f"q{L}.zarr"
        run_quench(QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=10,
                                save_every=10, seed=3, forcefield="tdgl"), path, progress=False)
        specs.append(f"{path}:10")
    assert state_for_size(specs, 8) == specs[0]
    assert state_for_size(specs, 12) == specs[1]
    assert state_for_size(specs, 24) == specs[1]  # both divide: the larger frame
    assert state_for_size(specs, 16) == specs[0]
    assert state_for_size(specs, 10) == specs[0]  # none divides: the first, cropped


def test_scaling_benchmark_measures_batched_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import measure

    row = measure(8, "holstein-gc-v12", "cpu", repeat=1, steps=1, runs=2)
    assert row["runs"] == 2 and row["sites"] == 2 * 64 and row["finite"]
    assert row["step_per_site_ns"] > 0 and row["frame_write_s"] > 0


def test_compile_benchmark_measures_the_eager_parts():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_compile import measure

    row = measure(8, blocks=1, compile_=False)
    assert row["sites"] == 64 and row["levels"] > 0
    assert set(row["times"]) == {"descriptor_workspace", "descriptor_eager",
                                 "fermi_eager_chunked"}
    assert all(v["median_ms"] > 0 for v in row["times"].values())


def test_scaling_benchmark_interleaves_sizes_in_one_process():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import interleaved

    res = interleaved([8, 12], "holstein-gc-v12", "cpu", repeat=2, states=None, warmup=1,
                      budget_s=0.01)
    rows = {r["L"]: r for r in res["rows"]}
    assert rows[12]["ratio_to_largest"] == 1.0
    for r in rows.values():
        assert len(r["blocks_ns"]) == 2 and r["steps_per_block"] >= 1
        assert 0 < r["step_per_site_ns_min"] <= r["step_per_site_ns_median"]


def test_quench_cost_times_the_quench_that_cdw_quench_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quench_cost import measure

    from cdwdata import store
    from cdwdata.quench import QuenchConfig, run_quench

    rep, state = measure("holstein-gc-v12", 8, 120, seed=5, bare_every=50, bare_repeat=1,
                         windows=(0.0, 5.0, 20.0), return_state=True)
    assert [r["t"] for r in rep["windows"]] == [[0.0, 5.0], [5.0, 20.0]]
    assert [r["steps"] for r in rep["windows"]] == [100, 20]
    assert rep["whole_quench"]["steps"] == 120
    for row in [*rep["windows"], rep["whole_quench"]]:
        assert row["cost_ratio"] > 0 and 0.0 <= row["refined_share"] <= 1.0
        assert row["force_mean_s"] < row["step_mean_s"]
    # the timed run is the quench itself: same seed, same bits as `cdw quench`
    path = tmp_path / "q.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=120,
                            save_every=120, seed=5, forcefield="holstein-gc-v12",
                            compute_dtype="float32", frame_vars=("Q",)), path,
               progress=False)
    Q = store.open_dataset(path)["Q"].isel(T=0, f=0, run=0).sel(step=120).values
    np.testing.assert_array_equal(state.Q[0].numpy(), Q)


def test_force_cost_parts_of_a_warm_level_model_call():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_force_cost import coarsened_state, warm_parts

    from cdwdata.ml import load_model

    ff = load_model("holstein-gc-v12", f=0.5, T=0.1)
    Q = torch.as_tensor(coarsened_state(16), dtype=torch.float32)[None]
    _, _, mu = ff.evaluate_with_mu(Q)
    parts = warm_parts(ff, Q, mu, repeat=1, t_warm=1.0)
    assert set(parts) == {"descriptor", "network", "refined_density_and_slope", "rest"}
    assert parts["descriptor"] > 0 and all(v >= 0 for v in parts.values())
    assert sum(parts.values()) >= 1.0 - 1e-12  # the rest closes the sum
