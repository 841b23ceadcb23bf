"""Training sets whose quenches are driven by an ML force field and labelled by ED."""

from __future__ import annotations

import numpy as np
import pytest

from cdwdata import ParameterError, ed, store
from cdwdata.trainset import TrainsetConfig, generate, quench_store_path

L = 8
SPEC = "holstein-f{f}"  # the shipped models; any even L


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _config(**kw) -> TrainsetConfig:
    base = dict(L=L, fillings=(0.5, 0.3), T=0.1, n_random=1, quench_runs=2, quench_steps=20,
                quench_save_every=10, quench_forcefield=SPEC)
    base.update(kw)
    return TrainsetConfig(**base)


@pytest.fixture(scope="module")
def ml_trainset(tmp_path_factory, client):
    path = tmp_path_factory.mktemp("ts") / "late.zarr"
    config = _config()
    generate(path, config, client=client, progress=False, command="test")
    return path, config


def test_ml_driven_snapshots_carry_exact_ed_labels(ml_trainset):
    path, config = ml_trainset
    ds = store.open_dataset(path)
    assert bool(np.asarray(ds.sample_done).all())
    assert ds.attrs["quench_forcefield"] == SPEC
    quench = np.asarray([str(s) for s in ds.source.values]) == "quench"
    assert quench.sum() == 4  # 2 runs x 2 snapshots
    traj = store.open_dataset(quench_store_path(path))
    for jf, f in enumerate(config.fillings):
        Q = ds.Q.isel(f=jf).values[quench]
        ref = ed.solve(Q, config.T, f, config.params)
        np.testing.assert_allclose(ds.F.isel(f=jf).values[quench], ref.F, atol=1e-10)
        np.testing.assert_allclose(ds.n.isel(f=jf).values[quench], ref.n, atol=1e-10)
        # the configurations are the ML trajectory's frames (frame 0, the hot start, skipped)
        frames = traj.Q.isel(T=0, f=jf).values[:, 1:].reshape(-1, L, L)
        np.testing.assert_array_equal(Q, frames)
        # ... and the trajectory's own forces were the model's, not the exact ones
        assert not np.allclose(traj.F.isel(T=0, f=jf).values[:, 1:].reshape(-1, L, L), ref.F,
                               atol=1e-6)


def test_ml_driven_trainset_resumes_without_redoing_labels(ml_trainset, client, monkeypatch):
    path, config = ml_trainset
    calls = []
    real = ed.solve
    monkeypatch.setattr(ed, "solve", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = store.open_dataset(path).F.values.copy()
    generate(path, config, client=client, resume=True, progress=False, command="test")
    assert not calls
    np.testing.assert_array_equal(store.open_dataset(path).F.values, before)


def test_resume_with_another_quench_driver_is_refused(ml_trainset, client):
    path, _ = ml_trainset
    with pytest.raises(store.StoreError, match="quench_forcefield"):
        generate(path, _config(quench_forcefield="ed"), client=client, resume=True,
                 progress=False)


@pytest.mark.parametrize("bad", ["tdgl", "", "pkg.mod:factory"])
def test_quench_driver_must_be_ed_or_an_ml_model(bad):
    with pytest.raises(ParameterError, match="quench_forcefield"):
        _config(quench_forcefield=bad)
