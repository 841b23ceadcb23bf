"""A Dask worker process SIGKILLed mid-ensemble: the ensemble still completes, every run once.

The cluster is a ``LocalCluster`` with two worker processes (each behind a nanny that restarts
it). While tasks run, a watcher thread waits until the store holds some but not all frames,
asks the scheduler which worker is processing a task, and SIGKILLs that worker's process.
The scheduler reschedules the lost task; it resumes its runs from their last complete frame.
The finished store must equal a serial, uninterrupted run bit for bit: no run missing or
duplicated, no frame missing, nothing written twice differently.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import soak

from cdwdata import store
from cdwdata.ensemble import run_ensemble
from cdwdata.quench import QuenchConfig, run_quench

pytestmark = pytest.mark.reliability


def _kill_a_busy_worker(client, path, n_frames: int, pids: dict, record: dict,
                        timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not record.get("stop"):
        try:
            done = store.frames_done(path)
        except Exception:  # store not created yet, or a marker chunk being written
            time.sleep(0.02)
            continue
        if done.sum() >= 2 and (done < n_frames).sum() >= 2:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if busy:
                worker = sorted(busy)[0]
                os.kill(pids[worker], signal.SIGKILL)
                record.update(worker=worker, keys=list(busy[worker]), frames_done=done.copy())
                return
        time.sleep(0.02)


def test_worker_killed_mid_ensemble_completes_each_run_once(tmp_path):
    from distributed import Client, LocalCluster

    config = QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=4, steps=90,
                          save_every=3, seed=21, forcefield="ed", frame_vars=("Q", "n"))
    ref = tmp_path / "ref.zarr"
    run_quench(config, ref, progress=False)
    path = tmp_path / "ens.zarr"
    record: dict = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2
        watcher = threading.Thread(target=_kill_a_busy_worker,
                                   args=(client, path, config.n_frames, pids, record))
        watcher.start()
        try:
            run_ensemble(config, path, client=client, progress=False)
        finally:
            record["stop"] = True
            watcher.join()
        assert "worker" in record, "the watcher never saw a worker processing a task"
        assert pids[record["worker"]] not in client.run(os.getpid).values(), \
            "the killed worker process is still there"
    assert record["frames_done"].sum() < config.runs * config.n_frames
    done = store.frames_done(path)
    assert done.shape == (1, 1, config.runs) and (done == config.n_frames).all()
    ds = store.open_dataset(path)
    np.testing.assert_array_equal(ds["seed"].values, config.seeds())
    assert len(np.unique(ds["seed"].values)) == config.runs
    np.testing.assert_array_equal(ds["run"].values, np.arange(config.runs))
    np.testing.assert_array_equal(ds["step"].values, np.arange(config.n_frames) * 3)
    soak.compare_stores(path, ref, attrs=False)
