"""Grand-canonical training sets: exact local densities n_i(Q; mu, T) at many (mu, T).

At a fixed chemical potential and temperature the local density is a local function of the
lattice around a site (docs/conventions.md, "What is local and what is global"); the filling
is one global equation for mu. One diagonalisation gives the exact densities of a
configuration at *every* (mu, T):

    n_i(mu, T) = sum_m |psi_m(i)|^2 f_FD((eps_m - mu) / T)

so each configuration is labelled at ``n_labels`` points. A label draws an electron
temperature from ``temperatures`` (with ``T_weights``) and a filling f' (near the
configuration's own filling with probability ``p_near``, else uniform in ``f_range``), and
takes the exact mu of that filling: the labels cover the mu the dynamics visit.

Configurations come from random states (see :func:`cdwdata.trainset.random_configuration`)
and from frames of trajectory stores (ED- or ML-driven quenches; only Q is read, labels are
always exact). The store has dims ``(sample, x, y)`` for ``Q`` and ``(sample, label, x, y)``
for ``n``, with ``mu`` and ``T_e`` on ``(sample, label)`` and the origin of every sample as
coordinates (``source``, ``origin``, ``f0``, ``run``, ``step``). ``sample_done`` is the resume
marker; samples are written in chunk-aligned tasks on Dask workers.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import noise, store
from cdwdata._version import __version__
from cdwdata.errors import ParameterError, StoreError
from cdwdata.params import HolsteinParams, check_size, check_temperature
from cdwdata.storelock import writes_store


@dataclass(frozen=True)
class GCSetConfig:
    """Definition of a grand-canonical training set.

    Attributes
    ----------
    L : int
        Lattice size of random configurations (frames keep their store's size, which must
        equal ``L``).
    n_random : int
        Random configurations (drawn as in the canonical training sets).
    frames : tuple of str
        Trajectory stores whose frames are labelled.
    min_step, every : int
        Use frames with ``step >= min_step``, every ``every``-th frame, of the runs that are
        completely written when the set is created.
    frame_fillings : tuple of float
        Only frames of these fillings (default: all of the store's).
    frame_runs : tuple of int
        Only these runs of each store (default: every completely written run).
    n_labels : int
        (mu, T) labels per configuration.
    temperatures, T_weights : tuple of float
        Electron temperatures of the labels and their relative weights.
    f_range : (float, float)
        Fillings f' whose exact mu labels are drawn.
    p_near, near_sigma : float
        With probability ``p_near`` a label's filling is the configuration's own filling plus
        a normal offset of width ``near_sigma`` (frames only; random samples always draw
        uniformly).
    seed : int
    params : HolsteinParams
    """

    L: int = 40
    n_random: int = 0
    frames: tuple[str, ...] = ()
    min_step: int = 1
    every: int = 1
    frame_fillings: tuple[float, ...] = ()
    frame_runs: tuple[int, ...] = ()
    n_labels: int = 16
    temperatures: tuple[float, ...] = (0.1, 0.2, 0.3)
    T_weights: tuple[float, ...] = (2.0, 1.0, 1.0)
    f_range: tuple[float, float] = (0.25, 0.55)
    p_near: float = 0.5
    near_sigma: float = 0.02
    random_sigma: tuple[float, float] = (0.2, 2.5)
    seed: int = 0
    params: HolsteinParams = field(default_factory=HolsteinParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", check_size(self.L))
        temps = tuple(check_temperature(T) for T in self.temperatures)
        if not temps or min(temps) <= 0:
            raise ParameterError(f"temperatures={temps}: labels need T > 0")
        w = tuple(float(x) for x in self.T_weights)
        if len(w) != len(temps) or min(w) < 0 or sum(w) <= 0:
            raise ParameterError(f"T_weights={w} must be >= 0, one per temperature {temps}")
        object.__setattr__(self, "temperatures", temps)
        object.__setattr__(self, "T_weights", w)
        lo, hi = (float(x) for x in self.f_range)
        if not (0 < lo <= hi < 1):
            raise ParameterError(f"f_range={self.f_range}: need 0 < low <= high < 1")
        object.__setattr__(self, "f_range", (lo, hi))
        object.__setattr__(self, "frames", tuple(str(p) for p in self.frames))
        object.__setattr__(self, "frame_fillings", tuple(float(f) for f in self.frame_fillings))
        runs = tuple(self.frame_runs)
        if any(isinstance(r, bool) or not float(r).is_integer() or r < 0 for r in runs):
            raise ParameterError(f"frame_runs={runs!r} must be integers >= 0")
        object.__setattr__(self, "frame_runs", tuple(sorted({int(r) for r in runs})))
        for name in ("n_random", "min_step", "every", "n_labels", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not float(v).is_integer() or v < 0:
                raise ParameterError(f"{name}={v!r} must be an integer >= 0")
            object.__setattr__(self, name, int(v))
        if self.every < 1 or self.n_labels < 1:
            raise ParameterError("every and n_labels must be >= 1")
        if not 0 <= self.p_near <= 1:
            raise ParameterError(f"p_near={self.p_near} must lie in [0, 1]")

    def plan(self) -> dict[str, np.ndarray]:
        """Origin of every sample: source, origin store, T/f index, run, frame, step, f0."""
        rows: list[tuple[str, str, int, int, int, int, int, float]] = [
            ("random", "", -1, -1, i, -1, -1, np.nan) for i in range(self.n_random)]
        for path in self.frames:
            attrs = store.read_attrs(path)
            if attrs.get("kind") != "trajectory":
                raise StoreError(f"{path} is not a trajectory store")
            if int(attrs["L"]) != self.L:
                raise ParameterError(f"{path} holds {attrs['L']}x{attrs['L']} frames, this set "
                                     f"is {self.L}x{self.L}")
            if json.loads(attrs["params_json"]) != self.params.to_dict():
                raise ParameterError(f"{path} was made with other HolsteinParams")
            steps = np.arange(0, int(attrs["steps"]) + 1, int(attrs["save_every"]))
            frames = [k for k in range(len(steps)) if steps[k] >= self.min_step][::self.every]
            done = store.frames_done(path)
            for it, _T in enumerate(attrs["temperatures"]):
                for jf, f in enumerate(attrs["fillings"]):
                    if self.frame_fillings and not np.isclose(self.frame_fillings, f).any():
                        continue
                    for r in range(int(attrs["runs"])):
                        if done[it, jf, r] < len(steps):
                            continue
                        if self.frame_runs and r not in self.frame_runs:
                            continue
                        for k in frames:
                            rows.append(("quench", str(path), it, jf, r, k, int(steps[k]),
                                         float(f)))
        cols = list(zip(*rows, strict=True)) if rows else [[]] * 8
        names = ("source", "origin", "it", "jf", "run", "frame", "step", "f0")
        return {n: np.asarray(c) for n, c in zip(names, cols, strict=True)}

    def attrs(self, command: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.params.to_dict())
        out.update({
            "kind": "gc-training-set", "L": self.L, "n_random": self.n_random,
            "frames": list(self.frames), "min_step": self.min_step, "every": self.every,
            "frame_fillings": list(self.frame_fillings), "frame_runs": list(self.frame_runs),
            "n_labels": self.n_labels, "temperatures": list(self.temperatures),
            "T_weights": list(self.T_weights), "f_range": list(self.f_range),
            "p_near": self.p_near, "near_sigma": self.near_sigma,
            "random_sigma": list(self.random_sigma), "seed": self.seed,
            "params_json": json.dumps(self.params.to_dict(), sort_keys=True),
            "cdwdata_version": __version__,
            "command": command if command is not None else " ".join(sys.argv),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return out


def draw_labels(config: GCSetConfig, sample: int, f0: float) -> tuple[np.ndarray, np.ndarray]:
    """Electron temperatures and target fillings of the labels of ``sample`` (deterministic)."""
    rng = np.random.default_rng(noise.run_key(config.seed, -2.0, 0.0, sample))
    K = config.n_labels
    p = np.asarray(config.T_weights) / sum(config.T_weights)
    T = np.asarray(config.temperatures)[rng.choice(len(p), size=K, p=p)]
    lo, hi = config.f_range
    f = rng.uniform(lo, hi, size=K)
    if np.isfinite(f0):
        near = rng.random(K) < config.p_near
        f = np.where(near, np.clip(f0 + config.near_sigma * rng.standard_normal(K), lo, hi), f)
    return T, f


def configuration(config: GCSetConfig, plan: dict[str, np.ndarray], sample: int) -> np.ndarray:
    """Q of ``sample`` (L, L), float64."""
    if plan["source"][sample] == "random":
        from cdwdata.trainset import TrainsetConfig, random_configuration

        tc = TrainsetConfig(L=config.L, fillings=(0.5,), n_random=1, quench_runs=0,
                            random_sigma=config.random_sigma, seed=config.seed)
        return random_configuration(tc, 0.5, int(plan["run"][sample]))
    idx = tuple(int(plan[k][sample]) for k in ("it", "jf", "run", "frame"))
    return store.read_array(plan["origin"][sample], "Q", idx).astype(float)


def label(config: GCSetConfig, Q: np.ndarray, sample: int, f0: float) -> dict[str, np.ndarray]:
    """Exact labels of one configuration: ``n (K, L, L)``, ``mu (K,)``, ``T_e (K,)``."""
    from cdwdata import ed

    T, f = draw_labels(config, sample, f0)
    sp = ed.spectrum(Q, config.params)
    mu = sp.chemical_potential(T[None], f[None])
    n = sp.density(mu, T[None])[0]
    return {"Q": Q, "n": n.astype(np.float32), "mu": mu[0], "T_e": T}


def label_task(path: str, config: GCSetConfig, samples: list[int]) -> int:
    """Worker side: label ``samples`` that are not done yet and write them."""
    from cdwdata.ensemble import _set_threads

    _set_threads()
    writer = store.GCSetWriter(path)
    plan = writer.plan()
    done = writer.done()
    count = 0
    for s in samples:
        if done[s]:
            continue
        Q = configuration(config, plan, s)
        if not np.isfinite(Q).all():
            raise StoreError(f"sample {s}: frame {plan['frame'][s]} of run {plan['run'][s]} in "
                             f"{plan['origin'][s]} is not written (NaN)")
        writer.write_sample(s, label(config, Q, s, float(plan["f0"][s])))
        count += 1
    return count


@writes_store()
def generate(path, config: GCSetConfig, resume: bool = False, overwrite: bool = False,
             command: str | None = None, progress: bool = True, samples_per_task: int = 4,
             scheduler: str | None = None, n_workers: int | None = None) -> str:
    """Create (or resume) the grand-canonical set at ``path`` and label every sample."""
    from distributed import as_completed

    from cdwdata.ensemble import dask_client

    path = Path(path)
    attrs = config.attrs(command)
    if resume and path.exists():
        got = store.read_attrs(path)
        for key in ("L", "n_random", "frames", "min_step", "every", "frame_fillings",
                    "frame_runs", "n_labels", "temperatures",
                    "T_weights", "f_range", "p_near", "near_sigma", "seed", "params_json"):
            # stores made before frame_runs existed used every run
            if json.dumps(got.get(key, [] if key == "frame_runs" else None)) != json.dumps(
                    attrs[key]):
                raise StoreError(f"cannot resume {path}: it was made with {key}={got.get(key)!r}"
                                 f", this run asks for {attrs[key]!r}")
        store.repair_samples_for_resume(path)  # damaged samples are computed again
    else:
        plan = config.plan()
        if not len(plan["source"]):
            raise ParameterError("nothing to label: give n_random > 0 or trajectory frames")
        store.create_gcset(path, config.L, config.n_labels, plan, attrs, overwrite=overwrite)
    todo = np.flatnonzero(~store.GCSetWriter(path).done()).tolist()
    if not todo:
        return str(path)
    with dask_client(scheduler, n_workers=n_workers) as cl:
        futures = [cl.submit(label_task, str(path), config, todo[i:i + samples_per_task],
                             pure=False, retries=2)
                   for i in range(0, len(todo), samples_per_task)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="ED labels", unit="sample")
        for fut in as_completed(futures):
            n = fut.result()
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
    return str(path)
