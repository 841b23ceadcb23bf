"""The only module that knows the zarr layout of cdwdata stores.

Trajectory store (one per ensemble), dims ``(T, f, run, step, x, y)``:

* frame variables (``Q``, ``v``, ``n``, ``F`` or a subset), one chunk per (T, f, run, frame);
* ``frames_done (T, f, run)``: how many frames of the run are completely written; it is the
  resume marker and is written last;
* a two-slot checkpoint in the subgroup ``checkpoint``: ``Q, v, F, n (T, f, run, slot, x, y)``
  with ``step (T, f, run, slot)``, the full float64 state at the latest frames, so a run
  resumes exactly even when only some variables are stored per frame. Frame k goes to slot
  ``k % 2``; its ``step`` is written after its data, and ``frames_done`` after that, so a kill
  at any moment leaves a consistent (frames_done, checkpoint) pair. Being a subgroup, it stays
  out of ``xr.open_zarr(path)`` (stores made by earlier versions keep it as root arrays
  ``ckpt_*``, which :func:`open_dataset` drops; they resume as before).

Every chunk of a store written by this module carries a CRC-32C checksum (zarr's
``crc32c`` codec after the compressor), so a flipped bit or a truncated chunk fails to read
instead of decoding to garbage; :func:`verify` finds missing and corrupt chunks and names them
by variable and (T, f, run, step). Every store has consolidated metadata (refreshed after each
metadata change), so ``xr.open_zarr(path)`` opens it directly.

The store is preallocated once (``to_zarr(compute=False)``: only metadata is written, unwritten
chunks read as NaN, ``frames_done`` as 0); writers then fill whole chunks, so writers of
different runs never touch the same chunk. The run dimension can grow later
(:func:`resize_runs`): existing chunks are not touched, new runs start with ``frames_done = 0``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import schema
from cdwdata.errors import StoreDamagedError, StoreError

CKPT_VARS = (schema.Q, schema.V, schema.FORCE, schema.N)
SLOT = "slot"
#: Subgroup of a trajectory store holding the checkpoint (``checkpoint/Q``, ..., ``/step``).
CKPT_GROUP = "checkpoint"
#: Root-array prefix of the checkpoint in stores made before it moved to :data:`CKPT_GROUP`.
OLD_CKPT_PREFIX = "ckpt_"
#: Attributes a resumed run must match exactly (a key missing from an old store is not checked).
RESUME_KEYS = ("L", "steps", "save_every", "seed", "forcefield", "hot_start_T", "params_json",
               "precision", "compile",
               "compute_dtype", "frame_vars", "frame_dtype")
#: The value of a resume key in a store made before the key existed.
RESUME_DEFAULTS = {"compile": False}


log = logging.getLogger(__name__)


def _ckpt(name: str) -> str:
    """Path of checkpoint array ``name`` (``Q``, ..., ``step``) in a new store."""
    return f"{CKPT_GROUP}/{name}"


def _checksummed() -> dict[str, Any]:
    """zarr v3 encoding of every cdwdata array: zstd, then a CRC-32C of the compressed chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": (ZstdCodec(level=0), Crc32cCodec())}


def _encoding(ds, chunks: dict[str, tuple[int, ...]] | None = None) -> dict[str, dict]:
    """Encoding of every variable and coordinate of ``ds``: checksums, and ``chunks``."""
    out = {}
    for name in ds.variables:
        enc = dict(_checksummed())
        if chunks and name in chunks:
            enc["chunks"] = chunks[name]
        out[str(name)] = enc
    return out


@contextlib.contextmanager
def _quiet_zarr() -> Any:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (we rely on
    zarr-python and xarray reading it, which they do)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", module="zarr")
        warnings.filterwarnings("ignore", message=".*consolidated metadata", module="zarr")
        yield


def _consolidate(path) -> None:
    """Refresh the consolidated metadata of the store at ``path`` (after metadata changes)."""
    import zarr

    with _quiet_zarr():
        zarr.consolidate_metadata(str(path))


def _is_consolidated(path) -> bool:
    try:
        root = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(root, dict) and bool(root.get("consolidated_metadata"))


def _metadata_error(path, err: BaseException, what: str) -> StoreError:
    """A StoreError for a store whose metadata cannot be read, naming the broken file."""
    root = Path(path)
    for meta in sorted([root / "zarr.json", *root.rglob("zarr.json")]):
        if not meta.exists():
            continue
        try:
            json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as bad:
            reason = "is empty" if meta.stat().st_size == 0 else \
                f"is not valid JSON (truncated or edited?): {bad}"
            return StoreError(f"{path}: metadata file {meta} {reason}")
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(f"{path} {what}: {first}")


def _group(path, mode: str = "r"):
    """The zarr group at ``path`` or a StoreError naming the problem (and a broken file)."""
    import zarr

    if not Path(path).exists():
        raise StoreError(f"{path} does not exist")
    try:
        with _quiet_zarr():
            return zarr.open_group(str(path), mode=mode, use_consolidated=False)
    except Exception as err:  # zarr raises several types for a missing/foreign/broken path
        raise _metadata_error(path, err, "is not a readable zarr store" if mode == "r"
                              else "cannot be opened for writing") from err


def zarr_format(path) -> int:
    """Zarr format (2 or 3) of the store at ``path``."""
    return 3 if (Path(path) / "zarr.json").exists() else 2


def private_variables(path) -> list[str]:
    """Root arrays of ``path`` that are store internals, not data (checkpoints of old stores)."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(c.name for c in p.iterdir() if c.name.startswith(OLD_CKPT_PREFIX))


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
    """(dataset, encoding, checkpoint dataset, its encoding) of an empty trajectory store;
    the encodings fix the zarr chunks and add checksums."""
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
    ckpt: dict[str, Any] = {}
    ckpt_chunks: dict[str, tuple[int, ...]] = {}
    for name in CKPT_VARS:
        ckpt[name] = xr.Variable(cdims, _lazy((nT, nf, R, 2, L, L), np.nan, "float64"),
                                 attrs={"long_name": f"checkpoint of {name}"})
        ckpt_chunks[name] = (1, 1, 1, 1, L, L)
    mdims = (schema.T, schema.F_FILL, schema.RUN)
    data[schema.MU] = xr.Variable((*mdims, schema.STEP),
                                  _lazy((nT, nf, R, layout.n_frames), np.nan, "float64"),
                                  attrs=schema.attrs(schema.MU))
    encoding[schema.MU] = {"chunks": (1, 1, 1, 1)}
    ckpt["step"] = xr.Variable(
        (*mdims, SLOT), _lazy((nT, nf, R, 2), -1, "int64"),
        attrs={"long_name": "step held by each checkpoint slot (valid only below frames_done)"},
    )
    ckpt_chunks["step"] = (1, 1, 1, 1)
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
    root = xr.Dataset(data, coords=coords, attrs=attrs)
    ck = xr.Dataset(ckpt, attrs={"description": "two-slot checkpoint of every run (resume "
                                 "state); not data"})
    return root, _encoding(root, encoding_chunks(encoding)), ck, _encoding(ck, ckpt_chunks)


def encoding_chunks(encoding: dict[str, dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    return {k: v["chunks"] for k, v in encoding.items() if "chunks" in v}


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
        import errno

        shutil.rmtree(tmp, ignore_errors=True)
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        raise StoreError(f"cannot create {path}: {err.strerror or err}"
                         + ("; free some disk space, then rerun" if full else "")) from err
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
    ds, encoding, ck, ck_encoding = _skeleton(layout, seeds, attrs)

    def write(tmp):
        ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=False,
                   encoding=encoding)
        ck.to_zarr(tmp, group=CKPT_GROUP, mode="w-", compute=False, zarr_format=3,
                   consolidated=False, encoding=ck_encoding)
        _consolidate(tmp)

    _atomic_create(path, write)


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
    return dict(_group(path).attrs)


def update_attrs(path, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the store's attrs (only the driver calls this, never workers)."""
    group = _group(path, "r+")
    group.attrs.update(changes)
    _consolidate(path)


def append_history(path, command: str) -> None:
    """Add ``command`` to the store's ``history`` attr (after a job on it has succeeded)."""
    history = list(read_attrs(path).get("history", []))
    update_attrs(path, {"history": [*history, command]})


def _array_paths(group) -> list[str]:
    """Paths of every array of ``group``, subgroups included (``Q``, ``checkpoint/Q``, ...)."""
    return sorted(name for name, node in group.members(max_depth=None)
                  if not hasattr(node, "members"))


def _ckpt_names(group) -> dict[str, str]:
    """Checkpoint array paths of a trajectory store (new layout or the old ``ckpt_*`` one)."""
    names = (*CKPT_VARS, "step")
    if CKPT_GROUP in group:
        return {n: _ckpt(n) for n in names}
    return {n: OLD_CKPT_PREFIX + n for n in names}


def publish(staging, out) -> None:
    """Move every entry of the folder ``staging`` into ``out`` (created if missing), each
    replacing an entry of the same name by renames (``staging`` and ``out`` must be on one
    filesystem); ``staging`` is removed. A new ``out`` is one rename."""
    staging, out = Path(staging), Path(out)
    if not out.exists():
        os.rename(staging, out)
        return
    for item in sorted(staging.iterdir()):
        target = out / item.name
        old = staging / f".{item.name}.replaced"
        if target.exists():
            os.rename(target, old)
        os.rename(item, target)
    shutil.rmtree(staging, ignore_errors=True)


def _check_complete_skeleton(path, attrs: dict[str, Any]) -> None:
    """StoreError if the trajectory store lacks arrays a resume needs (a damaged store)."""
    if attrs.get("kind") not in (None, "trajectory"):
        return
    group = _group(path)
    need = {schema.FRAMES_DONE, *_ckpt_names(group).values(), *attrs.get("frame_vars", [])}
    try:
        have = set(_array_paths(group))
    except Exception as err:  # an array whose zarr.json is unreadable
        raise _metadata_error(path, err, "has unreadable metadata") from err
    missing = sorted(need - have)
    if missing:
        raise StoreError(f"cannot resume {path}: the store's metadata is incomplete (missing "
                         f"{', '.join(missing)}): the data cannot be trusted; replace it with "
                         "--overwrite")


def check_resumable(path, expected: dict[str, Any], check_runs: bool = True) -> None:
    """Raise StoreError unless the store at ``path`` was made with the same settings.

    With ``check_runs=False`` the stored number of runs may be smaller than
    ``expected["runs"]`` (the caller then grows the store with :func:`resize_runs`).
    """
    got = read_attrs(path)
    _check_complete_skeleton(path, got)
    got = {**{k: v for k, v in RESUME_DEFAULTS.items() if k not in got}, **got}
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
    group = _group(path, "r+")
    old = int(group.attrs["runs"])
    if runs < old:
        raise StoreError(f"{path} holds {old} runs; runs can be added, never removed")
    for name in _array_paths(group):
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
    _consolidate(path)
    return old


def repair_runs(path) -> None:
    """Undo an interrupted :func:`resize_runs`: shrink arrays back to the ``runs`` attr."""
    group = _group(path, "r+")
    runs = int(group.attrs["runs"])
    changed = False
    for name in _array_paths(group):
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if schema.RUN in dims and arr.shape[dims.index(schema.RUN)] > runs:
            shape = list(arr.shape)
            shape[dims.index(schema.RUN)] = runs
            arr.resize(tuple(shape))
            changed = True
    if changed or not _is_consolidated(path):
        _consolidate(path)


def frames_done(path) -> np.ndarray:
    """``frames_done`` of every run, shape (nT, nf, runs) (the progress of a store)."""
    return np.asarray(_group(path)[schema.FRAMES_DONE][...])


def _runs_slice(runs: Sequence[int]) -> slice | None:
    """``runs`` as a slice when they are contiguous and ascending, else None."""
    if runs and list(runs) == list(range(runs[0], runs[0] + len(runs))):
        return slice(runs[0], runs[0] + len(runs))
    return None


def _open_for_writing(path):
    """The zarr group at ``path`` in r+ mode, or StoreError saying why not."""
    return _group(path, "r+")


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
        self._ckpt = _ckpt_names(self.group)
        self._coords = {schema.T: list(attrs.get("temperatures", [])),
                        schema.F_FILL: list(attrs.get("fillings", []))}
        self._arrays: dict[str, Any] = {}

    def checkpoint_array(self, name: str):
        """The zarr array of checkpoint variable ``name`` (``Q``, ``v``, ``F``, ``n``, ``step``)."""
        return self._arr(self._ckpt[name])

    def _where(self, it: int, jf: int, run: int, step: int) -> str:
        T, f = self._coords[schema.T], self._coords[schema.F_FILL]
        return (f"(T={T[it] if it < len(T) else it:g}, f={f[jf] if jf < len(f) else jf:g}, "
                f"run={run}, step={step})")

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
        slot, step = frame % 2, frame * self.save_every
        where = self._where(it, jf, run, step)
        advice = ("; `cdw verify` lists the damage and `--resume` recomputes the damaged runs "
                  "(no other writer may run: see cdwdata.storelock)")
        try:
            held = int(self.checkpoint_array("step")[it, jf, run, slot])
            out = {name: np.asarray(self.checkpoint_array(name)[it, jf, run, slot])
                   for name in CKPT_VARS}
        except (ValueError, RuntimeError, OSError) as err:  # checksum or decoding failure
            raise StoreDamagedError(f"{self.path}: the checkpoint {where} cannot be read "
                                    f"({str(err).splitlines()[0]}){advice}") from err
        if held != step:
            raise StoreDamagedError(f"{self.path}: the checkpoint {where} holds step {held}, "
                                    f"not {step}{advice}")
        for name, arr in out.items():
            if not np.isfinite(arr).all():
                raise StoreDamagedError(f"{self.path}: checkpoint variable {name} {where} is "
                                        f"missing or not finite{advice}")
        return out

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
        self._put(self._ckpt["step"], it, jf, runs, (slot,),
                  np.full(len(runs), -1, dtype=np.int64))
        for name in self.frame_vars:
            self._put(name, it, jf, runs, (frame,), np.asarray(state[name], self.frame_dtype))
        if self.has_mu and schema.MU in state:
            self._put(schema.MU, it, jf, runs, (frame,), np.asarray(state[schema.MU], float))
        for name in CKPT_VARS:
            self._put(self._ckpt[name], it, jf, runs, (slot,),
                      np.asarray(state[name], np.float64))
        self._put(self._ckpt["step"], it, jf, runs, (slot,),
                  np.full(len(runs), frame * self.save_every, dtype=np.int64))
        self._put(schema.FRAMES_DONE, it, jf, runs, (), np.full(len(runs), frame + 1, np.int64))

    def mark_frames_done(self, it: int, jf: int, runs: Sequence[int], value: int) -> None:
        """Set ``frames_done`` of ``runs`` (tests use it to simulate a kill mid-write)."""
        runs = [int(r) for r in runs]
        self._put(schema.FRAMES_DONE, it, jf, runs, (), np.full(len(runs), value, np.int64))


def open_dataset(path, **kwargs):
    """Open any cdwdata store lazily as an xarray Dataset (checkpoint variables dropped).

    Stores being written are read through their own metadata (chunk writes never change it);
    consolidated metadata is used when present.
    """
    import xarray as xr

    if not Path(path).exists():
        raise StoreError(f"{path} does not exist")
    private = private_variables(path)
    try:
        ds = xr.open_zarr(path, consolidated=_is_consolidated(path),
                          drop_variables=private or None, **kwargs)
    except Exception as err:
        raise _metadata_error(path, err, "is not a readable zarr store") from err
    if SLOT in ds.variables:
        ds = ds.drop_vars(SLOT)
    return ds


def write_dataset(ds, path, overwrite: bool = False) -> None:
    """Write ``ds`` (computing it if lazy) as a new store at ``path``, all at once.

    The store is built in a hidden sibling folder and renamed into place, so a failure part
    way (a full disk, unreadable input) leaves no partial store, and with ``overwrite`` the
    previous store stays until the new one is complete. Chunks carry checksums; metadata is
    consolidated.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists: pass --overwrite to replace it")

    def write(tmp):
        with _quiet_zarr():
            ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=True,
                       encoding=_encoding(ds))

    if not path.exists():
        _atomic_create(path, write)
        return
    old = path.with_name(f".{path.name}.replaced-{os.getpid()}")
    new = path.with_name(f".{path.name}.new-{os.getpid()}")
    _atomic_create(new, write)
    os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


def describe(path) -> str:
    """Human-readable summary of a store: what it holds and how it was made."""
    ds = open_dataset(path)
    lines = [f"store: {path}"]
    kind = ds.attrs.get("kind", "unknown")
    lines.append(f"kind: {kind}")
    dims = ", ".join(f"{d}={n}" for d, n in ds.sizes.items())
    lines.append(f"dims: {dims}")
    for dim in (schema.T, schema.F_FILL):
        if dim in ds.coords and ds[dim].ndim == 1:
            lines.append(f"{dim}: {', '.join(f'{v:g}' for v in ds[dim].values)}")
    if schema.TIME in ds.coords and ds[schema.TIME].size:
        t = ds[schema.TIME].values
        lines.append(f"time: {float(t.min()):g} .. {float(t.max()):g} "
                     f"({ds[schema.TIME].attrs.get('units', '')}, {t.size} frames)")
    for name, var in ds.data_vars.items():
        lines.append(f"  {name:12s} {var.dims} {var.dtype} {var.attrs.get('long_name', '')}")
    if schema.FRAMES_DONE in ds:
        done = ds[schema.FRAMES_DONE].values
        total = ds.sizes.get(schema.STEP, 0)
        lines.append(f"progress: {int((done >= total).sum())}/{done.size} runs complete, "
                     f"{int(done.sum())}/{done.size * total} frames written")
    report = verify(path, read=False)
    lines.append("chunks: " + ("none missing (`cdw verify` also decodes them)" if report.ok
                               else f"DAMAGED: {report.one_line()}; see `cdw verify`"))
    for key in ("command", "created", "cdwdata_version", "forcefield", "model", "seed",
                "compute_dtype", "device", "source_store", "analysis_command", "window",
                "frames_used"):
        if ds.attrs.get(key) not in (None, ""):
            lines.append(f"{key}: {ds.attrs[key]}")
    for line in ds.attrs.get("history", [])[-5:]:
        lines.append(f"history: {line}")
    params = {k: ds.attrs[k] for k in ("t", "g", "k", "kappa", "mass", "gamma", "dt")
              if k in ds.attrs}
    if params:
        lines.append("params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return "\n".join(lines)


# --- verification ------------------------------------------------------------------------------

#: Values no stored variable of a sound store reaches (the blow-up limits of the integrator,
#: :data:`cdwdata.quench.MAX_ABS`; densities of any force field stay far inside): beyond them a
#: chunk decoded to garbage (stores made before chunks carried checksums can only be checked
#: this way).
PLAUSIBLE = {schema.N: (-1e6, 1e6), schema.Q: (-1e6, 1e6), schema.V: (-1e6, 1e6),
             schema.FORCE: (-1e8, 1e8)}


@dataclass(frozen=True)
class Damage:
    """One missing or corrupt piece of a store.

    Attributes
    ----------
    variable : str
        Array path (``n``, ``frames_done``, ``checkpoint/Q``, ...).
    where : dict
        Labels of the chunk: ``T``, ``f``, ``run``, ``step`` (``slot`` for checkpoints) for
        trajectory stores, the dims' start indices otherwise.
    problem : str
        What is wrong (missing chunk, checksum mismatch, implausible value, ...).
    cell : (it, jf, run) or None
        Index of the trajectory run the damage belongs to (None: not one run's).
    frame : int or None
        Frame index of frame data (None for markers and checkpoints).
    sample : tuple of int or None
        Index of the training-set sample (``sample_done``) the damage belongs to.
    """

    variable: str
    where: dict[str, Any]
    problem: str
    cell: tuple[int, int, int] | None = None
    frame: int | None = None
    sample: tuple[int, ...] | None = None

    def __str__(self) -> str:
        loc = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in self.where.items())
        return f"{self.variable}{f' at ({loc})' if loc else ''}: {self.problem}"


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``damage`` (empty if the store is sound)."""

    path: str
    damage: list[Damage] = field(default_factory=list)
    chunks: int = 0
    read: bool = True

    @property
    def ok(self) -> bool:
        return not self.damage

    def one_line(self) -> str:
        """The damage in one line (the first item and a count)."""
        if self.ok:
            return f"{self.path}: {self.chunks} chunks checked, no damage"
        more = f" (and {len(self.damage) - 1} more)" if len(self.damage) > 1 else ""
        return f"{self.path} is damaged: {self.damage[0]}{more}"

    def raise_if_damaged(self, advice: str) -> None:
        if not self.ok:
            raise StoreDamagedError(f"{self.one_line()}; {advice}")


def _first_line(err: BaseException) -> str:
    """A short reason for a chunk that does not decode."""
    text = str(err).splitlines()[0] if str(err) else ""
    if "checksum" in text.lower():
        return "checksum mismatch"
    if "zstd" in text.lower() or "decompress" in text.lower():
        return "cannot be decompressed (truncated?)"
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _chunk_exists(root: Path, arr, coords: tuple[int, ...]) -> bool:
    return (root / arr.path / arr.metadata.encode_chunk_key(coords)).exists()


def _chunk_slices(arr, coords: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c * n, min((c + 1) * n, s))
                 for c, n, s in zip(coords, arr.chunks, arr.shape, strict=True))


def _implausible(name: str, values: np.ndarray, finite: bool = True) -> str | None:
    """Why ``values`` of variable ``name`` cannot be sound data, or None."""
    base = name.rsplit("/", 1)[-1].removeprefix(OLD_CKPT_PREFIX)
    if values.dtype.kind != "f":
        return None
    if finite and not np.isfinite(values).all():
        return "not finite (missing or unreadable data)"
    lo, hi = PLAUSIBLE.get(base, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        bad = (values < lo) | (values > hi)
    if bad.any():
        return f"value {float(values[bad].flat[0]):.3g} outside [{lo:g}, {hi:g}] (corrupt chunk)"
    return None


#: Frames of one run decoded per read by :func:`verify`.
_READ_FRAMES = 32


def _trajectory_damage(root: Path, g, read: bool, report: VerifyReport) -> None:
    attrs = dict(g.attrs)
    Ts, fs = list(attrs.get("temperatures", [])), list(attrs.get("fillings", []))
    se = int(attrs["save_every"])
    fd = g[schema.FRAMES_DONE]
    nT, nf, R = fd.shape

    def where(it, jf, r, **extra):
        w = {schema.T: float(Ts[it]) if it < len(Ts) else it,
             schema.F_FILL: float(fs[jf]) if jf < len(fs) else jf, schema.RUN: r}
        w.update(extra)
        return w

    def add(var, cell, problem, frame=None, **extra):
        report.damage.append(Damage(var, where(*cell, **extra), problem, cell, frame))

    done = np.full((nT, nf, R), -1, dtype=np.int64)
    for cell in np.ndindex(nT, nf, R):
        report.chunks += 1
        try:
            done[cell] = int(fd[cell])
        except Exception as err:  # checksum mismatch, truncated or garbled chunk
            add(schema.FRAMES_DONE, cell, f"unreadable chunk ({_first_line(err)})")
    n_frames = g[attrs["frame_vars"][0]].shape[3]
    per_frame = [name for name in attrs["frame_vars"] if name in g]
    if schema.MU in g:
        per_frame.append(schema.MU)
    for name in per_frame:
        arr = g[name]
        tail = (0,) * (arr.ndim - 4)
        for cell in np.ndindex(nT, nf, R):
            k = int(done[cell])
            if k < 0:  # progress unknown: only what is there can be checked
                have = [j for j in range(n_frames) if _chunk_exists(root, arr, (*cell, j, *tail))]
                want = have
            else:
                want = list(range(min(k, n_frames)))
                have = [j for j in want if _chunk_exists(root, arr, (*cell, j, *tail))]
                missing = sorted(set(want) - set(have))
                if name == schema.MU and len(missing) == len(want):
                    missing = []  # a force field without a chemical potential stores none
                for j in missing:
                    add(name, cell, "chunk missing", frame=j, step=j * se)
            report.chunks += len(want)
            if not read or not have:
                continue
            bad = []
            for lo in range(0, max(have) + 1, _READ_FRAMES):  # bounded memory per read
                part = [j for j in have if lo <= j < lo + _READ_FRAMES]
                try:
                    block = np.asarray(arr[(*cell, slice(lo, lo + _READ_FRAMES))])
                    bad += [j for j in part if _implausible(name, block[j - lo],
                                                            finite=name != schema.MU)]
                except Exception:  # locate the chunk(s) that fail
                    bad += part
            for j in bad:
                try:
                    problem = _implausible(name, np.asarray(arr[(*cell, j)]),
                                           finite=name != schema.MU)
                except Exception as err:
                    problem = f"unreadable chunk ({_first_line(err)})"
                if problem:
                    add(name, cell, problem, frame=j, step=j * se)
    _checkpoint_damage(root, g, done, read, report, add)


def _checkpoint_damage(root: Path, g, done: np.ndarray, read: bool, report: VerifyReport,
                       add) -> None:
    """The checkpoint slot of the last written frame of every run. ``done`` is
    ``frames_done`` as read before the frames were checked; a writer still running may have
    moved on since (and reused that slot two frames later), so the current value is read
    again here, just before its slot: a run that advanced is judged by its newest frame."""
    se = int(g.attrs["save_every"])
    fd = g[schema.FRAMES_DONE]
    ck = _ckpt_names(g)
    step_arr = g[ck["step"]]
    for cell in np.ndindex(*done.shape):
        k = int(done[cell])
        if k >= 0:
            try:
                k = max(k, int(fd[cell]))
            except Exception:  # reported with frames_done above
                pass
        if k < 1:
            continue
        slot = (k - 1) % 2
        report.chunks += 1 + len(CKPT_VARS)
        try:
            held = int(step_arr[(*cell, slot)])
        except Exception as err:
            add(ck["step"], cell, f"unreadable chunk ({_first_line(err)})", slot=slot)
            continue
        if held != (k - 1) * se:
            add(ck["step"], cell, f"holds step {held}, expected {(k - 1) * se}", slot=slot)
        for name in CKPT_VARS:
            arr = g[ck[name]]
            if not _chunk_exists(root, arr, (*cell, slot, 0, 0)):
                add(ck[name], cell, "chunk missing", slot=slot, step=(k - 1) * se)
                continue
            if read:
                try:
                    problem = _implausible(name, np.asarray(arr[(*cell, slot)]))
                except Exception as err:
                    problem = f"unreadable chunk ({_first_line(err)})"
                if problem:
                    add(ck[name], cell, problem, slot=slot, step=(k - 1) * se)


def _marker_damage(root: Path, g, marker: str, skip: set[str], report: VerifyReport) -> None:
    """Missing chunks of samples a training set's ``marker`` counts as done."""
    done = np.asarray(g[marker][...]).astype(bool)
    dims = tuple(g[marker].metadata.dimension_names or ())
    for name in _array_paths(g):
        arr = g[name]
        adims = tuple(arr.metadata.dimension_names or ())
        if name in skip or name == marker or adims[:len(dims)] != dims:
            continue
        tail = (0,) * (arr.ndim - len(dims))
        for idx in zip(*np.nonzero(done), strict=True):
            coords = tuple(int(i) // c for i, c in zip(idx, arr.chunks, strict=False))
            report.chunks += 1
            if not _chunk_exists(root, arr, (*coords, *tail)):
                index = tuple(int(i) for i in idx)
                report.damage.append(Damage(name, dict(zip(dims, index, strict=True)),
                                            "chunk missing", sample=index))


def _read_all(g, names: Iterable[str], report: VerifyReport,
              marker_dims: tuple[str, ...] = ()) -> None:
    """Decode every existing chunk of ``names``; name the chunks that fail (with the sample
    they belong to when an array is chunked one sample at a time along ``marker_dims``)."""
    for name in names:
        arr = g[name]
        dims = tuple(arr.metadata.dimension_names or ()) or \
            tuple(f"dim_{i}" for i in range(arr.ndim))
        report.chunks += int(np.prod(arr.cdata_shape))
        try:
            np.asarray(arr[...])
            continue
        except Exception:  # locate the chunk(s) that fail
            pass
        for coords in np.ndindex(*arr.cdata_shape):
            sl = _chunk_slices(arr, coords)
            try:
                np.asarray(arr[sl])
            except Exception as err:
                n = len(marker_dims)
                per_sample = n and dims[:n] == marker_dims and all(
                    c == 1 for c in arr.chunks[:n])
                report.damage.append(Damage(
                    name, {d: s.start for d, s in zip(dims, sl, strict=True)},
                    f"unreadable chunk ({_first_line(err)})",
                    sample=tuple(s.start for s in sl[:n]) if per_sample else None))


def verify(path, read: bool = True) -> VerifyReport:
    """Find missing and corrupt chunks of the store at ``path``.

    Trajectory stores: every frame of every run below its ``frames_done`` must be there,
    decode (checksums) and hold plausible values (:data:`PLAUSIBLE`, finite), and so must the
    checkpoint slot of the last written frame; ``frames_done`` itself and the coordinates must
    decode. Training sets: every sample marked done must be there. Other stores: every chunk
    must decode. ``read=False`` only looks for missing chunks (no data is read).

    Raises StoreError if the store's metadata cannot be read (naming the broken file).
    """
    root = Path(path)
    g = _group(path)
    report = VerifyReport(str(path), read=read)
    try:
        names = _array_paths(g)
    except Exception as err:
        raise _metadata_error(path, err, "has unreadable metadata") from err
    kind = g.attrs.get("kind")
    checked: set[str] = set()
    if kind == "trajectory" and schema.FRAMES_DONE in names:
        _trajectory_damage(root, g, read, report)
        checked = {schema.FRAMES_DONE, schema.MU, *g.attrs.get("frame_vars", []),
                   *_ckpt_names(g).values()}
    marker_dims: tuple[str, ...] = ()
    if kind != "trajectory" and SAMPLE_DONE in names:
        _marker_damage(root, g, SAMPLE_DONE, set(), report)
        marker_dims = tuple(g[SAMPLE_DONE].metadata.dimension_names or ())
    if read:
        _read_all(g, [n for n in names if n not in checked], report, marker_dims)
    return report


def repair_samples_for_resume(path) -> VerifyReport:
    """:func:`verify` a training set and clear ``sample_done`` of its damaged samples, so a
    resume recomputes them (samples are deterministic); StoreDamagedError for damage that is
    not one sample's (coordinates, the marker itself)."""
    report = verify(path)
    if report.ok:
        return report
    foreign = [d for d in report.damage if d.sample is None]
    if foreign:
        raise StoreDamagedError(f"{path}: {foreign[0]}; this is not part of one sample, so "
                                "--resume cannot recompute it: replace the store with "
                                "--overwrite")
    samples = sorted({d.sample for d in report.damage})
    g = _group(path, "r+")
    for index in samples:
        g[SAMPLE_DONE][index] = 0
    log.warning("%s: %d damaged chunk(s), first %s; recomputing %d sample(s)", path,
                len(report.damage), report.damage[0], len(samples))
    return report


def reset_damaged_runs(path, report: VerifyReport) -> dict[tuple[int, int, int], int]:
    """Prepare a damaged trajectory store for ``--resume``: each damaged run restarts from its
    last intact checkpoint before the damage, or from the start.

    Lowers ``frames_done`` of those runs (a resume then recomputes every frame from there:
    runs are deterministic, so the store ends equal to an uninterrupted run). Returns
    ``{(it, jf, run): frames kept}``. Raises StoreDamagedError for damage no run recomputes
    (coordinates, attributes).
    """
    foreign = [d for d in report.damage if d.cell is None]
    if foreign:
        raise StoreDamagedError(f"{path}: {foreign[0]}; this is not part of one run, so "
                                "--resume cannot recompute it: replace the store with "
                                "--overwrite")
    if not report.damage:
        return {}
    g = _group(path, "r+")
    se = int(g.attrs["save_every"])
    ck = _ckpt_names(g)
    keep: dict[tuple[int, int, int], int] = {}
    for cell in sorted({d.cell for d in report.damage if d.cell is not None}):
        mine = [d for d in report.damage if d.cell == cell]
        try:
            k = int(g[schema.FRAMES_DONE][cell])
        except Exception:  # the marker itself is damaged
            k = 0
        # frame data is damaged from frame `first_bad` on; the checkpoint holds at most the
        # last two frames (k - 1, damaged or not, and k - 2 in the other slot)
        first_bad = min((d.frame for d in mine if d.frame is not None), default=k)
        marker = 0
        if k >= 2 and first_bad >= k - 1 and \
                not any(d.variable == schema.FRAMES_DONE for d in mine):
            try:  # the other slot holds frame k - 2: restart from there
                slot = k % 2
                ok = int(g[ck["step"]][(*cell, slot)]) == (k - 2) * se and all(
                    _implausible(n, np.asarray(g[ck[n]][(*cell, slot)])) is None
                    for n in CKPT_VARS)
            except Exception:
                ok = False
            marker = k - 1 if ok else 0
        g[schema.FRAMES_DONE][cell] = marker
        keep[cell] = marker
    return keep


def repair_for_resume(path) -> VerifyReport:
    """:func:`verify` the trajectory store at ``path`` and :func:`reset_damaged_runs`, saying
    on stderr (the ``cdwdata.store`` logger) which runs will be recomputed."""
    report = verify(path)
    keep = reset_damaged_runs(path, report)
    if keep:
        attrs = read_attrs(path)
        runs = "; ".join(_run_label(attrs, cell, kept) for cell, kept in keep.items())
        log.warning("%s: %d damaged chunk(s), first %s; recomputing %s", path,
                    len(report.damage), report.damage[0], runs)
    return report


def _run_label(attrs: dict[str, Any], cell: tuple[int, int, int], kept: int) -> str:
    Ts, fs = attrs.get("temperatures", []), attrs.get("fillings", [])
    it, jf, r = cell
    start = "the start" if kept == 0 else f"step {(kept - 1) * int(attrs['save_every'])}"
    return f"run (T={Ts[it]:g}, f={fs[jf]:g}, run={r}) from {start}"


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
    _create_lazy(path, xr.Dataset(data, coords=coords, attrs=attrs))


def _create_lazy(path: Path, ds) -> None:
    """Preallocate ``ds`` (lazy, chunked) at ``path``: metadata only, checksums, consolidated."""
    chunks = {str(k): tuple(c[0] for c in v.chunks) for k, v in ds.variables.items()
              if v.chunks is not None}

    def write(tmp):
        with _quiet_zarr():
            ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=True,
                       encoding=_encoding(ds, chunks))

    _atomic_create(path, write)


def samples_complete(path) -> bool:
    """True if every sample of the training set at ``path`` is written."""
    return bool(np.asarray(_group(path)[SAMPLE_DONE][...]).all())


def read_array(path, name: str, index: tuple) -> np.ndarray:
    """``name[index]`` of the store at ``path`` (one frame or sample, read directly)."""
    return np.asarray(_group(path)[name][index])


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
    _create_lazy(path, xr.Dataset(data, coords=coords, attrs=attrs))


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
