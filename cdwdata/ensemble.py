"""Dask distribution of independent work: ED training samples and quench segments.

A segment is one (T, f, run) of a trajectory store; segments never share a zarr chunk, so
workers write concurrently without coordination. Tasks receive paths and small configs, never
large arrays or models; each worker builds (and caches) its own force field.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import lru_cache

#: Where the dashboard listens by default: localhost only.
DASHBOARD_ADDRESS = "127.0.0.1:0"


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None,
                threads_per_worker: int = 1) -> Iterator:
    """Connect to ``scheduler`` or start a LocalCluster sized to this machine.

    The local cluster uses processes with one thread each (torch and BLAS get one thread per
    worker) and binds the scheduler and dashboard to 127.0.0.1.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    n = n_workers or max(1, min(os.cpu_count() or 1, 8))
    cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                           host="127.0.0.1", dashboard_address=DASHBOARD_ADDRESS,
                           silence_logs=40)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _set_threads() -> None:
    import torch

    want = int(os.environ.get("CDW_TORCH_THREADS", "1"))
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


@lru_cache(maxsize=8)
def _cached_forcefield(spec: str, T: float, f: float, params_json: str, device: str):
    import json

    from cdwdata.params import HolsteinParams
    from cdwdata.quench import make_forcefield

    return make_forcefield(spec, T, f, HolsteinParams(**json.loads(params_json)), device)


def segment_task(path: str, config, it: int, jf: int, runs: list[int]) -> int:
    """Worker side: advance ``runs`` of cell (it, jf) in the store at ``path``."""
    import json

    from cdwdata.quench import run_segment

    _set_threads()
    ff = _cached_forcefield(config.forcefield, config.temperatures[it], config.fillings[jf],
                            json.dumps(config.params.to_dict(), sort_keys=True), config.device)
    return run_segment(path, config, it, jf, runs, forcefield=ff, progress=False)


def run_segments(client, path: str, config, runs_per_task: int = 1, progress: bool = True):
    """Submit one task per (T, f, group of runs) and wait; returns the steps taken."""
    from distributed import as_completed

    futures = []
    for it in range(len(config.temperatures)):
        for jf in range(len(config.fillings)):
            for start in range(0, config.runs, runs_per_task):
                runs = list(range(start, min(start + runs_per_task, config.runs)))
                futures.append(client.submit(segment_task, str(path), config, it, jf, runs,
                                             pure=False, retries=2))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc="segments", unit="segment")
    total = 0
    for fut in as_completed(futures):
        total += fut.result()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return total
