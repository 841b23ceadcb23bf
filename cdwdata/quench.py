"""Thermal-quench runs: hot start -> Langevin at bath temperature T -> frames in a zarr store.

A quench is described by a frozen :class:`QuenchConfig` whose every value ends up in the
store's attrs. :func:`run_segment` advances a set of runs of one (T, f) cell to the end,
resuming each from its last complete frame; :func:`run_quench` does all cells in this process
(the Dask ensemble in :mod:`cdwdata.ensemble` farms out the same segments to workers).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdwdata import schema, store
from cdwdata._version import __version__
from cdwdata.errors import BlowUpError, ParameterError
from cdwdata.params import HolsteinParams, check_filling, check_size, check_temperature

DEFAULT_FRAME_VARS = (schema.Q, schema.V, schema.N, schema.FORCE)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ParameterError(f"{name}={value!r} is not allowed: {name} must be an integer "
                             f">= {minimum}")
    return int(value)


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
        Base seed; run keys derive from (seed, T, f, run).
    params : HolsteinParams
    forcefield : str
        ``"ed"``, ``"tdgl"`` or an ML model name/path.
    frame_vars : tuple of str
        Variables stored every frame.
    frame_dtype : {"float64", "float32"}
    device : str
        torch device of the hot loop.
    compute_dtype : {"float64", "float32"}
    hot_start_T : float
        Temperature of the random initial state.
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
    hot_start_T: float = 5.0

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
        unknown = set(self.frame_vars) - set(DEFAULT_FRAME_VARS)
        if unknown or schema.Q not in self.frame_vars:
            raise ParameterError(f"frame_vars={self.frame_vars} must include 'Q' and be among "
                                 f"{DEFAULT_FRAME_VARS}")
        for name in ("frame_dtype", "compute_dtype"):
            if getattr(self, name) not in ("float32", "float64"):
                raise ParameterError(f"{name}={getattr(self, name)!r}: use float32 or float64")
        if self.hot_start_T <= 0:
            raise ParameterError(f"hot_start_T={self.hot_start_T} must be > 0")

    def layout(self) -> store.TrajectoryLayout:
        return store.TrajectoryLayout(
            L=self.L, temperatures=self.temperatures, fillings=self.fillings, runs=self.runs,
            steps=self.steps, save_every=self.save_every, dt=self.params.dt,
            frame_vars=tuple(self.frame_vars), frame_dtype=self.frame_dtype)

    def seeds(self) -> np.ndarray:
        """Run keys, shape (nT, nf, runs)."""
        from cdwdata.noise import run_key

        return np.array([[[run_key(self.seed, T, f, r) for r in range(self.runs)]
                          for f in self.fillings] for T in self.temperatures], dtype=np.int64)

    def attrs(self, command: str | None = None) -> dict[str, Any]:
        """Store attrs: every parameter, the layout, version and creation command."""
        out: dict[str, Any] = dict(self.params.to_dict())
        out.update(store.layout_attrs(self.layout()))
        out.update({
            "kind": "trajectory",
            "temperatures": list(self.temperatures),
            "fillings": list(self.fillings),
            "runs": self.runs,
            "seed": self.seed,
            "forcefield": self.forcefield,
            "model": "" if self.forcefield in ("ed", "tdgl") else self.forcefield,
            "hot_start_T": self.hot_start_T,
            "compute_dtype": self.compute_dtype,
            "params_json": json.dumps(self.params.to_dict(), sort_keys=True),
            "cdwdata_version": __version__,
            "command": command if command is not None else " ".join(sys.argv),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return out

    def replace(self, **changes) -> QuenchConfig:
        return dataclasses.replace(self, **changes)


def make_forcefield(spec: str, T: float, f: float, params: HolsteinParams, device: str = "cpu"):
    """Build the force field named by ``spec`` for bath temperature T and filling f."""
    if spec == "ed":
        from cdwdata.forcefields import EDForceField

        return EDForceField(T, f, params, device=device)
    if spec == "tdgl":
        from cdwdata.toy import TDGLForceField

        return TDGLForceField(f=f, params=params)
    from cdwdata import ml

    return ml.load_model(spec, params=params, f=f, device=device)


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _state_arrays(state) -> dict[str, np.ndarray]:
    return {schema.Q: state.Q.double().cpu().numpy(), schema.V: state.v.double().cpu().numpy(),
            schema.FORCE: state.F.double().cpu().numpy(),
            schema.N: state.n.double().cpu().numpy()}


def _check_finite(arrays: dict[str, np.ndarray], runs: Sequence[int], step: int) -> None:
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr).all(axis=(-2, -1))
        if bad.any():
            which = [runs[i] for i in np.flatnonzero(bad)]
            raise BlowUpError(
                f"non-finite {name} at step {step} in run(s) {which}: the integration blew up "
                "(try a smaller dt); the last good frame is kept in the store"
            )


def run_segment(path, config: QuenchConfig, it: int, jf: int, runs: Sequence[int] | None = None,
                forcefield=None, progress: bool = False) -> int:
    """Advance ``runs`` of cell (T index ``it``, f index ``jf``) to ``config.steps``.

    Each run resumes from its last complete frame (or starts hot at step 0). Runs at the same
    frame are batched together. Returns the number of Langevin steps taken (summed over runs).
    """
    import torch

    from cdwdata import dynamics

    T, f = config.temperatures[it], config.fillings[jf]
    runs = list(range(config.runs)) if runs is None else [int(r) for r in runs]
    writer = store.TrajectoryWriter(path)
    done = writer.frames_done(it, jf)
    n_frames = config.layout().n_frames
    keys_all = config.seeds()[it, jf]
    dtype = _torch_dtype(config.compute_dtype)
    ff = forcefield or make_forcefield(config.forcefield, T, f, config.params, config.device)
    taken = 0
    groups: dict[int, list[int]] = {}
    for r in runs:
        if done[r] < n_frames:
            groups.setdefault(int(done[r]), []).append(r)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        remaining = sum(len(g) * (config.steps - max(k - 1, 0) * config.save_every)
                        for k, g in groups.items())
        bar = tqdm(total=remaining, desc=f"T={T:g} f={f:g}", unit="run-step", leave=False)
    try:
        for frames_done, group in sorted(groups.items()):
            keys = [int(keys_all[r]) for r in group]
            if frames_done == 0:
                Q, v = dynamics.hot_start(keys, config.L, config.params, config.device, dtype,
                                          config.hot_start_T)
                state = dynamics.init_state(ff, Q, v, keys, step=0)
                arrays = _state_arrays(state)
                _check_finite(arrays, group, 0)
                writer.write_frame(it, jf, group, 0, arrays)
                frame = 0
            else:
                frame = frames_done - 1
                ck = [writer.read_checkpoint(it, jf, r, frame) for r in group]
                t = {k: torch.as_tensor(np.stack([c[k] for c in ck]), device=config.device,
                                        dtype=dtype) for k in store.CKPT_VARS}
                state = dynamics.LangevinState(
                    Q=t[schema.Q], v=t[schema.V], F=t[schema.FORCE], n=t[schema.N],
                    step=frame * config.save_every, keys=tuple(keys))
            with torch.no_grad():
                while frame + 1 < n_frames:
                    for _ in range(config.save_every):
                        state = dynamics.step(state, ff, T, config.params)
                    frame += 1
                    arrays = _state_arrays(state)
                    _check_finite(arrays, group, state.step)
                    writer.write_frame(it, jf, group, frame, arrays)
                    taken += config.save_every * len(group)
                    if bar is not None:
                        bar.update(config.save_every * len(group))
    finally:
        if bar is not None:
            bar.close()
    return taken


def prepare_store(path, config: QuenchConfig, resume: bool = False, overwrite: bool = False,
                  command: str | None = None) -> None:
    """Create the store for ``config`` or, with ``resume``, check the existing one matches."""
    attrs = config.attrs(command)
    if resume and store.exists(path):
        store.check_resumable(path, attrs)
        return
    store.create_trajectory(path, config.layout(), config.seeds(), attrs, overwrite=overwrite)


def run_quench(config: QuenchConfig, path, resume: bool = False, overwrite: bool = False,
               command: str | None = None, progress: bool = True) -> str:
    """Run every (T, f) cell of ``config`` in this process; return the store path."""
    prepare_store(path, config, resume=resume, overwrite=overwrite, command=command)
    cells = [(i, j) for i in range(len(config.temperatures)) for j in range(len(config.fillings))]
    for it, jf in cells:
        run_segment(path, config, it, jf, progress=progress)
    return str(path)
