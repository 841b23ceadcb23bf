"""Dask clusters and quench ensembles: the cluster every Dask job of cdwdata runs on.

:func:`dask_client` starts (or connects to) the cluster that quench ensembles (here), ED
training sets (:mod:`cdwdata.trainset`) and grand-canonical training sets
(:mod:`cdwdata.gcdata`) farm their tasks out to; :func:`blas_threads` keeps numpy's BLAS at
one thread where ED runs in-process; :func:`run_ensemble` runs the quench segments.

A segment is a group of runs of one (T, f) cell of a trajectory store (one run per task on
CPUs; several runs batched per task on a GPU). Segments never share a zarr chunk, so workers
write concurrently without coordination. Tasks receive paths and small configs, never large
arrays or models; each worker builds (and caches) its own force field, so a model is loaded
once per worker.

One writer per store: :func:`run_ensemble` (the coordinating process) holds the store's writer
lock (:mod:`cdwdata.storelock`) while its tasks run; workers, on this node or others, take no
lock and write only the chunks of the runs they were given, never metadata. A resume first
verifies the store (:func:`cdwdata.store.verify`) and recomputes damaged runs.

Clusters
--------
* default: a ``LocalCluster`` sized to this machine (one single-threaded worker process per
  core, scheduler and dashboard bound to 127.0.0.1);
* ``device="cuda"``: one worker per visible GPU, each pinned to its GPU with
  ``CUDA_VISIBLE_DEVICES`` and advertising the resource ``GPU=1``; every quench task asks for
  ``resources={"GPU": 1}``, so each GPU runs one task at a time (Dask resources are only
  bookkeeping: the pinning is done by ``CUDA_VISIBLE_DEVICES``);
* ``scheduler="tcp://host:port"``: an existing cluster (e.g. dask-jobqueue on SLURM); for GPU
  runs start its workers with ``--resources GPU=1`` and one GPU each.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from cdwdata.errors import CdwError, ParameterError
from cdwdata.storelock import writes_store

#: Where the dashboard listens by default: localhost only.
DASHBOARD_ADDRESS = "127.0.0.1:0"
#: Lattice sites batched into one GPU task by default (runs_per_task = this // L**2).
GPU_SITES_PER_TASK = 1 << 21


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per core, at most one per GiB of memory (each worker imports torch)."""
    n = _cpu_count()
    try:
        import psutil

        n = min(n, max(1, int(psutil.virtual_memory().total // 2**30)))
    except ImportError:  # pragma: no cover - psutil comes with distributed
        pass
    return max(1, n)


def gpu_worker_specs(gpu_ids, threads: int = 1) -> dict[str, dict[str, Any]]:
    """SpecCluster worker specs: one Nanny per GPU id, pinned with CUDA_VISIBLE_DEVICES."""
    from distributed import Nanny

    return {
        f"gpu-{gid}": {"cls": Nanny, "options": {
            "nthreads": threads, "host": "127.0.0.1", "resources": {"GPU": 1},
            "preload": PRELOAD,
            "env": {"CUDA_VISIBLE_DEVICES": str(gid), "CDW_TORCH_THREADS": str(threads)}}}
        for gid in gpu_ids
    }


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


#: Worker preload (this module's :func:`dask_setup`) of the clusters :func:`dask_client` starts.
PRELOAD = [__name__]


def dask_setup(worker=None) -> None:
    """Dask preload hook, run in every local worker process: ignore SIGINT there.

    A Ctrl-C in a terminal reaches every process of the job; only the coordinating process
    should react (it cancels the tasks and shuts the cluster down), instead of each worker
    printing its own traceback.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ignore SIGINT while the local cluster starts, so that worker processes inherit the
    ignored signal: a Ctrl-C never reaches them, not even while they import, and the
    coordinating process alone shuts everything down. Here the signal is also blocked
    meanwhile, so a Ctrl-C during start-up usually stays pending (Linux keeps blocked signals
    even when ignored) and arrives once the cluster is up; it is lost if the kernel hands it
    to another thread (zarr's I/O thread), and then a second Ctrl-C stops the job."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if blocked else None
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _close_quietly(*closables, failing: bool) -> None:
    """Close client and cluster; while an error (or Ctrl-C) is on its way out, errors of the
    shutdown itself (a worker still starting) must not replace it."""
    for obj in closables:
        if failing:
            with contextlib.suppress(Exception):
                obj.close()
        else:
            obj.close()


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None,
                threads_per_worker: int = 1, device: str = "cpu") -> Iterator:
    """Connect to ``scheduler`` or start a local cluster sized to this machine.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:port``); default: a local cluster.
    n_workers : int, optional
        Local workers (default: one per core, or one per visible GPU with ``device="cuda"``).
    device : str
        ``"cuda"`` starts one worker per GPU, pinned with ``CUDA_VISIBLE_DEVICES`` and
        advertising ``GPU=1``.

    The local cluster uses processes with one thread each (torch and BLAS get one thread per
    worker) and binds the scheduler and dashboard to 127.0.0.1.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    if str(device).startswith("cuda"):
        from distributed import Scheduler, SpecCluster

        gpus = _visible_gpus()
        if not gpus:
            raise ParameterError("device='cuda' but no CUDA GPU is visible here; use "
                                 "--device cpu or --scheduler with GPU workers")
        gpus = gpus[:n_workers] if n_workers else gpus
        with _sigint_deferred():
            cluster = SpecCluster(
                workers=gpu_worker_specs(gpus, threads_per_worker),
                scheduler={"cls": Scheduler, "options": {
                    "host": "127.0.0.1", "dashboard_address": DASHBOARD_ADDRESS}},
                silence_logs=40)
    else:
        with _sigint_deferred(), dask.config.set(
                {"distributed.nanny.pre-spawn-environ": worker_environ()}):
            cluster = LocalCluster(n_workers=n_workers or default_workers(),
                                   threads_per_worker=threads_per_worker, processes=True,
                                   host="127.0.0.1", dashboard_address=DASHBOARD_ADDRESS,
                                   silence_logs=40, preload=PRELOAD)
    failing = True
    try:
        client = Client(cluster)
    except BaseException:
        _close_quietly(cluster, failing=True)
        raise
    try:
        yield client
        failing = False
    finally:
        _close_quietly(client, cluster, failing=failing)


def worker_environ() -> dict:
    """Environment of local worker processes: dask's, without its heap-trim threshold.

    dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` so that workers of dataframe jobs hand
    freed memory back to the OS at once. A Langevin worker holds a steady working set and
    frees the descriptor's temporaries every step; with that setting glibc unmaps and remaps
    them each time (measured: 22k page faults and 2.4x the descriptor time per 200x200 step,
    benchmarks/README.md). Without it glibc keeps its default, adaptive thresholds.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


def _openblas_libs():
    """ctypes handles of the OpenBLAS libraries loaded in this process (Linux only)."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:  # pragma: no cover - not Linux
        return []
    libs = []
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:  # pragma: no cover
            continue
    return libs


def blas_threads(n: int | None = None) -> int | None:
    """Get (and with ``n``, set) the thread count of numpy's OpenBLAS; returns the old count.

    Worker processes of a LocalCluster start with one BLAS thread; a process that computes ED
    forces on a shared machine (tests, in-process clients) should do the same: OpenBLAS
    threads that spin on a busy core make small eigensolves 20x slower. Returns None when no
    OpenBLAS is found (then nothing is changed).
    """
    import ctypes

    old = None
    for lib in _openblas_libs():
        for suffix in ("64_", "_64_", ""):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None) or \
                getattr(lib, f"openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None) or \
                getattr(lib, f"openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                old = int(get()) if old is None else old
                if n is not None:
                    put(ctypes.c_int(int(n)))
                break
    return old


def _set_threads() -> None:
    import torch

    want = int(os.environ.get("CDW_TORCH_THREADS", "1"))
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)
    blas_threads(want)


@lru_cache(maxsize=8)
def _cached_forcefield(spec: str, T: float, f: float, params_json: str, device: str,
                       dtype: str | None = None, precision: str = "float32",
                       compile: bool = False):
    from cdwdata.params import HolsteinParams
    from cdwdata.quench import make_forcefield

    return make_forcefield(spec, T, f, HolsteinParams(**json.loads(params_json)), device, dtype,
                           precision, compile)


def worker_forcefield(config, it: int, jf: int):
    """This worker's cached force field of cell (it, jf): electrons at the cell's T."""
    from cdwdata.quench import is_ml

    ml = is_ml(config.forcefield)
    return _cached_forcefield(config.forcefield, config.temperatures[it], config.fillings[jf],
                              json.dumps(config.params.to_dict(), sort_keys=True),
                              str(config.device), config.compute_dtype if ml else None,
                              config.precision, config.compile)


def segment_task(path: str, config, it: int, jf: int, runs: list[int]) -> int:
    """Worker side: advance ``runs`` of cell (it, jf) in the store at ``path``."""
    from cdwdata.quench import run_segment

    _set_threads()
    ff = worker_forcefield(config, it, jf)
    return run_segment(path, config, it, jf, runs, forcefield=ff, progress=False)


def default_runs_per_task(config) -> int:
    """1 on CPU (one task per run); on a GPU, as many runs as fit ``GPU_SITES_PER_TASK``."""
    if not str(config.device).startswith("cuda"):
        return 1
    return max(1, min(config.runs, GPU_SITES_PER_TASK // (config.L * config.L)))


def _check_gpu_workers(client) -> None:
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed lists every worker anyway
        workers = client.scheduler_info()["workers"]
    if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        raise ParameterError(
            "device='cuda' needs Dask workers that advertise the GPU resource (none of the "
            f"{len(workers)} workers does): start them with `--resources GPU=1` and one GPU "
            "each (CUDA_VISIBLE_DEVICES), or omit --scheduler to get a local GPU cluster")


def segments(config, runs_per_task: int, frames_done=None) -> list[tuple[int, int, list[int]]]:
    """(it, jf, runs) of every task; runs already complete (``frames_done``) are skipped."""
    out = []
    n_frames = config.n_frames
    for it in range(len(config.temperatures)):
        for jf in range(len(config.fillings)):
            for start in range(0, config.runs, runs_per_task):
                runs = list(range(start, min(start + runs_per_task, config.runs)))
                if frames_done is not None and all(frames_done[it, jf, r] >= n_frames
                                                   for r in runs):
                    continue
                out.append((it, jf, runs))
    return out


def run_segments(client, path: str, config, runs_per_task: int = 1, progress: bool = True,
                 poll: float = 1.0) -> int:
    """Submit one task per (T, f, group of runs), wait, and return the steps taken.

    The progress bar counts frames written (read from the store's ``frames_done``). A failing
    task does not stop the others; once all have finished, the first error is raised again
    (with the number of failed tasks), and every frame written so far stays in the store.
    """
    from distributed import wait

    from cdwdata import store

    resources = None
    if str(config.device).startswith("cuda"):
        resources = {"GPU": 1}
        _check_gpu_workers(client)
    todo = segments(config, runs_per_task, store.frames_done(path))
    n_runs = len(config.temperatures) * len(config.fillings) * config.runs
    poll = max(poll, n_runs / 1000)  # polling frames_done reads one tiny chunk per run
    futures = [client.submit(segment_task, str(path), config, it, jf, runs, pure=False,
                             retries=1, resources=resources)
               for it, jf, runs in todo]
    bar = None
    n_frames = config.n_frames
    total_frames = len(config.temperatures) * len(config.fillings) * config.runs * n_frames
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_frames, desc=f"{len(futures)} segments", unit="frame",
                   smoothing=0.05)
        bar.update(int(store.frames_done(path).sum()))
    steps, errors = 0, []
    pending = set(futures)
    try:
        while pending:
            try:
                wait(list(pending), timeout=poll, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            for fut in [f for f in pending if f.done()]:
                pending.discard(fut)
                if fut.status == "error":
                    errors.append(fut.exception())
                else:
                    steps += fut.result()
            if bar is not None:
                bar.update(int(store.frames_done(path).sum()) - bar.n)
    except BaseException:
        client.cancel(list(pending))
        raise
    finally:
        if bar is not None:
            bar.close()
    if errors:
        err = errors[0]
        if len(errors) > 1 and isinstance(err, CdwError):
            raise type(err)(f"{len(errors)} of {len(futures)} tasks failed; the first: "
                            f"{err}") from err
        raise err
    return steps


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """The JSON-representable entries of a force field's attrs (others as strings)."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[str(k)] = v
        except (TypeError, ValueError):
            out[str(k)] = str(v)
    return out


def _check_same_model(path, stored: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed ML run must use the very model files it was started with (hash check)."""
    from cdwdata.errors import StoreError

    for f, attrs in now.items():
        for key, value in attrs.items():
            if "sha256" in key and key in stored.get(f, {}) and stored[f][key] != value:
                raise StoreError(
                    f"cannot resume {path}: the force field of f={f} changed since the store "
                    f"was made ({key} {stored[f][key][:12]}... -> {str(value)[:12]}...); "
                    "resume with the original model file or start a new store")


@writes_store()
def run_ensemble(config, path, *, client=None, scheduler: str | None = None,
                 n_workers: int | None = None, resume: bool = False, overwrite: bool = False,
                 command: str | None = None, progress: bool = True,
                 runs_per_task: int | None = None, check_forcefield: bool = True) -> str:
    """Create (or resume, or grow) the store of ``config`` at ``path`` and run it on Dask.

    Parameters
    ----------
    config : QuenchConfig
    client : distributed.Client, optional
        Use this client; otherwise connect to ``scheduler`` or start a local cluster.
    resume : bool
        Continue every unfinished run from its last written frame; a ``config.runs`` larger
        than the store's adds runs (existing ones are untouched).
    runs_per_task : int, optional
        Runs batched in one task (default: the store's, else :func:`default_runs_per_task`).
        Keep it when resuming ML runs: the batch shapes the floating-point rounding.
    check_forcefield : bool
        Build the force field of every filling here first (on CPU), so a bad model name or
        a model for other parameters fails before any store is touched.

    Returns
    -------
    str
        The store path.
    """
    from cdwdata import store
    from cdwdata.quench import is_ml, make_forcefield, prepare_store

    extra: dict[str, Any] = {}
    if check_forcefield:
        ff_attrs = {}
        for f in config.fillings:
            ff = make_forcefield(config.forcefield, config.temperatures[0], f, config.params,
                                 "cpu", config.compute_dtype if is_ml(config.forcefield) else None,
                                 config.precision, config.compile)
            attrs = _jsonable(ff.attrs())
            if attrs.get("grand_canonical"):
                # its electrons run at each cell's bath temperature, not at the first T's
                attrs.pop("electron_T", None)
                attrs["electron_T_is_bath_T"] = 1
            ff_attrs[f"{f:g}"] = attrs
        extra["forcefield_attrs"] = ff_attrs
    old = store.read_attrs(path) if resume and store.exists(path) else None
    if old is not None:
        _check_same_model(path, old.get("forcefield_attrs", {}),
                          extra.get("forcefield_attrs", {}))
    if runs_per_task is None and old is not None:
        runs_per_task = old.get("runs_per_task")
    rpt = int(runs_per_task or default_runs_per_task(config))
    if rpt < 1:
        raise ParameterError(f"runs_per_task={rpt} must be >= 1")
    extra["runs_per_task"] = rpt
    prepare_store(path, config, resume=resume, overwrite=overwrite, command=command,
                  add_runs=True, extra_attrs=extra)
    ctx = contextlib.nullcontext(client) if client is not None else dask_client(
        scheduler, n_workers=n_workers, device=str(config.device))
    with ctx as cl:
        run_segments(cl, str(path), config, runs_per_task=rpt, progress=progress)
    if old is not None:  # a resume joins the history once it has succeeded
        store.append_history(path, config.attrs(command)["command"])
    return str(path)
