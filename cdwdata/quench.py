"""Thermal-quench runs: hot start -> Langevin at bath temperature T -> frames in a zarr store.

A quench is described by a frozen :class:`QuenchConfig` whose every value ends up in the
store's attrs. :func:`run_segment` advances a set of runs of one (T, f) cell to the end,
resuming each from its last complete frame; :func:`run_quench` does all cells in this process
(:mod:`cdwdata.ensemble` farms out the same segments to Dask workers).

The hot loop (force field, integrator, thermal noise) stays in torch on the configured device,
batched over the runs of a segment; the state is copied to the host only at save points, where
the frame is checked for blow-up and handed to a background writer thread (at most one frame in
flight), so a run never holds its trajectory in memory and the device keeps computing while the
previous frame is compressed and written.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import schema, store
from cdwdata._version import __version__
from cdwdata.errors import BlowUpError, ParameterError, StoreError
from cdwdata.params import HOT_START_T, HolsteinParams, check_filling, check_size, check_temperature
from cdwdata.storelock import writes_store

DEFAULT_FRAME_VARS = (schema.Q, schema.V, schema.N, schema.FORCE)
#: Frame variables of ML ensembles (``cdw quench``): what the analysis needs.
ML_FRAME_VARS = (schema.Q, schema.N)
#: Force-field specs that are not ML models.
BUILTIN_FORCEFIELDS = ("ed", "tdgl")
#: Default ML model: the shipped model of each filling (``{f}`` is replaced by ``f"{f:g}"``).
DEFAULT_MODEL = "holstein-f{f}"

_PYREF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ParameterError(f"{name}={value!r} is not allowed: {name} must be an integer "
                             f">= {minimum}")
    return int(value)


def resolve_forcefield(spec: str, f: float) -> str:
    """The force-field name for filling ``f``: ``"{f}"`` in ``spec`` becomes ``f"{f:g}"``.

    >>> resolve_forcefield("holstein-f{f}", 0.5)
    'holstein-f0.5'
    """
    return str(spec).replace("{f}", f"{float(f):g}")


def is_ml(spec: str) -> bool:
    """True if ``spec`` names an ML model (not ``ed``/``tdgl``/a ``module:callable``)."""
    return spec not in BUILTIN_FORCEFIELDS and not _is_pyref(spec)


def _is_pyref(spec: str) -> bool:
    return bool(_PYREF.match(str(spec))) and not Path(spec).exists()


@dataclass(frozen=True)
class QuenchConfig:
    """Everything that defines a quench ensemble.

    Attributes
    ----------
    L : int
        Lattice size (even, >= 4).
    temperatures, fillings : tuple of float
        Bath temperatures and filling fractions (one (T, f) cell each).
    runs : int
        Independent runs per cell.
    steps, save_every : int
        Langevin steps and frame interval (``steps`` a multiple of ``save_every``).
    seed : int
        Base seed; run keys derive from (seed, T, f, run), so adding runs, temperatures or
        fillings never changes existing runs.
    params : HolsteinParams
    forcefield : str
        ``"ed"``, ``"tdgl"``, an ML model name or path (``"{f}"`` in it is replaced by the
        filling, e.g. ``"holstein-f{f}"``), or ``"module:callable"`` for a user force field
        built as ``callable(T=T, f=f, params=params, device=device)``.
    frame_vars : tuple of str
        Variables stored every frame (the checkpoint always holds Q, v, F, n in float64).
    frame_dtype : {"float64", "float32"}
    device : str
        torch device of the hot loop (``"cpu"``, ``"cuda"``).
    compute_dtype : {"float64", "float32"}
        dtype of the hot loop (state, forces and noise).
    hot_start_T : float
        Temperature of the random initial state.
    precision : {"float32", "bf16"}
        Hidden-layer precision of a grand-canonical ML model (see
        :func:`cdwdata.ml.load_model`).
    compile : bool
        Run a level model's network and whole-lattice Fermi sum as torch.compile'd kernels
        (:mod:`cdwdata.ml.compiled`; they round differently, so a store is resumed only with
        the same setting).
    """

    L: int
    temperatures: tuple[float, ...]
    fillings: tuple[float, ...]
    runs: int = 1
    steps: int = 100
    save_every: int = 10
    seed: int = 0
    params: HolsteinParams = field(default_factory=HolsteinParams)
    forcefield: str = "ed"
    frame_vars: tuple[str, ...] = DEFAULT_FRAME_VARS
    frame_dtype: str = "float64"
    device: str = "cpu"
    compute_dtype: str = "float64"
    hot_start_T: float = HOT_START_T
    precision: str = "float32"
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", check_size(self.L))
        temps = tuple(check_temperature(T) for T in np.atleast_1d(self.temperatures))
        fills = tuple(check_filling(f) for f in np.atleast_1d(self.fillings))
        for name, vals in (("T", temps), ("f", fills)):
            if not vals or len(set(vals)) != len(vals):
                raise ParameterError(f"{name} values {vals} must be non-empty and distinct")
        object.__setattr__(self, "temperatures", temps)
        object.__setattr__(self, "fillings", fills)
        object.__setattr__(self, "runs", _positive_int("runs", self.runs))
        object.__setattr__(self, "steps", _positive_int("steps", self.steps))
        object.__setattr__(self, "save_every", _positive_int("save_every", self.save_every))
        object.__setattr__(self, "seed", _positive_int("seed", self.seed, minimum=0))
        if self.save_every > self.steps:
            raise ParameterError(f"save_every={self.save_every} is larger than steps="
                                 f"{self.steps}: no frame after the first would be saved")
        if self.steps % self.save_every:
            raise ParameterError(f"steps={self.steps} must be a multiple of save_every="
                                 f"{self.save_every}")
        object.__setattr__(self, "frame_vars", tuple(self.frame_vars))
        unknown = set(self.frame_vars) - set(DEFAULT_FRAME_VARS)
        if unknown or schema.Q not in self.frame_vars or \
                len(set(self.frame_vars)) != len(self.frame_vars):
            raise ParameterError(f"frame_vars={self.frame_vars} must include 'Q' and be "
                                 f"distinct names among {DEFAULT_FRAME_VARS}")
        for name in ("frame_dtype", "compute_dtype"):
            if getattr(self, name) not in ("float32", "float64"):
                raise ParameterError(f"{name}={getattr(self, name)!r}: use float32 or float64")
        if not str(self.forcefield):
            raise ParameterError("forcefield must be 'ed', 'tdgl', a model name or a path")
        if not (str(self.device) == "cpu" or str(self.device).startswith("cuda")):
            raise ParameterError(f"device={self.device!r}: use 'cpu', 'cuda' or 'cuda:N'")
        if self.precision not in ("float32", "bf16"):
            raise ParameterError(f"precision={self.precision!r}: use float32 or bf16")
        if not (self.hot_start_T > 0):
            raise ParameterError(f"hot_start_T={self.hot_start_T} must be > 0")
        if not isinstance(self.compile, bool):
            raise ParameterError(f"compile={self.compile!r}: use True or False")
        if self.compile and not is_ml(self.forcefield):
            raise ParameterError(f"compile=True is for ML models; forcefield="
                                 f"{self.forcefield!r}")

    def layout(self) -> store.TrajectoryLayout:
        return store.TrajectoryLayout(
            L=self.L, temperatures=self.temperatures, fillings=self.fillings, runs=self.runs,
            steps=self.steps, save_every=self.save_every, dt=self.params.dt,
            frame_vars=tuple(self.frame_vars), frame_dtype=self.frame_dtype)

    @property
    def n_frames(self) -> int:
        return self.steps // self.save_every + 1

    def seeds(self) -> np.ndarray:
        """Run keys, shape (nT, nf, runs)."""
        from cdwdata.noise import run_key

        return np.array([[[run_key(self.seed, T, f, r) for r in range(self.runs)]
                          for f in self.fillings] for T in self.temperatures], dtype=np.int64)

    def forcefield_for(self, f: float) -> str:
        """The force-field name used at filling ``f`` (see :func:`resolve_forcefield`)."""
        return resolve_forcefield(self.forcefield, f)

    def attrs(self, command: str | None = None) -> dict[str, Any]:
        """Store attrs: every parameter, the layout, version and creation command."""
        command = command if command is not None else " ".join(sys.argv)
        ml = is_ml(self.forcefield)
        out: dict[str, Any] = dict(self.params.to_dict())
        out.update(store.layout_attrs(self.layout()))
        out.update({
            "kind": "trajectory",
            "temperatures": list(self.temperatures),
            "fillings": list(self.fillings),
            "runs": self.runs,
            "seed": self.seed,
            "forcefield": self.forcefield,
            "model": self.forcefield if ml else "",
            "models": {f"{f:g}": self.forcefield_for(f) for f in self.fillings} if ml else {},
            "hot_start_T": self.hot_start_T,
            "compute_dtype": self.compute_dtype,
            "precision": self.precision,
            "compile": self.compile,
            "device": str(self.device),
            "params_json": json.dumps(self.params.to_dict(), sort_keys=True),
            "cdwdata_version": __version__,
            "command": command,
            "history": [command],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return out

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> QuenchConfig:
        """Rebuild the config of a trajectory store from its attrs (``store.read_attrs``)."""
        if attrs.get("kind") != "trajectory":
            raise StoreError(f"not a trajectory store (kind={attrs.get('kind')!r})")
        try:
            params = HolsteinParams.from_dict(json.loads(attrs["params_json"]))
            return cls(
                L=attrs["L"], temperatures=tuple(attrs["temperatures"]),
                fillings=tuple(attrs["fillings"]), runs=attrs["runs"], steps=attrs["steps"],
                save_every=attrs["save_every"], seed=attrs["seed"], params=params,
                forcefield=attrs["forcefield"], frame_vars=tuple(attrs["frame_vars"]),
                frame_dtype=attrs.get("frame_dtype", "float64"),
                device=attrs.get("device", "cpu"),
                compute_dtype=attrs.get("compute_dtype", "float64"),
                hot_start_T=attrs.get("hot_start_T", HOT_START_T),
                precision=attrs.get("precision", "float32"),
                compile=bool(attrs.get("compile", False)))
        except KeyError as err:
            raise StoreError(f"trajectory store attrs lack {err}; it was not made by "
                             "cdwdata.quench") from None

    def replace(self, **changes) -> QuenchConfig:
        return dataclasses.replace(self, **changes)


def make_forcefield(spec: str, T: float, f: float, params: HolsteinParams, device: str = "cpu",
                    dtype: str | None = None, precision: str = "float32",
                    compile: bool = False):
    """Build the force field named by ``spec`` for bath temperature T and filling f.

    Parameters
    ----------
    spec : str
        ``"ed"`` (exact diagonalisation at electron temperature T), ``"tdgl"`` (toy),
        ``"module:callable"`` (called as ``callable(T=T, f=f, params=params, device=device)``),
        or an ML model name/path for :func:`cdwdata.ml.load_model` (``"{f}"`` is replaced by
        the filling).
    dtype : {"float32", "float64"}, optional
        Compute dtype requested from ML models.
    compile : bool
        ML level models: torch.compile'd kernels (:func:`cdwdata.ml.load_model`).
    """
    spec = resolve_forcefield(spec, f)
    if spec == "ed":
        from cdwdata.forcefields import EDForceField

        return EDForceField(T, f, params, device=device)
    if spec == "tdgl":
        from cdwdata.toy import TDGLForceField

        return TDGLForceField(f=f, params=params)
    if _is_pyref(spec):
        import importlib

        module, _, name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ParameterError(f"forcefield {spec!r}: cannot import {name} from {module}: "
                                 f"{err}") from err
        return factory(T=T, f=f, params=params, device=device)
    from cdwdata import ml

    kwargs: dict[str, Any] = {"params": params, "f": f, "device": device, "T": T}
    if precision != "float32":
        kwargs["precision"] = precision
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    if compile:
        kwargs["compile"] = True
    return ml.load_model(spec, **kwargs)


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _state_arrays(state) -> dict[str, np.ndarray]:
    """Host (float64) copies of the state: the only device -> host transfer, once per frame."""
    import torch

    def host(t):  # a copy: the Langevin loop updates Q and v in place
        return t.detach().to("cpu", torch.float64, copy=True).numpy()

    out = {schema.Q: host(state.Q), schema.V: host(state.v), schema.FORCE: host(state.F),
           schema.N: host(state.n)}
    if state.mu is not None:
        out[schema.MU] = state.mu.double().cpu().numpy().reshape(-1)
    return out


_FLOAT32_MAX = float(np.finfo(np.float32).max)


#: Magnitudes no physical Holstein state reaches (|Q| ~ g/(k - 4 kappa) ~ 10 at most for the
#: default parameters; the hot start has std(Q) ~ 5): beyond them the integrator has diverged.
MAX_ABS = {schema.Q: 1e6, schema.V: 1e6, schema.FORCE: 1e8}


def _check_finite(arrays: dict[str, np.ndarray], runs: Sequence[int], step: int,
                  frame_vars: Sequence[str] = (), frame_dtype: str = "float64") -> None:
    """Raise BlowUpError if a run has a non-finite value (or one float32 frames cannot hold)."""
    for name, arr in arrays.items():
        if arr.ndim < 3:  # per-run scalars (mu): judged through the lattice fields
            continue
        bad = ~np.isfinite(arr).all(axis=(-2, -1))
        limit = MAX_ABS.get(name)
        if frame_dtype == "float32" and name in frame_vars:
            limit = min(limit or _FLOAT32_MAX, _FLOAT32_MAX)
        if limit is not None:
            with np.errstate(invalid="ignore"):
                bad |= (np.abs(arr) > limit).any(axis=(-2, -1))
        if bad.any():
            which = [runs[i] for i in np.flatnonzero(bad)]
            raise BlowUpError(
                f"non-finite or runaway {name} (|{name}| > {limit:g}) at step {step} in run(s) "
                f"{which}: the integration blew up (try a smaller dt); the last good frame is "
                "kept in the store"
            )


def _advance(state, ff, T: float, params: HolsteinParams, runs: Sequence[int], noise_buffer):
    """One Langevin step, in place (Q, v and ``noise_buffer`` are reused); a force-field
    failure on a diverged state becomes BlowUpError."""
    import torch

    from cdwdata import dynamics

    try:
        return dynamics.step(state, ff, T, params, inplace=True, noise_buffer=noise_buffer)
    except BlowUpError:
        raise
    except (ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError) as err:
        # the drift has updated state.Q in place before the force field failed
        if bool(torch.isfinite(state.Q).all()) and bool(torch.isfinite(state.v).all()):
            raise
        raise BlowUpError(
            f"the integration blew up after step {state.step} in run(s) {list(runs)} "
            f"(positions became non-finite and the force field failed: {err}); try a smaller "
            "dt; the last good frame is kept in the store") from err


class RunByRun:
    """A force field evaluated one run at a time (the leading axis of ``Q``).

    Batched evaluation may round differently with the batch size (the cold filling solve
    iterates until every configuration of the batch has converged; GEMM blocking depends on
    the row count), so a run's bits would depend on which runs it was batched with.
    Evaluated run by run, every run is a pure function of its own key: resumed, regrouped and
    added runs equal fresh ones bit for bit.
    """

    def __init__(self, forcefield) -> None:
        self.forcefield = forcefield

    def __getattr__(self, name: str):
        return getattr(self.forcefield, name)

    def evaluate(self, Q):

        F, n, _ = self.evaluate_with_mu(Q)
        return F, n

    @property
    def accepts_mu_hint(self) -> bool:
        return bool(getattr(self.forcefield, "accepts_mu_hint", False))

    def evaluate_with_mu(self, Q, mu_hint=None):
        import torch

        from cdwdata.dynamics import evaluate

        if Q.ndim < 3 or Q.shape[0] == 1:
            return evaluate(self.forcefield, Q, mu_hint)
        out = [evaluate(self.forcefield, Q[r:r + 1],
                        None if mu_hint is None else mu_hint[r:r + 1])
               for r in range(Q.shape[0])]
        mu = None if out[0][2] is None else torch.cat([m.reshape(1) for _, _, m in out])
        return torch.cat([F for F, _, _ in out]), torch.cat([n for _, n, _ in out]), mu


def _stored_mu(writer: store.TrajectoryWriter, it: int, jf: int, runs: list[int], frame: int,
               device):
    """The chemical potentials stored with ``frame`` (the warm start of a resumed solve), or
    None when the store has none (older stores, force fields without mu)."""
    import torch

    mu = writer.read_mu(it, jf, runs, frame)
    if mu is None or not np.isfinite(mu).all():
        return None
    return torch.as_tensor(mu, dtype=torch.float64, device=device)


class _FrameSink:
    """Writes frames in a background thread, at most one in flight, in submission order."""

    def __init__(self, writer: store.TrajectoryWriter, background: bool = True) -> None:
        self.writer = writer
        self._pool = None
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="cdw-writer")
        self._pending = None

    def put(self, it: int, jf: int, runs: Sequence[int], frame: int,
            arrays: dict[str, np.ndarray]) -> None:
        self.wait()
        if self._pool is None:
            self.writer.write_frame(it, jf, runs, frame, arrays)
        else:
            self._pending = self._pool.submit(self.writer.write_frame, it, jf, list(runs),
                                              frame, arrays)

    def wait(self) -> None:
        if self._pending is not None:
            fut, self._pending = self._pending, None
            fut.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def _plan(writer: store.TrajectoryWriter, it: int, jf: int, runs: list[int],
          n_frames: int) -> list[tuple[int, list[int]]]:
    """(restart marker, runs) batches: each batch restarts from frame ``marker - 1``.

    Runs of a segment are written together, so after a kill they are at most one frame
    apart; they then restart together from the earliest (re-writing identical frames for the
    others), which keeps the batch, hence the floating-point result, the same as without the
    kill. Otherwise runs are batched by their own progress.
    """
    done = writer.frames_done(it, jf)
    d = np.array([done[r] for r in runs])
    if (d >= n_frames).all():
        return []
    lo, hi = int(d.min()), int(d.max())
    if hi - lo <= 1:
        try:
            if lo > 0:
                for r in runs:
                    writer.read_checkpoint(it, jf, r, lo - 1)
            return [(lo, runs)]
        except StoreError:
            pass
    groups: dict[int, list[int]] = {}
    for r, k in zip(runs, d, strict=True):
        if k < n_frames:
            groups.setdefault(int(k), []).append(r)
    return sorted(groups.items())


def _progress_bar(progress: bool, plan, config: QuenchConfig, T: float, f: float):
    """A tqdm bar over the run-steps a segment's plan still has to take, or None."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    remaining = sum(len(g) * (config.steps - max(k - 1, 0) * config.save_every)
                    for k, g in plan)
    return tqdm(total=remaining, desc=f"T={T:g} f={f:g}", unit="run-step", leave=False)


def _restart_state(writer: store.TrajectoryWriter, config: QuenchConfig, it: int, jf: int,
                   group: list[int], keys: list[int], marker: int, ff, dtype):
    """``(state, frame)`` where a batch of runs (re)starts: the hot start at frame 0 (not yet
    written) for ``marker == 0``, else the checkpoint of frame ``marker - 1``."""
    import torch

    from cdwdata import dynamics

    if marker == 0:
        Q, v = dynamics.hot_start(keys, config.L, config.params, config.device, dtype,
                                  config.hot_start_T)
        return dynamics.init_state(ff, Q, v, keys, step=0), 0
    frame = marker - 1
    ck = [writer.read_checkpoint(it, jf, r, frame) for r in group]
    t = {k: torch.as_tensor(np.stack([c[k] for c in ck]), device=config.device, dtype=dtype)
         for k in store.CKPT_VARS}
    state = dynamics.LangevinState(
        Q=t[schema.Q], v=t[schema.V], F=t[schema.FORCE], n=t[schema.N],
        step=frame * config.save_every, keys=tuple(keys),
        mu=_stored_mu(writer, it, jf, group, frame, config.device))
    return state, frame


def _emit(sink: _FrameSink, state, it: int, jf: int, group: list[int], frame: int,
          check: dict, on_frame) -> None:
    """Check a frame for blow-ups, queue it for writing, then tell ``on_frame``."""
    arrays = _state_arrays(state)
    _check_finite(arrays, group, state.step, **check)
    sink.put(it, jf, group, frame, arrays)
    if on_frame is not None:
        on_frame(frame, group)


def run_segment(path, config: QuenchConfig, it: int, jf: int, runs: Sequence[int] | None = None,
                forcefield=None, progress: bool = False,
                on_frame: Callable[[int, list[int]], None] | None = None,
                background_writes: bool = True, batch_forces: bool | None = None) -> int:
    """Advance ``runs`` of cell (T index ``it``, f index ``jf``) to ``config.steps``.

    Each run resumes from its last complete frame (or starts hot at step 0); the runs are
    batched on ``config.device``. Frames are written as they are produced.

    Parameters
    ----------
    path : str or Path
        A store made by :func:`prepare_store` for ``config``.
    forcefield : ForceField, optional
        Default: :func:`make_forcefield` of ``config.forcefield``.
    on_frame : callable, optional
        ``on_frame(frame, runs)`` after each frame is computed and queued for writing (an
        exception from it stops the segment; queued frames are written first).
    background_writes : bool
        Compress and write frames in a background thread while the next steps compute.
    batch_forces : bool, optional
        Evaluate the force field on all runs at once (default on CUDA devices, where batching
        pays) instead of run by run (:class:`RunByRun`, default on CPU). Run by run, each run's
        result is independent of its batch mates, so resumed and added runs are bit-identical
        to fresh ones whatever the grouping; batched, that holds when the grouping is the same
        (the store keeps ``runs_per_task``, and an interrupted batch restarts together).

    Returns
    -------
    int
        Langevin steps taken, summed over runs.

    Raises
    ------
    BlowUpError
        When a run becomes non-finite; the frames before it stay in the store and
        ``frames_done`` is not advanced past the last good frame.
    """
    import torch


    T, f = config.temperatures[it], config.fillings[jf]
    runs = list(range(config.runs)) if runs is None else [int(r) for r in runs]
    writer = store.TrajectoryWriter(path)
    n_frames = config.n_frames
    plan = _plan(writer, it, jf, runs, n_frames)
    if not plan:
        return 0
    keys_all = config.seeds()[it, jf]
    dtype = _torch_dtype(config.compute_dtype)
    ff = forcefield or make_forcefield(config.forcefield, T, f, config.params, config.device,
                                       config.compute_dtype, config.precision,
                                       config.compile)
    if batch_forces is None:
        batch_forces = str(config.device).startswith("cuda")
    if not batch_forces:
        ff = RunByRun(ff)
    taken = 0
    bar = _progress_bar(progress, plan, config, T, f)
    sink = _FrameSink(writer, background_writes)
    check = {"frame_vars": config.frame_vars, "frame_dtype": config.frame_dtype}
    try:
        with torch.no_grad():
            for marker, group in plan:
                keys = [int(keys_all[r]) for r in group]
                state, frame = _restart_state(writer, config, it, jf, group, keys, marker, ff,
                                              dtype)
                if marker == 0:
                    _emit(sink, state, it, jf, group, frame, check, on_frame)
                xi = torch.empty_like(state.Q)  # the thermal-noise buffer of the group
                while frame + 1 < n_frames:
                    for _ in range(config.save_every):
                        state = _advance(state, ff, T, config.params, group, xi)
                    frame += 1
                    taken += config.save_every * len(group)
                    if bar is not None:
                        bar.update(config.save_every * len(group))
                    _emit(sink, state, it, jf, group, frame, check, on_frame)
    finally:
        sink.close()
        if bar is not None:
            bar.close()
    return taken


def prepare_store(path, config: QuenchConfig, resume: bool = False, overwrite: bool = False,
                  command: str | None = None, add_runs: bool = False,
                  extra_attrs: dict[str, Any] | None = None) -> None:
    """Create the store for ``config`` or, with ``resume``, check the existing one matches.

    With ``resume`` and ``add_runs``, a store holding fewer runs than ``config.runs`` is grown
    to ``config.runs`` (existing runs untouched; new runs equal those of a fresh store with that
    many runs, since every run's RNG derives from (seed, T, f, run) only).
    """
    attrs = config.attrs(command)
    if extra_attrs:
        attrs.update(extra_attrs)
    if resume and store.exists(path):
        got = store.read_attrs(path)
        if got.get("kind", "trajectory") != "trajectory":
            raise StoreError(f"cannot resume {path}: it is a {got.get('kind')!r} store, not a "
                             "trajectory store")
        store.check_resumable(path, attrs, check_runs=not add_runs)
        if config.runs > int(got["runs"]):
            store.resize_runs(path, config.runs, config.seeds())
        else:
            store.repair_runs(path)
        store.repair_for_resume(path)  # damaged runs restart from an intact checkpoint
        return  # the command joins the history when the job has succeeded
    store.create_trajectory(path, config.layout(), config.seeds(), attrs, overwrite=overwrite)


@writes_store()
def run_quench(config: QuenchConfig, path, resume: bool = False, overwrite: bool = False,
               command: str | None = None, progress: bool = True, add_runs: bool = True) -> str:
    """Run every (T, f) cell of ``config`` in this process; return the store path.

    ``resume`` with a larger ``config.runs`` than the store holds adds runs (``add_runs``).
    """
    resuming = resume and store.exists(path)
    prepare_store(path, config, resume=resume, overwrite=overwrite, command=command,
                  add_runs=add_runs)
    cells = [(i, j) for i in range(len(config.temperatures)) for j in range(len(config.fillings))]
    for it, jf in cells:
        run_segment(path, config, it, jf, progress=progress)
    if resuming:
        store.append_history(path, config.attrs(command)["command"])
    return str(path)
