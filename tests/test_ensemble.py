"""Dask ensembles and ``cdw quench``: concurrent writers, adding runs, the CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from storecheck import assert_same, frames

from cdwdata import BlowUpError, HolsteinParams, ParameterError, store
from cdwdata.cli import main as cdw
from cdwdata.ensemble import gpu_worker_specs, run_ensemble, run_segments, segments
from cdwdata.quench import QuenchConfig, prepare_store, run_quench


def harmonic(T, f, params, device):
    """Elastic force without electrons (see tests/test_quench.py)."""
    from cdwdata.forcefields import ForceField

    class Harmonic(ForceField):
        name = "harmonic"

        def __init__(self):
            self.f, self.params = f, params

        def evaluate(self, Q):
            nb = (torch.roll(Q, 1, -1) + torch.roll(Q, -1, -1) + torch.roll(Q, 1, -2)
                  + torch.roll(Q, -1, -2))
            return -params.k * Q - params.kappa * nb, f + 0.1 * Q

    return Harmonic()


HARMONIC = f"{__name__}:harmonic"


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded in-process workers behind a TCP scheduler (fast to start)."""
    from distributed import Client, LocalCluster

    cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, host="127.0.0.1",
                      protocol="tcp", dashboard_address="127.0.0.1:0")
    client = Client(cl)
    yield client
    client.close()
    cl.close()


def _config(**kw) -> QuenchConfig:
    base = dict(L=8, temperatures=(0.1, 0.2), fillings=(0.5,), runs=3, steps=10,
                save_every=5, seed=3, forcefield="ed", frame_vars=("Q", "n"))
    base.update(kw)
    return QuenchConfig(**base)


def test_two_workers_write_one_store_and_match_a_single_process(tmp_path, cluster):
    config = _config()
    path = tmp_path / "dask.zarr"
    run_ensemble(config, path, client=cluster, progress=False)
    got = frames(path)
    assert (got["frames_done"] == config.n_frames).all()
    assert np.isfinite(got["Q"]).all() and np.isfinite(got["n"]).all()
    assert store.read_attrs(path)["runs_per_task"] == 1
    ref = tmp_path / "serial.zarr"
    run_quench(config, ref, progress=False)
    assert_same(got, frames(ref))


def test_batched_tasks_and_resume_on_dask(tmp_path, cluster):
    config = _config(forcefield=HARMONIC, steps=20, runs=4, temperatures=(0.1,))
    ref = tmp_path / "ref.zarr"
    run_quench(config, ref, progress=False)
    path = tmp_path / "dask.zarr"
    prepare_store(path, config)
    from cdwdata.quench import run_segment

    class Kill(Exception):
        pass

    def kill(frame, runs):
        if frame == 2:
            raise Kill

    with pytest.raises(Kill):
        run_segment(path, config, 0, 0, runs=[2, 3], on_frame=kill)
    run_ensemble(config, path, client=cluster, resume=True, progress=False, runs_per_task=2)
    assert_same(frames(path), frames(ref))


def test_adding_runs_on_dask_leaves_existing_runs(tmp_path, cluster):
    small = _config(runs=1, forcefield=HARMONIC)
    path = tmp_path / "grow.zarr"
    run_ensemble(small, path, client=cluster, progress=False)
    before = frames(path)
    big = small.replace(runs=3)
    run_ensemble(big, path, client=cluster, resume=True, progress=False)
    after = frames(path)
    for name in ("Q", "n", "frames_done", "seed"):
        np.testing.assert_array_equal(after[name][:, :, :1], before[name], err_msg=name)
    fresh = tmp_path / "fresh.zarr"
    run_ensemble(big, fresh, client=cluster, progress=False)
    assert_same(after, frames(fresh))


def test_blowup_on_a_worker_is_reported(tmp_path, cluster):
    config = _config(forcefield=HARMONIC, runs=2, steps=1000, save_every=200,
                     params=HolsteinParams(dt=5.0))
    path = tmp_path / "boom.zarr"
    with pytest.raises(BlowUpError, match="4 of 4 tasks failed"):
        run_ensemble(config, path, client=cluster, progress=False)
    done = store.frames_done(path)
    assert (done >= 1).all() and (done < config.n_frames).all()


def test_gpu_runs_need_gpu_workers(tmp_path, cluster):
    config = _config(device="cuda", runs=1)
    path = tmp_path / "gpu.zarr"
    prepare_store(path, config)
    with pytest.raises(ParameterError, match="GPU=1"):
        run_segments(cluster, str(path), config, progress=False)


def test_gpu_workers_are_pinned_one_gpu_each():
    specs = gpu_worker_specs(["0", "3"])
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "3"]
    assert all(s["options"]["resources"] == {"GPU": 1} for s in specs.values())


def test_segments_skip_complete_runs():
    config = _config(runs=5)
    done = np.zeros((2, 1, 5), int)
    done[0, 0, :2] = config.n_frames
    todo = segments(config, 2, done)
    assert (0, 0, [0, 1]) not in todo and (0, 0, [2, 3]) in todo and (1, 0, [4]) in todo
    assert len(todo) == 5


def _cli(*args) -> int:
    return cdw(["quench", *map(str, args)])


def test_cli_quench_end_to_end(tmp_path, cluster, capsys):
    out = tmp_path / "q.zarr"

    def new_store(path, runs):
        return ["--L", 8, "--T", 0.1, 0.2, "--f", 0.5, "--runs", runs, "--steps", 10,
                "--save-every", 5, "--model", "ed", "--out", path, "--scheduler",
                cluster.scheduler.address, "--no-progress"]

    base = new_store(out, 2)
    assert _cli(*base) == 0
    assert "2/2" not in capsys.readouterr().err
    ds = store.open_dataset(out)
    assert dict(ds.sizes) == {"T": 2, "f": 1, "run": 2, "step": 3, "x": 8, "y": 8}
    assert set(ds.data_vars) == {"Q", "n", "mu", "frames_done"}
    assert ds.Q.dtype == np.float32 and np.isfinite(ds.Q.values).all()
    attrs = ds.attrs
    assert attrs["forcefield"] == "ed" and attrs["compute_dtype"] == "float64"
    assert attrs["command"].startswith("cdw ")
    assert cdw(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "4/4 runs complete" in info and "kind: trajectory" in info
    before = frames(out)

    # refuses to overwrite, data untouched
    assert _cli(*base) == 2
    assert "already exists" in capsys.readouterr().err
    assert_same(frames(out), before)

    # resume with other parameters is refused
    assert _cli("--out", out, "--resume", "--steps", 20, "--no-progress") == 2
    assert "cannot resume" in capsys.readouterr().err
    assert _cli("--out", out, "--resume", "--g", 3.0, "--no-progress") == 2
    assert "params_json" in capsys.readouterr().err

    # --resume alone takes every setting from the store; --add-runs grows it
    assert _cli("--out", out, "--resume", "--add-runs", 1, "--scheduler",
                cluster.scheduler.address, "--no-progress") == 0
    after = frames(out)
    assert after["Q"].shape[2] == 3 and (after["frames_done"] == 3).all()
    np.testing.assert_array_equal(after["Q"][:, :, :2], before["Q"])
    fresh = tmp_path / "fresh.zarr"
    assert _cli(*new_store(fresh, 3)) == 0
    assert_same(after, frames(fresh))


def test_cli_rejects_bad_combinations(tmp_path):
    out = tmp_path / "q.zarr"
    assert _cli("--out", out, "--add-runs", 2, "--model", "ed") == 2
    assert _cli("--out", out, "--L", 7, "--model", "ed") == 2
    assert not out.exists()


def test_cli_tdgl_model(tmp_path, cluster):
    out = tmp_path / "tdgl.zarr"
    rc = _cli("--L", 8, "--runs", 1, "--steps", 10, "--save-every", 5, "--model", "tdgl",
              "--out", out, "--scheduler", cluster.scheduler.address, "--no-progress")
    assert rc == 0
    assert store.read_attrs(out)["forcefield"] == "tdgl"


def test_cli_default_local_cluster(tmp_path, capsys):
    """The default path: a LocalCluster of worker processes on 127.0.0.1."""
    out = tmp_path / "local.zarr"
    assert _cli("--L", 8, "--runs", 2, "--steps", 10, "--save-every", 5, "--model", "ed",
                "--workers", 1, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "2/2 runs complete" in printed
    assert printed.strip().splitlines()[-1] == f"next: cdw analyze {out}"
    assert (store.frames_done(out) == 3).all()


def _save_random_model(path, seed: int, f: float = 0.5):
    from cdwdata.ml import modelfile
    from cdwdata.ml.model import ForceModel

    torch.manual_seed(seed)
    model = ForceModel().float().eval()
    modelfile.save(model, path, {"params": HolsteinParams().to_dict(), "filling": f,
                                 "electron_T": 0.1}, overwrite=True)


def test_cli_ml_model_path_float32_and_resume(tmp_path, cluster, capsys):
    """The ML path end to end with a randomly initialised paper-architecture model file."""
    model = tmp_path / "models" / "toy-f0.5"
    _save_random_model(model, seed=0)
    out = tmp_path / "ml.zarr"
    args = ["--L", 8, "--runs", 2, "--steps", 10, "--save-every", 5, "--model", model,
            "--out", out, "--scheduler", cluster.scheduler.address, "--no-progress"]
    assert _cli(*args) == 0
    attrs = store.read_attrs(out)
    assert attrs["compute_dtype"] == "float32" and attrs["model"] == str(model)
    assert attrs["forcefield_attrs"]["0.5"]["model_weights_sha256"]
    ds = store.open_dataset(out)
    assert ds.Q.dtype == np.float32 and np.isfinite(ds.n.values).all()
    ref = frames(out)
    # a resumed ML run equals the uninterrupted one
    store.TrajectoryWriter(out).mark_frames_done(0, 0, [0, 1], 2)
    assert _cli("--out", out, "--resume", "--scheduler", cluster.scheduler.address,
                "--no-progress") == 0
    assert_same(frames(out), ref)
    # ... and refuses a model file that changed since
    _save_random_model(model, seed=1)
    store.TrajectoryWriter(out).mark_frames_done(0, 0, [0, 1], 2)
    assert _cli("--out", out, "--resume", "--no-progress") == 2
    assert "changed since" in capsys.readouterr().err


def test_a_grand_canonical_t_scan_runs_and_is_checked_at_each_bath_temperature(tmp_path,
                                                                               cluster):
    from cdwdata import ed
    from cdwdata.ml import kpmcheck

    out = tmp_path / "tscan.zarr"
    assert _cli("--L", 12, "--T", 0.1, 0.3, "--runs", 1, "--steps", 20, "--save-every", 20,
                "--frame-vars", "Q", "n", "--out", out,
                "--scheduler", cluster.scheduler.address, "--no-progress") == 0
    attrs = store.read_attrs(out)["forcefield_attrs"]["0.5"]
    assert "electron_T" not in attrs and attrs["electron_T_is_bath_T"] == 1
    res = kpmcheck.check_store(out, tol=1e-5)
    ds = store.open_dataset(out)
    for T in (0.1, 0.3):
        cell = ds.sel(T=T, f=0.5, run=0, step=20)
        Q = cell["Q"].values.astype(float)
        dn = cell["n"].values.astype(float) - ed.density_at(Q, float(cell["mu"]), T)
        got = float(res.sel(T=T, f=0.5, run=0, step=20)["n_rmse"])
        assert abs(got - np.sqrt((dn ** 2).mean())) < 1e-5
    # the model re-evaluated at the stored mu, at each cell's T (a refined model plans per T)
    again = kpmcheck.check_store(out, tol=1e-5, source="model")
    assert np.allclose(again["n_rmse"].values, res["n_rmse"].values, atol=1e-3)
