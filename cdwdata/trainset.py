"""ED training sets: random configurations plus snapshots of Langevin quenches.

For each filling the set holds ``n_random`` random configurations followed by
``quench_runs * (quench_steps // quench_save_every)`` snapshots of Langevin quenches at
temperature ``T`` (the hot-start frame 0 is skipped). All labels are exact ED forces and
densities at electron temperature ``T``. The quench trajectories themselves are kept in a
sibling trajectory store (``<name>-quench.zarr``), so the expensive part resumes frame by
frame; random samples resume sample by sample (``sample_done`` marker).

The quenches are driven by ED forces (``quench_forcefield="ed"``, the paper's data), or by
an ML force field (e.g. ``"holstein-f{f}"``), whose snapshots are then labelled by ED: ML
dynamics reaches the late coarsening regime (thousands of steps) at a small fraction of the
cost of ED dynamics, and only the saved snapshots need an ED solve. Such snapshots are
exact labels of configurations that ED dynamics would visit only approximately the same way;
the store's ``quench_forcefield`` attr says which driver made them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import noise, schema, store
from cdwdata._version import __version__
from cdwdata.errors import ParameterError
from cdwdata.params import (
    HolsteinParams,
    check_filling,
    check_size,
    check_temperature,
    staggered_sign,
)
from cdwdata.quench import QuenchConfig, is_ml
from cdwdata.storelock import writes_store


@dataclass(frozen=True)
class TrainsetConfig:
    """Definition of an ED training set.

    Attributes
    ----------
    L : int
        Lattice size (paper: 40).
    fillings : tuple of float
    T : float
        Electron and quench temperature (paper: 0.1).
    n_random : int
        Random configurations per filling (paper: 200).
    quench_runs, quench_steps, quench_save_every : int
        ED-Langevin quenches per filling; snapshots every ``quench_save_every`` steps
        (paper: 400 quench snapshots per filling).
    random_sigma : (float, float)
        Random configurations are ``Q = s * xi + c * (-1)^(x+y) * D`` with ``s`` log-uniform in
        this range, ``xi`` standard normal, ``c`` uniform in [0, 1.5] and ``D`` = +/-1 domains
        of random stripes, so that both disordered and CDW-like neighbourhoods are covered.
    seed : int
    params : HolsteinParams
    quench_forcefield : str
        What drives the quenches: ``"ed"`` (default) or an ML model name or path (``"{f}"``
        is replaced by the filling); ML-driven snapshots are labelled by ED afterwards.
    """

    L: int = 40
    fillings: tuple[float, ...] = (0.5, 0.4, 0.3)
    T: float = 0.1
    n_random: int = 200
    quench_runs: int = 8
    quench_steps: int = 500
    quench_save_every: int = 10
    random_sigma: tuple[float, float] = (0.2, 2.5)
    seed: int = 0
    params: HolsteinParams = field(default_factory=HolsteinParams)
    quench_forcefield: str = "ed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", check_size(self.L))
        object.__setattr__(self, "fillings",
                           tuple(check_filling(f) for f in np.atleast_1d(self.fillings)))
        object.__setattr__(self, "T", check_temperature(self.T))
        if len(set(self.fillings)) != len(self.fillings):
            raise ParameterError(f"f values {self.fillings} must be distinct")
        lo, hi = (float(x) for x in self.random_sigma)
        if not (0 < lo <= hi < np.inf):
            raise ParameterError(f"random_sigma={tuple(self.random_sigma)!r} is not allowed: "
                                 "need 0 < low <= high, both finite")
        object.__setattr__(self, "random_sigma", (lo, hi))
        for name in ("n_random", "quench_runs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or value < 0:
                raise ParameterError(f"{name}={value!r} is not allowed: {name} must be an "
                                     "integer >= 0")
            object.__setattr__(self, name, int(value))
        if self.n_random + self.quench_runs == 0:
            raise ParameterError("a training set needs n_random > 0 or quench_runs > 0")
        spec = str(self.quench_forcefield)
        if not spec or (spec != "ed" and not is_ml(spec)):
            raise ParameterError(f"quench_forcefield={self.quench_forcefield!r}: use 'ed' or "
                                 "an ML model name or path (e.g. 'holstein-f{f}')")
        if self.quench_runs:
            self.quench_config()  # checks quench_steps and quench_save_every now

    @property
    def ml_driven(self) -> bool:
        """True if the quenches are driven by an ML force field (ED labels afterwards)."""
        return self.quench_forcefield != "ed"

    def quench_config(self) -> QuenchConfig:
        return QuenchConfig(L=self.L, temperatures=(self.T,), fillings=self.fillings,
                            runs=max(self.quench_runs, 1), steps=self.quench_steps,
                            save_every=self.quench_save_every, seed=self.seed,
                            params=self.params, forcefield=self.quench_forcefield)

    def plan(self) -> tuple[list[str], list[int], list[int]]:
        """(source, run, step) of every sample, identical for each filling."""
        sources, runs, steps = ["random"] * self.n_random, list(range(self.n_random)), \
            [-1] * self.n_random
        for r in range(self.quench_runs):
            for s in range(self.quench_save_every, self.quench_steps + 1, self.quench_save_every):
                sources.append("quench")
                runs.append(r)
                steps.append(s)
        return sources, runs, steps

    def attrs(self, command: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.params.to_dict())
        out.update({
            "kind": "training-set", "L": self.L, "electron_T": self.T,
            "fillings": list(self.fillings), "n_random": self.n_random,
            "quench_runs": self.quench_runs, "quench_steps": self.quench_steps,
            "quench_save_every": self.quench_save_every,
            "random_sigma": list(self.random_sigma), "seed": self.seed,
            "quench_forcefield": self.quench_forcefield,
            "params_json": json.dumps(self.params.to_dict(), sort_keys=True),
            "cdwdata_version": __version__,
            "command": command if command is not None else " ".join(sys.argv),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return out


def quench_store_path(path) -> Path:
    """Sibling trajectory store holding the training quenches."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".zarr") + "-quench.zarr")


def random_configuration(config: TrainsetConfig, f: float, index: int) -> np.ndarray:
    """Random configuration number ``index`` of filling ``f`` (deterministic), (L, L)."""
    key = noise.run_key(config.seed, -1.0, f, index)
    rng = np.random.default_rng(key)
    lo, hi = config.random_sigma
    s = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    L = config.L
    x, y = np.indices((L, L))
    # random +/- domains: sign of a sum of a few random plane waves (smooth walls)
    field_ = np.zeros((L, L))
    for _ in range(3):
        kx, ky = rng.integers(0, 3, size=2)
        field_ += np.cos(2 * np.pi * (kx * x + ky * y) / L + rng.uniform(0, 2 * np.pi))
    domains = np.where(field_ >= 0, 1.0, -1.0)
    c = rng.uniform(0.0, 1.5)
    return s * rng.standard_normal((L, L)) + c * staggered_sign(L) * domains


def random_task(path: str, config: TrainsetConfig, jf: int, samples: list[int]) -> int:
    """Worker side: ED labels for random samples of filling index ``jf``."""
    from cdwdata import ed
    from cdwdata.ensemble import _set_threads

    _set_threads()
    writer = store.TrainsetWriter(path)
    done = writer.done(jf)
    f = config.fillings[jf]
    count = 0
    for sample in samples:
        if done[sample]:
            continue
        Q = random_configuration(config, f, sample)
        res = ed.solve(Q, config.T, f, config.params)
        writer.write_sample(jf, sample, {schema.Q: Q, schema.FORCE: res.F, schema.N: res.n})
        count += 1
    return count


def _quench_samples(config: TrainsetConfig, run: int) -> list[tuple[int, int]]:
    """(sample, frame) of the training samples taken from quench ``run``."""
    sources, runs, steps = config.plan()
    return [(i, steps[i] // config.quench_save_every) for i in range(len(sources))
            if sources[i] == "quench" and runs[i] == run]


def label_task(path: str, config: TrainsetConfig, jf: int, run: int, _after=None) -> int:
    """Worker side: ED labels for the snapshots of ML-driven quench ``run`` of filling ``jf``.

    ``_after`` only orders the task after the run's trajectory segment (a Dask future).
    """
    from cdwdata import ed
    from cdwdata.ensemble import _set_threads

    _set_threads()
    qw = store.TrajectoryWriter(quench_store_path(path))
    tw = store.TrainsetWriter(path)
    done = tw.done(jf)
    frames_done = qw.frames_done(0, jf)[run]
    f = config.fillings[jf]
    count = 0
    for sample, frame in _quench_samples(config, run):
        if done[sample] or frames_done <= frame:
            continue
        Q = np.asarray(qw.group[schema.Q][0, jf, run, frame], dtype=float)
        res = ed.solve(Q, config.T, f, config.params)
        tw.write_sample(jf, sample, {schema.Q: Q, schema.FORCE: res.F, schema.N: res.n})
        count += 1
    return count


def collect_quench_samples(path, config: TrainsetConfig) -> int:
    """Copy finished ED-driven quench frames into the training set (skips samples there).

    ML-driven quenches are labelled by :func:`label_task` instead (their stored forces are
    the model's, not exact).
    """
    if config.quench_runs == 0 or config.ml_driven:
        return 0
    qpath = quench_store_path(path)
    qw = store.TrajectoryWriter(qpath)
    tw = store.TrainsetWriter(path)
    copied = 0
    for jf in range(len(config.fillings)):
        done = tw.done(jf)
        frames_done = qw.frames_done(0, jf)
        for run in range(config.quench_runs):
            for sample, frame in _quench_samples(config, run):
                if done[sample] or frames_done[run] <= frame:
                    continue
                arrays = {name: np.asarray(qw.group[name][0, jf, run, frame]) for name in
                          store.TRAINSET_VARS}
                tw.write_sample(jf, sample, arrays)
                copied += 1
    return copied


@writes_store(also=lambda path: quench_store_path(path))
def generate(path, config: TrainsetConfig, client=None, resume: bool = False,
             overwrite: bool = False, command: str | None = None, progress: bool = True,
             samples_per_task: int = 4, scheduler: str | None = None,
             n_workers: int | None = None) -> str:
    """Generate (or resume) the training set at ``path`` on a Dask cluster.

    Uses ``client``, else connects to ``scheduler``, else starts a local cluster of
    ``n_workers`` (see :func:`cdwdata.ensemble.dask_client`); the stores are created or
    checked first, so a bad ``path`` fails before any cluster starts.
    """
    from distributed import as_completed

    from cdwdata.ensemble import dask_client, segment_task
    from cdwdata.quench import prepare_store

    path = Path(path)
    sources, runs, steps = config.plan()
    attrs = config.attrs(command)
    if resume and path.exists():
        store.check_resumable(path, {"L": config.L, "seed": config.seed,
                                     "params_json": attrs["params_json"]})
        got = store.read_attrs(path)
        for key in ("fillings", "n_random", "quench_runs", "quench_steps", "quench_save_every",
                    "quench_forcefield"):
            if json.dumps(got.get(key, "ed")) != json.dumps(attrs[key]):
                raise store.StoreError(f"cannot resume {path}: it was made with {key}="
                                       f"{got.get(key)!r}, this run asks for {attrs[key]!r}")
        store.repair_samples_for_resume(path)  # damaged samples are computed again
    else:
        store.create_trainset(path, config.L, config.fillings, sources, runs, steps, config.T,
                              attrs, overwrite=overwrite)
    qconfig = config.quench_config()
    if config.quench_runs:
        prepare_store(quench_store_path(path), qconfig, resume=resume or not overwrite,
                      overwrite=overwrite and not resume, command=command)
    ctx = (dask_client(scheduler, n_workers=n_workers) if client is None
           else contextlib.nullcontext(client))
    with ctx as cl:
        futures = []
        writer = store.TrainsetWriter(path)
        for jf in range(len(config.fillings)):
            done = writer.done(jf)
            todo = [s for s in range(config.n_random) if not done[s]]
            for i in range(0, len(todo), samples_per_task):
                futures.append(cl.submit(random_task, str(path), config, jf,
                                         todo[i:i + samples_per_task], pure=False, retries=2))
            if config.quench_runs:
                for run in range(config.quench_runs):
                    seg = cl.submit(segment_task, str(quench_store_path(path)), qconfig, 0, jf,
                                    [run], pure=False, retries=2)
                    futures.append(seg)
                    if config.ml_driven:
                        futures.append(cl.submit(label_task, str(path), config, jf, run, seg,
                                                 pure=False, retries=2))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc="ED tasks", unit="task")
        for fut in as_completed(futures):
            fut.result()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    collect_quench_samples(path, config)
    return str(path)


def is_complete(path) -> bool:
    """True if every sample of every filling is written."""
    return store.samples_complete(path)
