"""The only module that knows the zarr layout of cdwdata stores.

Trajectory store (one per ensemble), dims ``(T, f, run, step, x, y)``:

* frame variables (``Q``, ``v``, ``n``, ``F`` or a subset), one chunk per (T, f, run, frame);
* ``frames_done (T, f, run)``: how many frames of the run are completely written; it is the
  resume marker and is written last;
* a two-slot checkpoint ``ckpt_Q, ckpt_v, ckpt_F, ckpt_n (T, f, run, slot, x, y)`` with
  ``ckpt_step (T, f, run, slot)``: the full float64 state at the latest frames, so a run
  resumes exactly even when only some variables are stored per frame. Frame k goes to slot
  ``k % 2``; its ``ckpt_step`` is written after its data, and ``frames_done`` after that, so
  a kill at any moment leaves a consistent (frames_done, checkpoint) pair.

The store is preallocated once (``to_zarr(compute=False)``: only metadata is written, unwritten
chunks read as NaN, ``frames_done`` as 0); writers then fill whole chunks, so writers of
different runs never touch the same chunk. The run dimension can grow later
(:func:`resize_runs`): existing chunks are not touched, new runs start with ``frames_done = 0``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import schema
from cdwdata.errors import StoreError

CKPT_VARS = (schema.Q, schema.V, schema.FORCE, schema.N)
SLOT = "slot"
#: Attributes a resumed run must match exactly (a key missing from an old store is not checked).
RESUME_KEYS = ("L", "steps", "save_every", "seed", "forcefield", "hot_start_T", "params_json",
               "precision",
               "compute_dtype", "frame_vars", "frame_dtype")


def _ckpt(name: str) -> str:
    return f"ckpt_{name}"


@dataclass(frozen=True)
class TrajectoryLayout:
    """Shape of a trajectory store.

    Attributes
    ----------
    L : int
        Lattice size.
    temperatures, fillings : tuple of float
        Coordinates of the T and f dims.
    runs : int
        Number of runs per (T, f).
    steps, save_every : int
        Total Langevin steps and the frame interval; frames at steps 0, save_every, ..., steps.
    dt : float
        Time step (for the ``time`` coordinate).
    frame_vars : tuple of str
        Variables stored at every frame.
    frame_dtype : str
        Storage dtype of frame variables ("float64" or "float32"); checkpoints are float64.
    """

    L: int
    temperatures: tuple[float, ...]
    fillings: tuple[float, ...]
    runs: int
    steps: int
    save_every: int
    dt: float
    frame_vars: tuple[str, ...] = (schema.Q, schema.V, schema.N, schema.FORCE)
    frame_dtype: str = "float64"

    @property
    def n_frames(self) -> int:
        return self.steps // self.save_every + 1

    @property
    def frame_steps(self) -> np.ndarray:
        return np.arange(self.n_frames) * self.save_every


def _lazy(shape, value, dtype):
    """A never-computed dask array of ``shape`` (one dask chunk: a tiny graph at any size)."""
    import dask.array as da

    return da.full(shape, value, chunks=shape, dtype=dtype)


def _skeleton(layout: TrajectoryLayout, seeds: np.ndarray, attrs: dict[str, Any]):
    """(dataset, encoding) of an empty trajectory store; encoding fixes the zarr chunks."""
    import xarray as xr

    nT, nf, R, L = len(layout.temperatures), len(layout.fillings), layout.runs, layout.L
    frame_dims = (schema.T, schema.F_FILL, schema.RUN, schema.STEP, schema.X, schema.Y)
    fshape = (nT, nf, R, layout.n_frames, L, L)
    data: dict[str, Any] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for name in layout.frame_vars:
        data[name] = xr.Variable(frame_dims, _lazy(fshape, np.nan, layout.frame_dtype),
                                 attrs=schema.attrs(name))
        encoding[name] = {"chunks": (1, 1, 1, 1, L, L)}
    cdims = (schema.T, schema.F_FILL, schema.RUN, SLOT, schema.X, schema.Y)
    for name in CKPT_VARS:
        data[_ckpt(name)] = xr.Variable(cdims, _lazy((nT, nf, R, 2, L, L), np.nan, "float64"),
                                        attrs={"long_name": f"checkpoint of {name}"})
        encoding[_ckpt(name)] = {"chunks": (1, 1, 1, 1, L, L)}
    mdims = (schema.T, schema.F_FILL, schema.RUN)
    data[schema.MU] = xr.Variable((*mdims, schema.STEP),
                                  _lazy((nT, nf, R, layout.n_frames), np.nan, "float64"),
                                  attrs=schema.attrs(schema.MU))
    encoding[schema.MU] = {"chunks": (1, 1, 1, 1)}
    data[_ckpt("step")] = xr.Variable(
        (*mdims, SLOT), _lazy((nT, nf, R, 2), -1, "int64"),
        attrs={"long_name": "step held by each checkpoint slot (valid only below frames_done)"},
    )
    encoding[_ckpt("step")] = {"chunks": (1, 1, 1, 1)}
    data[schema.FRAMES_DONE] = xr.Variable(
        mdims, _lazy((nT, nf, R), 0, "int64"), attrs=schema.attrs(schema.FRAMES_DONE))
    encoding[schema.FRAMES_DONE] = {"chunks": (1, 1, 1)}
    steps = layout.frame_steps
    coords = {
        schema.T: (schema.T, np.asarray(layout.temperatures, float), schema.attrs(schema.T)),
        schema.F_FILL: (schema.F_FILL, np.asarray(layout.fillings, float),
                        schema.attrs(schema.F_FILL)),
        schema.RUN: (schema.RUN, np.arange(R), schema.attrs(schema.RUN)),
        schema.STEP: (schema.STEP, steps, schema.attrs(schema.STEP)),
        schema.TIME: (schema.STEP, steps * layout.dt, schema.attrs(schema.TIME)),
        schema.X: (schema.X, np.arange(L), schema.attrs(schema.X)),
        schema.Y: (schema.Y, np.arange(L), schema.attrs(schema.Y)),
        schema.SEED: (mdims, seeds.astype("int64"), schema.attrs(schema.SEED)),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs), encoding


def exists(path: str | os.PathLike) -> bool:
    """True if ``path`` holds something (a store or any other file)."""
    return Path(path).exists()


def _make_room(path, overwrite: bool) -> Path:
    """Refuse an existing ``path`` (StoreError, data untouched) or, with ``overwrite``, remove it."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise StoreError(
                f"{path} already exists: pass --resume to continue it or --overwrite to replace it"
            )
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return path


def _atomic_create(path: Path, write) -> None:
    """Build a store with ``write(tmp_path)`` in a hidden sibling folder, then rename it.

    A kill or a full disk during creation therefore never leaves a half-built store at
    ``path``: either the complete skeleton is there or nothing is. Leftover temporary folders
    of earlier, interrupted creations are removed first.
    """
    path = Path(path)
    prefix = f".{path.name}.creating-"
    for stale in path.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f"{prefix}{os.getpid()}")
    try:
        write(tmp)
        os.rename(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"cannot create {path}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def create_trajectory(path, layout: TrajectoryLayout, seeds: np.ndarray, attrs: dict[str, Any],
                      overwrite: bool = False) -> None:
    """Preallocate a trajectory store at ``path`` (metadata only: no chunk is written).

    Raises :class:`StoreError` if ``path`` exists and ``overwrite`` is false; the existing data
    is then left untouched.
    """
    path = _make_room(path, overwrite)
    ds, encoding = _skeleton(layout, seeds, attrs)
    _atomic_create(path, lambda tmp: ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3,
                                                consolidated=False, encoding=encoding))


def save_dataset(ds, path, overwrite: bool = False) -> None:
    """Write a small, fully computed Dataset (a report) as a new zarr store at ``path``.

    Refuses an existing ``path`` unless ``overwrite`` (StoreError, data untouched); the store
    appears complete or not at all (built in a temporary sibling, then renamed).
    """
    path = _make_room(path, overwrite)
    _atomic_create(path, lambda tmp: ds.to_zarr(tmp, mode="w-", zarr_format=3,
                                                consolidated=False))


def layout_attrs(layout: TrajectoryLayout) -> dict[str, Any]:
    """The layout as store attrs (so a store alone says its shape)."""
    return {"L": layout.L, "steps": layout.steps, "save_every": layout.save_every,
            "dt": layout.dt, "frame_vars": list(layout.frame_vars),
            "frame_dtype": layout.frame_dtype}


def read_attrs(path) -> dict[str, Any]:
    """Attributes of the store at ``path`` (raises StoreError if it is not a cdwdata store)."""
    import zarr

    if not Path(path).exists():
        raise StoreError(f"{path} does not exist")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a missing/foreign path
        raise StoreError(f"{path} is not a readable zarr store: {err}") from err
    return dict(group.attrs)


def update_attrs(path, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the store's attrs (only the driver calls this, never workers)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(changes)


def _check_complete_skeleton(path, attrs: dict[str, Any]) -> None:
    """StoreError if the trajectory store lacks arrays a resume needs (a damaged store)."""
    import zarr

    if attrs.get("kind") not in (None, "trajectory"):
        return
    need = {schema.FRAMES_DONE, _ckpt("step"), *(_ckpt(v) for v in CKPT_VARS),
            *attrs.get("frame_vars", [])}
    have = set(zarr.open_group(str(path), mode="r").array_keys())
    missing = sorted(need - have)
    if missing:
        raise StoreError(f"cannot resume {path}: the store is incomplete (missing "
                         f"{', '.join(missing)}); replace it with --overwrite")


def check_resumable(path, expected: dict[str, Any], check_runs: bool = True) -> None:
    """Raise StoreError unless the store at ``path`` was made with the same settings.

    With ``check_runs=False`` the stored number of runs may be smaller than
    ``expected["runs"]`` (the caller then grows the store with :func:`resize_runs`).
    """
    got = read_attrs(path)
    _check_complete_skeleton(path, got)
    for key in RESUME_KEYS:
        if key in expected and key in got and json.dumps(got[key]) != json.dumps(expected[key]):
            raise StoreError(
                f"cannot resume {path}: it was made with {key}={got.get(key)!r}, "
                f"this run asks for {key}={expected[key]!r}"
            )
    for dim, key in ((schema.T, "temperatures"), (schema.F_FILL, "fillings")):
        if key in expected and list(got.get(key, [])) != list(expected[key]):
            raise StoreError(
                f"cannot resume {path}: its {dim} values are {got.get(key)}, "
                f"this run asks for {expected[key]}"
            )
    if "runs" in expected:
        have, want = got.get("runs"), expected["runs"]
        if (check_runs and have != want) or (not check_runs and have > want):
            raise StoreError(
                f"cannot resume {path}: it holds {have} runs, this run asks for {want}"
                + ("" if check_runs else " (runs can be added, never removed)")
            )


def resize_runs(path, runs: int, seeds: np.ndarray) -> int:
    """Grow the run dimension of the trajectory store at ``path`` to ``runs``.

    Chunks of existing runs are not touched. New runs get their ``seed`` coordinate (``seeds``,
    shape (nT, nf, runs), the keys of every run) and ``frames_done = 0``; the ``runs`` attr is
    updated last, so an interrupted call is simply repeated. Returns the previous run count.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    old = int(group.attrs["runs"])
    if runs < old:
        raise StoreError(f"{path} holds {old} runs; runs can be added, never removed")
    for name in list(group.array_keys()):
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if schema.RUN not in dims:
            continue
        ax = dims.index(schema.RUN)
        if arr.shape[ax] != runs:
            shape = list(arr.shape)
            shape[ax] = runs
            arr.resize(tuple(shape))
    if runs > old:
        group[schema.RUN][old:] = np.arange(old, runs)
        group[schema.SEED][:, :, old:] = np.asarray(seeds, dtype="int64")[:, :, old:]
        group[schema.FRAMES_DONE][:, :, old:] = 0
    group.attrs.update({"runs": int(runs)})
    return old


def repair_runs(path) -> None:
    """Undo an interrupted :func:`resize_runs`: shrink arrays back to the ``runs`` attr."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    runs = int(group.attrs["runs"])
    for name in list(group.array_keys()):
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if schema.RUN in dims and arr.shape[dims.index(schema.RUN)] > runs:
            shape = list(arr.shape)
            shape[dims.index(schema.RUN)] = runs
            arr.resize(tuple(shape))


def frames_done(path) -> np.ndarray:
    """``frames_done`` of every run, shape (nT, nf, runs) (the progress of a store)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return np.asarray(group[schema.FRAMES_DONE][...])


def _runs_slice(runs: Sequence[int]) -> slice | None:
    """``runs`` as a slice when they are contiguous and ascending, else None."""
    if runs and list(runs) == list(range(runs[0], runs[0] + len(runs))):
        return slice(runs[0], runs[0] + len(runs))
    return None


def _open_for_writing(path):
    """The zarr group at ``path`` in r+ mode, or StoreError saying why not."""
    import zarr

    try:
        return zarr.open_group(str(path), mode="r+")
    except Exception as err:  # zarr raises several types for a missing/foreign path
        raise StoreError(f"cannot open {path} for writing: {err}") from err


class TrajectoryWriter:
    """Chunk-aligned writes of frames and checkpoints of one store (one run per chunk).

    Every chunk a writer touches belongs to the runs it was given, so any number of writers of
    disjoint runs (threads, processes, machines) can share one store.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.group = _open_for_writing(path)
        attrs = dict(self.group.attrs)
        self.frame_vars = tuple(attrs["frame_vars"])
        self.frame_dtype = np.dtype(attrs.get("frame_dtype", "float64"))
        self.save_every = int(attrs["save_every"])
        self.has_mu = schema.MU in self.group  # stores made before mu was stored lack it
        self._arrays: dict[str, Any] = {}

    def _arr(self, name: str):
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.group[name]
        return arr

    def frames_done(self, it: int, jf: int) -> np.ndarray:
        """Frames completely written for every run at (T index, f index), shape (R,)."""
        return np.asarray(self._arr(schema.FRAMES_DONE)[it, jf, :])

    def read_checkpoint(self, it: int, jf: int, run: int, frame: int) -> dict[str, np.ndarray]:
        """Full state of ``run`` at ``frame`` from its checkpoint slot (float64 arrays)."""
        slot = frame % 2
        held = int(self._arr(_ckpt("step"))[it, jf, run, slot])
        if held != frame * self.save_every:
            raise StoreError(
                f"{self.path}: checkpoint of run {run} holds step {held}, expected "
                f"{frame * self.save_every}; the store is damaged, rerun with --overwrite"
            )
        return {name: np.asarray(self._arr(_ckpt(name))[it, jf, run, slot])
                for name in CKPT_VARS}

    def read_mu(self, it: int, jf: int, runs: Sequence[int], frame: int) -> np.ndarray | None:
        """Stored chemical potentials of ``runs`` at ``frame`` (None if the store has none)."""
        if not self.has_mu:
            return None
        arr = self._arr(schema.MU)
        return np.array([float(arr[it, jf, int(r), frame]) for r in runs])

    def _put(self, name: str, it: int, jf: int, runs: list[int], index, data) -> None:
        arr = self._arr(name)
        sl = _runs_slice(runs)
        if sl is not None:
            arr[(it, jf, sl, *index)] = data
        else:
            for r_i, run in enumerate(runs):
                arr[(it, jf, run, *index)] = data[r_i]

    def write_frame(self, it: int, jf: int, runs: Sequence[int], frame: int,
                    state: dict[str, np.ndarray]) -> None:
        """Write frame ``frame`` of ``runs`` (state arrays (R, L, L)), then mark it done.

        Order: the slot's checkpoint step is invalidated (-1), then frame variables and
        checkpoint slot of every run are written, then their checkpoint steps, then their
        ``frames_done``. A kill in between leaves each run either at the previous frame (whose
        checkpoint slot is intact) or at this one, and never a slot whose step lies about its
        data.
        """
        runs = [int(r) for r in runs]
        slot = frame % 2
        self._put(_ckpt("step"), it, jf, runs, (slot,), np.full(len(runs), -1, dtype=np.int64))
        for name in self.frame_vars:
            self._put(name, it, jf, runs, (frame,), np.asarray(state[name], self.frame_dtype))
        if self.has_mu and schema.MU in state:
            self._put(schema.MU, it, jf, runs, (frame,), np.asarray(state[schema.MU], float))
        for name in CKPT_VARS:
            self._put(_ckpt(name), it, jf, runs, (slot,), np.asarray(state[name], np.float64))
        self._put(_ckpt("step"), it, jf, runs, (slot,),
                  np.full(len(runs), frame * self.save_every, dtype=np.int64))
        self._put(schema.FRAMES_DONE, it, jf, runs, (), np.full(len(runs), frame + 1, np.int64))

    def mark_frames_done(self, it: int, jf: int, runs: Sequence[int], value: int) -> None:
        """Set ``frames_done`` of ``runs`` (tests use it to simulate a kill mid-write)."""
        runs = [int(r) for r in runs]
        self._put(schema.FRAMES_DONE, it, jf, runs, (), np.full(len(runs), value, np.int64))


def open_dataset(path, **kwargs):
    """Open any cdwdata store lazily as an xarray Dataset (checkpoint variables dropped)."""
    import xarray as xr

    if not Path(path).exists():
        raise StoreError(f"{path} does not exist")
    try:
        ds = xr.open_zarr(path, consolidated=False, **kwargs)
    except Exception as err:
        raise StoreError(f"{path} is not a readable zarr store: {err}") from err
    drop = [v for v in ds.variables if str(v).startswith("ckpt_")] + (
        [SLOT] if SLOT in ds.dims else [])
    return ds.drop_vars([v for v in drop if v in ds.variables])


def describe(path) -> str:
    """Human-readable summary of a store: what it holds and how it was made."""
    ds = open_dataset(path)
    lines = [f"store: {path}"]
    kind = ds.attrs.get("kind", "unknown")
    lines.append(f"kind: {kind}")
    dims = ", ".join(f"{d}={n}" for d, n in ds.sizes.items())
    lines.append(f"dims: {dims}")
    for name, var in ds.data_vars.items():
        lines.append(f"  {name:12s} {var.dims} {var.dtype} {var.attrs.get('long_name', '')}")
    if schema.FRAMES_DONE in ds:
        done = ds[schema.FRAMES_DONE].values
        total = ds.sizes.get(schema.STEP, 0)
        lines.append(f"progress: {int((done >= total).sum())}/{done.size} runs complete, "
                     f"{int(done.sum())}/{done.size * total} frames written")
    for key in ("command", "created", "cdwdata_version", "forcefield", "model", "seed",
                "compute_dtype", "device"):
        if ds.attrs.get(key) not in (None, ""):
            lines.append(f"{key}: {ds.attrs[key]}")
    for line in ds.attrs.get("history", [])[-5:]:
        lines.append(f"history: {line}")
    params = {k: ds.attrs[k] for k in ("t", "g", "k", "kappa", "mass", "gamma", "dt")
              if k in ds.attrs}
    if params:
        lines.append("params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return "\n".join(lines)


# --- training sets ---------------------------------------------------------------------------

SAMPLE_DONE = "sample_done"
TRAINSET_VARS = (schema.Q, schema.FORCE, schema.N)


def create_trainset(path, L: int, fillings, sources, runs, steps, T: float,
                    attrs: dict[str, Any], overwrite: bool = False) -> None:
    """Preallocate a training set with dims ``(f, sample, x, y)``.

    ``sources``, ``runs``, ``steps`` (length n_samples) become coordinates on ``sample``;
    ``sample_done (f, sample)`` marks samples whose Q, F and n are completely written.
    """
    import dask.array as da
    import xarray as xr

    path = _make_room(path, overwrite)
    nf, ns = len(fillings), len(sources)
    dims = (schema.F_FILL, schema.SAMPLE, schema.X, schema.Y)
    data = {
        name: xr.Variable(dims, da.full((nf, ns, L, L), np.nan, chunks=(1, 1, L, L)),
                          attrs=schema.attrs(name))
        for name in TRAINSET_VARS
    }
    data[SAMPLE_DONE] = xr.Variable(
        (schema.F_FILL, schema.SAMPLE), da.zeros((nf, ns), dtype="int8", chunks=1),
        attrs={"long_name": "sample completely written (resume marker)", "units": "1"})
    coords = {
        schema.F_FILL: (schema.F_FILL, np.asarray(fillings, float), schema.attrs(schema.F_FILL)),
        schema.SAMPLE: (schema.SAMPLE, np.arange(ns), schema.attrs(schema.SAMPLE)),
        schema.SOURCE: (schema.SAMPLE, np.asarray(sources, dtype=object), schema.attrs(schema.SOURCE)),
        schema.RUN: (schema.SAMPLE, np.asarray(runs, dtype="int64"), schema.attrs(schema.RUN)),
        schema.STEP: (schema.SAMPLE, np.asarray(steps, dtype="int64"), schema.attrs(schema.STEP)),
        schema.T: ((), float(T), schema.attrs(schema.T)),
        schema.X: (schema.X, np.arange(L), schema.attrs(schema.X)),
        schema.Y: (schema.Y, np.arange(L), schema.attrs(schema.Y)),
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    _atomic_create(path, lambda tmp: ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3,
                                                consolidated=False))


class TrainsetWriter:
    """Chunk-aligned writes of training samples, each followed by its done marker."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.group = _open_for_writing(path)

    def done(self, jf: int) -> np.ndarray:
        """Boolean mask of finished samples of filling index ``jf``."""
        return np.asarray(self.group[SAMPLE_DONE][jf, :]).astype(bool)

    def write_sample(self, jf: int, sample: int, arrays: dict[str, np.ndarray]) -> None:
        for name in TRAINSET_VARS:
            self.group[name][jf, sample] = arrays[name]
        self.group[SAMPLE_DONE][jf, sample] = 1


# --- grand-canonical training sets -------------------------------------------------------------

LABEL = "label"
GC_PLAN = ("source", "origin", "it", "jf", "run", "frame", "step", "f0")


def create_gcset(path, L: int, n_labels: int, plan: dict[str, np.ndarray],
                 attrs: dict[str, Any], overwrite: bool = False) -> None:
    """Preallocate a grand-canonical training set (see :mod:`cdwdata.gcdata`).

    Dims ``(sample, x, y)`` for ``Q`` and ``(sample, label, x, y)`` for ``n`` (float32); ``mu``
    and ``T_e`` on ``(sample, label)``; ``plan`` (:data:`GC_PLAN` arrays) becomes coordinates
    on ``sample``; ``sample_done (sample)`` marks completely written samples.
    """
    import dask.array as da
    import xarray as xr

    path = _make_room(path, overwrite)
    ns, K = len(plan["source"]), int(n_labels)
    S, LB, X, Y = schema.SAMPLE, LABEL, schema.X, schema.Y
    data = {
        schema.Q: xr.Variable((S, X, Y), da.full((ns, L, L), np.nan, chunks=(1, L, L)),
                              attrs=schema.attrs(schema.Q)),
        schema.N: xr.Variable((S, LB, X, Y),
                              da.full((ns, K, L, L), np.nan, dtype="float32",
                                      chunks=(1, K, L, L)),
                              attrs={"units": "1", "long_name": "exact local electron density "
                                     "at (mu, T_e)"}),
        schema.MU: xr.Variable((S, LB), da.full((ns, K), np.nan, chunks=(1, K)),
                               attrs=schema.attrs(schema.MU)),
        schema.T_E: xr.Variable((S, LB), da.full((ns, K), np.nan, chunks=(1, K)),
                                attrs=schema.attrs(schema.T_E)),
        SAMPLE_DONE: xr.Variable((S,), da.zeros(ns, dtype="int8", chunks=1),
                                 attrs={"long_name": "sample completely written (resume "
                                        "marker)", "units": "1"}),
    }
    coords = {S: (S, np.arange(ns), schema.attrs(S)),
              X: (X, np.arange(L), schema.attrs(X)), Y: (Y, np.arange(L), schema.attrs(Y))}
    for name in GC_PLAN:
        values = plan[name]
        if values.dtype.kind in "US":
            values = values.astype(object)
        coords[name if name != "source" else schema.SOURCE] = (S, values)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    _atomic_create(path, lambda tmp: ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3,
                                                consolidated=False))


class GCSetWriter:
    """Chunk-aligned writes of grand-canonical samples, each followed by its done marker."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.group = _open_for_writing(path)

    def done(self) -> np.ndarray:
        return np.asarray(self.group[SAMPLE_DONE][...]).astype(bool)

    def plan(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(self.group[name][...]) for name in GC_PLAN}

    def write_sample(self, sample: int, arrays: dict[str, np.ndarray]) -> None:
        for name in (schema.Q, schema.N, schema.MU, schema.T_E):
            self.group[name][sample] = arrays[name]
        self.group[SAMPLE_DONE][sample] = 1
