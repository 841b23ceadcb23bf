"""SIGKILL at random points, then ``--resume``: the result equals an uninterrupted run.

Each test makes the reference with the same ``cdw`` command line in this process, then runs
the command as a subprocess in its own session, kills the whole process group at seeded
random points (:func:`soak.run_with_kills`), checks after every kill that the resume marker
never counts a frame that is not completely written (every frame below ``frames_done`` /
every sample with ``sample_done`` is finite and equal to the reference bit for bit), resumes,
and compares every array of the finished store with the reference bit for bit.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soak

from cdwdata import store

pytestmark = pytest.mark.reliability

TRAJ = ["--L", "8", "--seed", "5", "--no-progress", "--f", "0.5"]


def _soak(tmp_path, job: soak.Job, kills: int, seed: int) -> soak.SoakResult:
    ref = tmp_path / "ref.zarr"
    soak.make_reference(job, ref, tmp_path)
    res = soak.run_with_kills(job, ref, kills, np.random.default_rng(seed), tmp_path,
                              timeout=120)
    assert res.interruptions + res.completed_early >= 1
    assert res.interruptions >= 1, "no round was interrupted"
    assert res.final_frames == soak.total_progress(job, ref)
    return res


def test_ed_quench_killed_and_resumed_equals_uninterrupted(tmp_path):
    job = soak.Job("ed-quench", [*TRAJ, "--T", "0.1", "0.2", "--runs", "2", "--steps", "48",
                                 "--save-every", "3"], tmp_path / "q.zarr")
    _soak(tmp_path, job, kills=1, seed=11)  # tests/reliability/test_soak.py kills it 3 times


def test_ed_dataset_killed_and_resumed_equals_uninterrupted(tmp_path):
    """Dask LocalCluster (driver, nanny and worker processes): the whole group is killed."""
    job = soak.Job("ed-dataset", ["--L", "8", "--seed", "2", "--no-progress", "--f", "0.5",
                                  "--T", "0.1", "--random", "8", "--quench-runs", "2",
                                  "--quench-steps", "30", "--quench-save-every", "3",
                                  "--workers", "1"], tmp_path / "ts.zarr")
    _soak(tmp_path, job, kills=1, seed=12)
    assert store.read_attrs(job.out)["kind"] == "training-set"


def test_quench_model_ed_killed_and_resumed_equals_uninterrupted(tmp_path):
    job = soak.Job("quench", [*TRAJ, "--T", "0.1", "--runs", "2", "--steps", "30",
                              "--save-every", "3", "--model", "ed", "--workers", "1"],
                   tmp_path / "mq.zarr")
    _soak(tmp_path, job, kills=1, seed=13)


def test_a_store_with_missing_array_metadata_is_refused_and_untouched(tmp_path, tiny_store,
                                                                       cdw):
    """Arrays without their ``zarr.json`` (what a concurrent ``--overwrite`` once did to a
    store being written; creation itself is atomic now): ``--resume`` refuses with one line
    naming the missing arrays, and touches nothing."""
    from conftest import TINY_ARGS, tree_hash

    path = tmp_path / "partial.zarr"
    shutil.copytree(tiny_store, path)
    for name in ("frames_done", "checkpoint/step"):
        shutil.rmtree(path / name)
    before = tree_hash(path)
    rc, out, err = cdw("ed-quench", *TINY_ARGS, "--out", path, "--resume")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err and "checkpoint/step, frames_done" in err and "--overwrite" in err
    assert tree_hash(path) == before


def test_ed_dataset_resume_reads_each_done_marker_once_per_filling(tmp_path, monkeypatch):
    """Resuming a training set used to re-read the whole ``sample_done`` array for every
    random sample (n_random x n_samples chunk reads per filling)."""
    from distributed import Client, LocalCluster

    from cdwdata.trainset import TrainsetConfig, generate

    config = TrainsetConfig(L=4, fillings=(0.5, 0.4), T=0.1, n_random=12, quench_runs=0)
    reads = []
    real = store.TrainsetWriter.done
    monkeypatch.setattr(store.TrainsetWriter, "done",
                        lambda self, jf: reads.append(jf) or real(self, jf))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        generate(tmp_path / "ts.zarr", config, client=client, progress=False,
                 samples_per_task=4)
    tasks = 2 * 3  # two fillings, 12 samples in tasks of 4
    assert len(reads) <= tasks + 2 * 2, f"{len(reads)} reads of sample_done"
    assert bool(np.asarray(store.open_dataset(tmp_path / "ts.zarr").sample_done).all())
