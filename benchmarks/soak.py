"""Soak test: a cdw job SIGKILLed and resumed, raced by second writers, and its store damaged.

Usage::

    python benchmarks/soak.py [--command quench] [--kills 8] [--L 12] [--runs 4]
                              [--steps 400] [--save-every 4] [--workers 2] [--seed 0]
                              [--trials 4] [--writers 3] [--corrupt-rounds 4] [--damages 4]
                              [--json benchmarks/results/soak.json]

Procedure
---------
1. An uninterrupted reference store is made first, in this process, with the very same
   ``cdw`` command line (Dask commands use an in-process cluster through ``--scheduler``).
2. Each round starts ``cdw <command> ... [--resume]`` in a new session
   (``subprocess.Popen(start_new_session=True)``), waits until the store is completely
   created, draws a seeded random kill point (a progress target in frames or samples, then a
   random delay of up to half the time one unit of progress takes, so kills land between and
   inside frame writes), and SIGKILLs the whole process group (driver, Dask nanny and
   worker processes) with :func:`os.killpg`.
3. After every kill the store is checked: no process of the group survives, the resume
   marker (``frames_done`` / ``sample_done``) never decreases, and every frame (sample) it
   counts is finite and equal bit for bit to the reference: a partly written frame is never
   taken for a finished one.
4. After the last kill the job is resumed to the end and every array of the store (frames,
   checkpoints, markers, coordinates) must equal the reference bit for bit; attributes must
   agree except ``command``, ``history`` and ``created``.

5. Concurrent writers (:func:`run_concurrent`, ``--trials``, ``--writers``): second writers
   (``--resume``, ``--overwrite``) of a store being written must exit 2 naming the holder, and
   several ``--resume`` runs started at once after a kill must leave exactly one writing; the
   store then equals the reference.
6. Corruption (:func:`run_corruption`, ``--corrupt-rounds``, ``--damages``): chunks of a
   finished store are deleted, bit-flipped or truncated at seeded random; ``verify`` must find
   every damaged run, ``cdw analyze`` must refuse, and ``--resume`` must end equal to the
   reference bit for bit.

The machinery (:class:`Job`, :func:`make_reference`, :func:`run_with_kills`,
:func:`run_concurrent`, :func:`run_corruption`, :func:`verify_partial`,
:func:`compare_stores`) is also used by ``tests/reliability``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Store attrs that legitimately differ between a resumed and an uninterrupted run.
VOLATILE_ATTRS = ("command", "history", "created")
#: Thread settings for every cdw process: one BLAS/OpenMP thread (see cdwdata.ensemble).
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cdw_env() -> dict[str, str]:
    """Environment of the cdw subprocesses (single-threaded BLAS, no Python buffering)."""
    env = dict(os.environ)
    env.update(THREAD_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Job:
    """A ``cdw`` command line that writes one store.

    Attributes
    ----------
    command : str
        Subcommand: ``"ed-quench"``, ``"quench"`` or ``"ed-dataset"``.
    args : list of str
        Its arguments, without ``--out``, ``--resume`` and ``--scheduler``.
    out : Path
        The store it writes (a training set for ``ed-dataset``; its trajectories then live in
        the sibling ``<name>-quench.zarr``).
    """

    command: str
    args: list[str]
    out: Path

    @property
    def kind(self) -> str:
        return "trainset" if self.command == "ed-dataset" else "trajectory"

    @property
    def uses_dask(self) -> bool:
        return self.command in ("quench", "ed-dataset")

    def argv(self, out: Path | None = None, resume: bool = False,
             scheduler: str | None = None) -> list[str]:
        argv = [self.command, *self.args, "--out", str(out or self.out)]
        if resume:
            argv.append("--resume")
        if scheduler:
            argv += ["--scheduler", scheduler]
        return argv

    def stores(self, out: Path | None = None) -> dict[str, Path]:
        """The zarr stores the job writes, by role (``main`` and, for training sets, ``quench``)."""
        out = Path(out or self.out)
        if self.kind == "trainset":
            from cdwdata.trainset import quench_store_path

            return {"main": out, "quench": quench_store_path(out)}
        return {"main": out}


# --- reading stores --------------------------------------------------------------------------

def _group(path: Path):
    import zarr

    return zarr.open_group(str(path), mode="r")


def _arrays(group) -> list[str]:
    """Paths of every array of ``group``, subgroups (the checkpoint) included."""
    return sorted(name for name, node in group.members(max_depth=None)
                  if not hasattr(node, "members"))


def layout(job: Job, out: Path | None = None) -> set[tuple[str, str]]:
    """The ``zarr.json`` files of the job's stores, as (role, relative path) pairs."""
    files = set()
    for role, path in job.stores(out).items():
        if path.exists():
            files |= {(role, str(p.relative_to(path))) for p in path.rglob("zarr.json")}
    return files


def progress(job: Job, out: Path | None = None) -> int | None:
    """Frames (and samples) the resume markers count as done; None while not readable."""
    total = 0
    try:
        for role, path in job.stores(out).items():
            g = _group(path)
            name = "sample_done" if (job.kind == "trainset" and role == "main") else "frames_done"
            total += int(np.asarray(g[name][...]).sum())
    except Exception:  # a store being created, or a marker chunk being rewritten
        return None
    return total


def _float_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def compare_stores(got: Path, ref: Path, attrs: bool = True) -> int:
    """Assert every array (and attribute) of ``got`` equals ``ref`` bit for bit.

    Returns the number of arrays compared. Attributes in :data:`VOLATILE_ATTRS` are skipped;
    ``attrs=False`` skips all.
    """
    a, b = _group(got), _group(ref)
    names_a, names_b = _arrays(a), _arrays(b)
    assert names_a == names_b, f"{got}: arrays {names_a} != reference {names_b}"
    for name in names_b:
        x, y = np.asarray(a[name][...]), np.asarray(b[name][...])
        if x.dtype.kind in "fiub":
            assert _float_equal(x, y), f"{got}: array {name!r} differs from the reference"
        else:
            assert x.shape == y.shape and (x == y).all(), f"{got}: {name!r} differs"
    if not attrs:
        return len(names_b)
    attrs_a = {k: v for k, v in a.attrs.items() if k not in VOLATILE_ATTRS}
    attrs_b = {k: v for k, v in b.attrs.items() if k not in VOLATILE_ATTRS}
    diff = sorted(k for k in set(attrs_a) | set(attrs_b) if attrs_a.get(k) != attrs_b.get(k))
    assert not diff, f"{got}: attrs {diff} differ from the reference"
    return len(names_b)


def _check_trajectory(path: Path, ref: Path, prev: np.ndarray | None) -> tuple[int, np.ndarray]:
    g, r = _group(path), _group(ref)
    done = np.asarray(g["frames_done"][...])
    n_frames = int(r["frames_done"][...].max())
    assert (done >= 0).all() and (done <= n_frames).all(), f"{path}: frames_done {done}"
    if prev is not None:
        assert (done >= prev).all(), f"{path}: frames_done went back from {prev} to {done}"
    for name in r.attrs["frame_vars"]:
        x, y = np.asarray(g[name][...]), np.asarray(r[name][...])
        for idx in np.ndindex(done.shape):
            k = int(done[idx])
            xs, ys = x[idx][:k], y[idx][:k]
            assert np.isfinite(xs).all(), \
                f"{path}: {name} of run {idx} has non-finite values below frames_done={k}"
            assert _float_equal(xs, ys), \
                f"{path}: {name} of run {idx} differs from the reference below frames_done={k}"
    return int(done.sum()), done


def _check_trainset(path: Path, ref: Path, prev: np.ndarray | None) -> tuple[int, np.ndarray]:
    g, r = _group(path), _group(ref)
    done = np.asarray(g["sample_done"][...]).astype(bool)
    if prev is not None:
        assert (done >= prev).all(), f"{path}: a sample_done marker was cleared"
    for name in ("Q", "F", "n"):
        x, y = np.asarray(g[name][...])[done], np.asarray(r[name][...])[done]
        assert np.isfinite(x).all(), f"{path}: {name} of a done sample is not finite"
        assert _float_equal(x, y), f"{path}: {name} of a done sample differs from the reference"
    return int(done.sum()), done


def verify_partial(job: Job, ref: Path, prev: dict[str, np.ndarray] | None = None
                   ) -> tuple[int, dict[str, np.ndarray]]:
    """Check an interrupted store against the reference (see module docstring, step 3).

    Returns (frames and samples verified, markers to pass as ``prev`` next time).
    """
    prev = prev or {}
    verified, markers = 0, {}
    refs = job.stores(ref)
    for role, path in job.stores().items():
        if not path.exists():
            continue
        check = _check_trainset if (job.kind == "trainset" and role == "main") \
            else _check_trajectory
        n, markers[role] = check(path, refs[role], prev.get(role))
        verified += n
    return verified, markers


# --- running and killing ---------------------------------------------------------------------

def start(job: Job, resume: bool, cwd: Path, log: Path, overwrite: bool = False
          ) -> subprocess.Popen:
    """``cdw`` (as ``python -m cdwdata.cli``) in a new session, output appended to ``log``."""
    argv = job.argv(resume=resume) + (["--overwrite"] if overwrite else [])
    with open(log, "ab") as fh:
        fh.write(f"\n$ cdw {' '.join(argv)}\n".encode())
        fh.flush()
        return subprocess.Popen([sys.executable, "-m", "cdwdata.cli", *argv],
                                cwd=cwd, env=cdw_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    import psutil

    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def kill_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL the whole process group of ``proc`` and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while (alive := _group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"processes {alive} of the killed group are still running"


def total_progress(job: Job, ref: Path) -> int:
    n = progress(job, ref)
    assert n is not None, f"reference {ref} is not readable"
    return n


@contextlib.contextmanager
def _inprocess_scheduler(workers: int = 2) -> Iterator[str]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                           host="127.0.0.1", protocol="tcp", dashboard_address=None)
    client = Client(cluster)
    try:
        yield cluster.scheduler_address
    finally:
        client.close()
        cluster.close()


def make_reference(job: Job, ref: Path, cwd: Path) -> float:
    """Run the job uninterrupted into ``ref`` in this process; return the seconds it took.

    Dask commands get an in-process cluster (``--scheduler``), so the reference goes through
    the same code as the killed runs, without process start-up costs.
    """
    from cdwdata.cli import main
    from cdwdata.ensemble import blas_threads

    blas_threads(1)
    t0 = time.perf_counter()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        if job.uses_dask:
            with _inprocess_scheduler() as address:
                rc = main(job.argv(out=ref, scheduler=address))
        else:
            rc = main(job.argv(out=ref))
    finally:
        os.chdir(old)
    assert rc == 0, f"reference run failed with exit code {rc}"
    return time.perf_counter() - t0


@dataclass
class SoakResult:
    """What :func:`run_with_kills` saw."""

    interruptions: int = 0
    completed_early: int = 0
    frames_verified: int = 0
    final_frames: int = 0
    arrays_compared: int = 0
    kill_progress: list[int] = field(default_factory=list)
    kill_times_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _wait(proc: subprocess.Popen, cond, timeout: float, poll: float = 0.01) -> bool:
    """Poll ``cond()`` until true (True) or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return bool(cond())
        time.sleep(poll)
    raise TimeoutError(f"no progress within {timeout} s")


def run_with_kills(job: Job, ref: Path, kills: int, rng: np.random.Generator, cwd: Path,
                   timeout: float = 300.0, log: Path | None = None) -> SoakResult:
    """Start, SIGKILL at random points and resume ``job`` ``kills`` times, then finish it.

    Every interrupted store is checked with :func:`verify_partial` and the finished one with
    :func:`compare_stores` (AssertionError on any difference).
    """
    log = log or cwd / "soak.log"
    expected = layout(job, ref)
    total = total_progress(job, ref)
    # kill points spread over the whole job: sorted uniform progress targets, kept clear of
    # the very end (several runs or samples can complete at once)
    margin = max(3, total // 10)
    targets = np.sort(rng.integers(0, max(total - margin, 1), size=kills))
    res = SoakResult()
    t0 = time.perf_counter()
    markers: dict[str, np.ndarray] | None = None
    started = False
    for target in targets:
        proc = start(job, resume=started, cwd=cwd, log=log)
        started = True
        try:
            ready = _wait(proc, lambda: layout(job) >= expected and progress(job) is not None,
                          timeout)
            if not ready:
                raise AssertionError(f"cdw exited with {proc.returncode} before its store was "
                                     f"created; see {log}")
            stamps = [(time.monotonic(), progress(job) or 0)]
            goal = max(int(target), stamps[0][1])

            def reached(goal=goal, stamps=stamps):
                p = progress(job)
                if p is not None and p != stamps[-1][1]:
                    stamps.append((time.monotonic(), p))
                return p is not None and p >= goal

            _wait(proc, reached, timeout)
            # a random delay of up to half the recent time per unit of progress lands the
            # kill anywhere between and inside frame writes
            recent = stamps[1:][-5:]
            per_unit = 0.05
            if len(recent) >= 2:
                per_unit = (recent[-1][0] - recent[0][0]) / (recent[-1][1] - recent[0][1])
            time.sleep(float(rng.uniform(0.0, 0.5 * per_unit)))
            if proc.poll() is not None:
                if proc.returncode != 0:
                    raise AssertionError(f"cdw failed with exit code {proc.returncode}; "
                                         f"see {log}")
                res.completed_early += 1
                break
            res.kill_times_s.append(round(time.perf_counter() - t0, 3))
            kill_group(proc)
        finally:
            if proc.poll() is None:
                kill_group(proc)
        res.interruptions += 1
        n, markers = verify_partial(job, ref, markers)
        res.kill_progress.append(int(progress(job) or 0))
        res.frames_verified += n
    proc = start(job, resume=started, cwd=cwd, log=log)
    try:
        rc = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert rc == 0, f"the final resumed run failed with exit code {rc}; see {log}"
    n, _ = verify_partial(job, ref, markers)
    res.final_frames = n
    res.frames_verified += n
    res.arrays_compared = sum(compare_stores(path, job.stores(ref)[role])
                              for role, path in job.stores().items())
    res.wall_s = round(time.perf_counter() - t0, 3)
    return res


# --- concurrent writers ----------------------------------------------------------------------

BUSY = "being written by PID"


@dataclass
class ConcurrentResult:
    """What :func:`run_concurrent` saw."""

    trials: int = 0
    second_writers: int = 0
    refused: int = 0
    winners_per_race: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc)


def _log_says(log: Path, start: int, text: str) -> int:
    return log.read_text(errors="replace")[start:].count(text)


def run_concurrent(job: Job, ref: Path, trials: int, writers: int, rng: np.random.Generator,
                   cwd: Path, timeout: float = 300.0, log: Path | None = None
                   ) -> ConcurrentResult:
    """Second writers of a store that is being written, ``trials`` times.

    Odd trials: a job runs; ``writers - 1`` second writers (``--resume`` and ``--overwrite``
    alternately) start at once while it writes; each must exit 2 naming the holder, and the
    job must finish equal to the reference. Even trials: a job is SIGKILLed part way, then
    ``writers`` ``--resume`` runs start at once: exactly one may proceed, the others must exit
    2, and the store must end equal to the reference.
    """
    log = log or cwd / "soak.log"
    res = ConcurrentResult()
    total = total_progress(job, ref)
    t0 = time.perf_counter()
    for trial in range(trials):
        for path in job.stores().values():
            shutil.rmtree(path, ignore_errors=True)
        first = start(job, resume=False, cwd=cwd, log=log)
        target = int(rng.integers(1, max(2, total // 2)))
        ready = _wait(first, lambda t=target: (progress(job) or 0) >= t, timeout)
        assert ready and first.poll() is None, f"the first writer ended early; see {log}"
        mark = len(log.read_text(errors="replace"))
        if trial % 2 == 0:
            others = [start(job, resume=k % 2 == 0, cwd=cwd, log=log, overwrite=k % 2 == 1)
                      for k in range(writers - 1)]
            codes = [_finish(p, timeout) for p in others]
            res.second_writers += len(others)
            res.refused += sum(c == 2 for c in codes)
            assert codes == [2] * len(others), f"second writers exited with {codes}; see {log}"
            assert _log_says(log, mark, f"{BUSY} {first.pid} ") == len(others), log
            assert _finish(first, timeout) == 0, f"the first writer failed; see {log}"
            res.winners_per_race.append(1)
        else:
            kill_group(first)
            racers = [start(job, resume=True, cwd=cwd, log=log) for _ in range(writers)]
            codes = [_finish(p, timeout) for p in racers]
            winners = sum(c == 0 for c in codes)
            res.second_writers += writers - 1
            res.refused += sum(c == 2 for c in codes)
            assert sorted(codes) == [0] + [2] * (writers - 1), \
                f"racing --resume runs exited with {codes}; see {log}"
            assert _log_says(log, mark, BUSY) == writers - 1, log
            res.winners_per_race.append(winners)
        for role, path in job.stores().items():
            compare_stores(path, job.stores(ref)[role])
        res.trials += 1
    res.wall_s = round(time.perf_counter() - t0, 3)
    return res


# --- corruption ----------------------------------------------------------------------------------

DAMAGE_KINDS = ("delete", "flip", "truncate")


@dataclass
class CorruptionResult:
    """What :func:`run_corruption` saw."""

    rounds: int = 0
    injected: int = 0
    detected: int = 0
    runs_damaged: int = 0
    analyze_refused: int = 0
    repaired_bit_for_bit: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _damage_targets(path: Path) -> list[tuple[str, tuple[int, int, int], Path]]:
    """(variable, run cell, chunk file) of every chunk a sound finished store must have:
    frames of the frame variables and the checkpoint slot of each run's last frame."""
    g = _group(path)
    frame_vars = list(g.attrs["frame_vars"])
    done = np.asarray(g["frames_done"][...])
    out = []
    for cell in np.ndindex(done.shape):
        k = int(done[cell])
        for name in frame_vars:
            for frame in range(k):
                out.append((name, cell, path / name / "c" / "/".join(map(str, cell)) /
                            str(frame) / "0" / "0"))
        if k:
            for name in ("Q", "v", "F", "n"):
                out.append((f"checkpoint/{name}", cell, path / "checkpoint" / name / "c" /
                            "/".join(map(str, cell)) / str((k - 1) % 2) / "0" / "0"))
    return [t for t in out if t[2].exists()]


def damage(path: Path, n: int, rng: np.random.Generator) -> list[tuple[str, tuple, str]]:
    """Delete, flip two bits of, or truncate ``n`` distinct chunks of the store at ``path``."""
    targets = _damage_targets(path)
    picks = rng.choice(len(targets), size=min(n, len(targets)), replace=False)
    done = []
    for i in picks:
        name, cell, file = targets[int(i)]
        kind = DAMAGE_KINDS[int(rng.integers(len(DAMAGE_KINDS)))]
        data = bytearray(file.read_bytes())
        if kind == "delete":
            file.unlink()
        elif kind == "flip":
            for pos in rng.choice(len(data) * 8, size=2, replace=False):
                data[int(pos) // 8] ^= 1 << (int(pos) % 8)
            file.write_bytes(bytes(data))
        else:
            file.write_bytes(bytes(data[: len(data) // 2]))
        done.append((name, tuple(int(c) for c in cell), kind))
    return done


def _cli(argv: list[str], cwd: Path, log: Path, timeout: float) -> int:
    with open(log, "ab") as fh:
        fh.write(f"\n$ cdw {' '.join(argv)}\n".encode())
        fh.flush()
        return subprocess.run([sys.executable, "-m", "cdwdata.cli", *argv], cwd=cwd,
                              env=cdw_env(), stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False).returncode


def run_corruption(job: Job, ref: Path, rounds: int, damages: int, rng: np.random.Generator,
                   cwd: Path, timeout: float = 300.0, log: Path | None = None
                   ) -> CorruptionResult:
    """Damage a finished copy of the reference ``rounds`` times (``damages`` chunks each).

    Each time: :func:`cdwdata.store.verify` must name every damaged run, ``cdw analyze``
    must exit 2 (writing nothing), and ``--resume`` must end equal to the reference bit for
    bit.
    """
    from cdwdata import store

    log = log or cwd / "soak.log"
    res = CorruptionResult()
    t0 = time.perf_counter()
    main = job.stores()["main"]
    for _ in range(rounds):
        for path in job.stores().values():
            shutil.rmtree(path, ignore_errors=True)
        for role, path in job.stores().items():
            shutil.copytree(job.stores(ref)[role], path)
        injected = damage(main, damages, rng)
        res.injected += len(injected)
        report = store.verify(main)
        found = {d.cell for d in report.damage}
        want = {cell for _, cell, _ in injected}
        assert want <= found, f"verify missed damage in runs {sorted(want - found)}"
        res.detected += len(want & found)
        res.runs_damaged += len(want)
        out = cwd / "corrupt-analysis"
        if job.kind == "trajectory" and "n" in _group(main).attrs["frame_vars"]:
            rc = _cli(["analyze", str(main), "--out", str(out)], cwd, log, timeout)
            assert rc == 2 and not out.exists(), f"analyze of a damaged store: rc {rc}"
            res.analyze_refused += 1
        proc = start(job, resume=True, cwd=cwd, log=log)
        assert _finish(proc, timeout) == 0, f"--resume of a damaged store failed; see {log}"
        for role, path in job.stores().items():
            compare_stores(path, job.stores(ref)[role])
        res.repaired_bit_for_bit += 1
        res.rounds += 1
    res.wall_s = round(time.perf_counter() - t0, 3)
    return res


# --- the benchmark -----------------------------------------------------------------------------

def build_job(args: argparse.Namespace, workdir: Path) -> Job:
    common = ["--L", str(args.L), "--seed", str(args.seed), "--no-progress"]
    if args.command == "ed-dataset":
        return Job("ed-dataset", [*common, "--f", *map(str, args.f), "--T", str(args.T[0]),
                                  "--random", str(args.random), "--quench-runs", str(args.runs),
                                  "--quench-steps", str(args.steps), "--quench-save-every",
                                  str(args.save_every), "--workers", str(args.workers)],
                   workdir / "soak.zarr")
    args_ = [*common, "--T", *map(str, args.T), "--f", *map(str, args.f), "--runs",
             str(args.runs), "--steps", str(args.steps), "--save-every", str(args.save_every)]
    if args.command == "quench":
        args_ += ["--model", "ed", "--workers", str(args.workers)]
    return Job(args.command, args_, workdir / "soak.zarr")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", choices=("quench", "ed-quench", "ed-dataset"), default="quench",
                    help="cdw subcommand to soak (default quench, i.e. cdw quench --model ed)")
    ap.add_argument("--kills", type=int, default=8, help="interruptions (default 8)")
    ap.add_argument("--L", type=int, default=12)
    ap.add_argument("--T", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--f", type=float, nargs="+", default=[0.5])
    ap.add_argument("--runs", type=int, default=4, help="runs per (T, f)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--random", type=int, default=16, help="random samples (ed-dataset)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (quench, ed-dataset)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill points and the runs")
    ap.add_argument("--trials", type=int, default=4,
                    help="concurrent-writer trials (default 4; 0 skips the round)")
    ap.add_argument("--writers", type=int, default=3,
                    help="processes writing one store at once in each trial (default 3)")
    ap.add_argument("--corrupt-rounds", type=int, default=4,
                    help="corruption rounds (default 4; 0 skips the round)")
    ap.add_argument("--damages", type=int, default=4,
                    help="chunks deleted, bit-flipped or truncated per round (default 4)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per round")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="cdw-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    job = build_job(args, workdir)
    for path in (*job.stores().values(), *job.stores(workdir / "ref.zarr").values()):
        shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    try:
        t_ref = make_reference(job, workdir / "ref.zarr", workdir)
        res = run_with_kills(job, workdir / "ref.zarr", args.kills, rng, workdir,
                             timeout=args.timeout)
        conc = run_concurrent(job, workdir / "ref.zarr", args.trials, args.writers, rng,
                              workdir, timeout=args.timeout)
        corr = run_corruption(job, workdir / "ref.zarr", args.corrupt_rounds, args.damages, rng,
                              workdir, timeout=args.timeout)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = {"command": "cdw " + " ".join(job.argv(out=Path("soak.zarr"))),
           "kills_requested": args.kills, **res.as_dict(),
           "concurrent": conc.as_dict(), "corruption": corr.as_dict(),
           "reference_s": round(t_ref, 3), "machine": platform.platform(),
           "cpus": os.cpu_count()}
    print(f"{out['command']}\n"
          f"interruptions survived: {res.interruptions} (SIGKILL of the process group; "
          f"{res.completed_early} round(s) finished before the kill)\n"
          f"frames/samples verified against the reference: {res.frames_verified} "
          f"(final store: {res.final_frames}, {res.arrays_compared} arrays bit for bit)\n"
          f"wall time with kills and resumes: {res.wall_s:.1f} s "
          f"(uninterrupted in-process reference: {t_ref:.1f} s)\n"
          f"concurrent writers: {conc.trials} trials of {args.writers} writers, "
          f"{conc.refused} of {conc.second_writers} second writers refused, one winner per "
          f"race {conc.winners_per_race}, stores equal to the reference ({conc.wall_s:.1f} s)\n"
          f"corruption: {corr.rounds} rounds, {corr.injected} chunks damaged in "
          f"{corr.runs_damaged} runs, all {corr.detected} found by verify, analyze refused "
          f"{corr.analyze_refused}x, --resume repaired {corr.repaired_bit_for_bit} stores bit for "
          f"bit ({corr.wall_s:.1f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
