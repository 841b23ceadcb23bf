"""ED training sets in memory: one filling of one or several stores, split into train /
validation / test.

:func:`load_trainset` reads one filling of training stores (:mod:`cdwdata.trainset` layout,
dims ``(f, sample, x, y)``) into a :class:`TrainData`; :func:`split_samples` and
:func:`split_parts` split whole snapshots, deterministically in the seed (the test split holds
quench snapshots only, whole quench runs when there are at least three). Training
(:mod:`cdwdata.ml.train`) and validation (:mod:`cdwdata.ml.validate`) both start here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import schema
from cdwdata.errors import InputError, ParameterError
from cdwdata.ml import modelfile
from cdwdata.params import HolsteinParams, check_filling

__all__ = ["TrainData", "load_trainset", "split_parts", "split_samples"]


@dataclass(frozen=True)
class TrainData:
    """One filling of a training set, loaded into memory.

    Attributes
    ----------
    Q, F, n : ndarray (S, L, L) float64
        Configurations, ED total forces and densities of the S complete samples.
    sample : ndarray (S,) int
        Sample index in the store (``sample`` coordinate).
    source : ndarray (S,) str
        ``"random"`` or ``"quench"``.
    run, step : ndarray (S,) int
    f : float
    params : HolsteinParams
    electron_T : float or None
    path : str or None
        Absolute path of the store (None for an in-memory dataset); for several stores their
        paths joined by ``" + "``.
    attrs : dict
        Store attrs (of the first store).
    part : ndarray (S,) int
        Which store each sample comes from (index into ``parts``; all 0 for one store).
    parts : tuple of dict
        Empty for one store (nothing to add to ``path`` and ``sha256()``); for several, per
        store: ``path``, ``sha256``, ``n_samples`` and the offsets added to its ``sample``
        and ``run`` numbers so that they are unique over all stores, plus its provenance
        attrs (``command``, ``created``, ``quench_forcefield``).
    """

    Q: np.ndarray
    F: np.ndarray
    n: np.ndarray
    sample: np.ndarray
    source: np.ndarray
    run: np.ndarray
    step: np.ndarray
    f: float
    params: HolsteinParams
    electron_T: float | None
    path: str | None
    attrs: dict
    part: np.ndarray | None = None
    parts: tuple = ()

    @property
    def L(self) -> int:
        return int(self.Q.shape[-1])

    def sha256(self) -> str:
        """Content hash of Q and F (see :func:`cdwdata.ml.modelfile.dataset_hash`)."""
        return modelfile.dataset_hash(self.Q, self.F)


def _select_filling(ds, f: float):
    fs = np.atleast_1d(np.asarray(ds[schema.F_FILL].values, dtype=float))
    hits = np.flatnonzero(np.isclose(fs, f, rtol=0.0, atol=1e-9))
    if hits.size == 0:
        raise InputError(f"f={f} is not in the training set (it has f = "
                         f"{', '.join(f'{x:g}' for x in fs)})")
    return int(hits[0])


def _provenance(td: TrainData, sample_offset: int = 0, run_offset: int = 0) -> dict[str, Any]:
    return {"path": td.path, "sha256": td.sha256(), "n_samples": len(td.Q),
            "sample_offset": sample_offset, "run_offset": run_offset,
            "sources": {s: int((td.source == s).sum()) for s in np.unique(td.source)},
            **{k: td.attrs.get(k) for k in ("created", "command", "cdwdata_version")},
            "quench_forcefield": td.attrs.get("quench_forcefield", "ed")}


def load_trainset(data: Any, f: float) -> TrainData:
    """Read filling ``f`` of a training store (path), an ``xarray.Dataset``, or a list of them.

    Only completely written samples (``sample_done == 1``) are used. Several stores (e.g. the
    ED-driven quenches plus ML-driven late-time snapshots with ED labels) are concatenated:
    their ``sample`` and ``run`` numbers are shifted so that they stay unique (the offsets
    are in ``parts``); they must share L, HolsteinParams and the electron temperature.
    Raises InputError if the filling is absent, nothing is complete, or values are non-finite.
    """
    if isinstance(data, (list, tuple)):
        if not data:
            raise InputError("no training store given")
        if len(data) == 1:
            return load_trainset(data[0], f)
        return _concat([load_trainset(d, f) for d in data])
    td = _load_one(data, f)
    return TrainData(**{**td.__dict__, "part": np.zeros(len(td.Q), int)})


def _concat(tds: list[TrainData]) -> TrainData:
    first = tds[0]
    for td in tds[1:]:
        if td.L != first.L:
            raise InputError(f"{td.path} has L={td.L}, {first.path} has L={first.L}")
        if not td.params.matches(first.params):
            raise InputError(f"{td.path} was made with {td.params}, {first.path} with "
                             f"{first.params}")
        if (td.electron_T is None) != (first.electron_T is None) or (
                td.electron_T is not None
                and not math.isclose(td.electron_T, first.electron_T, abs_tol=1e-12)):
            raise InputError(f"{td.path} has labels at T={td.electron_T}, {first.path} at "
                             f"T={first.electron_T}")
    parts, samples, runs = [], [], []
    s_off = r_off = 0
    for td in tds:
        parts.append(_provenance(td, s_off, r_off))
        samples.append(td.sample + s_off)
        runs.append(td.run + r_off)
        s_off += int(td.sample.max()) + 1
        r_off += int(td.run.max()) + 1
    cat = np.concatenate
    return TrainData(Q=cat([t.Q for t in tds]), F=cat([t.F for t in tds]),
                     n=cat([t.n for t in tds]), sample=cat(samples),
                     source=cat([t.source for t in tds]), run=cat(runs),
                     step=cat([t.step for t in tds]), f=first.f, params=first.params,
                     electron_T=first.electron_T,
                     path=(" + ".join(t.path for t in tds)
                           if all(t.path for t in tds) else None), attrs=first.attrs,
                     part=cat([np.full(len(t.Q), k) for k, t in enumerate(tds)]),
                     parts=tuple(parts))


def _load_one(data: Any, f: float) -> TrainData:
    import xarray as xr

    from cdwdata import store

    f = check_filling(f)
    path = None
    if isinstance(data, xr.Dataset):
        ds = data
    else:
        path = str(Path(data).resolve())
        ds = store.open_dataset(data)
    for name in (schema.Q, schema.FORCE):
        if name not in ds:
            raise InputError(f"{path or 'dataset'} has no variable {name!r}: not a training set")
    if schema.F_FILL in ds[schema.Q].dims:
        ds = ds.isel({schema.F_FILL: _select_filling(ds, f)})
    elif schema.F_FILL in ds.coords and not math.isclose(float(ds[schema.F_FILL]), f,
                                                         abs_tol=1e-9):
        raise InputError(f"f={f} is not in the training set (it has f = "
                         f"{float(ds[schema.F_FILL]):g})")
    Q = np.asarray(ds[schema.Q].transpose(schema.SAMPLE, schema.X, schema.Y).values, float)
    F = np.asarray(ds[schema.FORCE].transpose(schema.SAMPLE, schema.X, schema.Y).values, float)
    n = (np.asarray(ds[schema.N].transpose(schema.SAMPLE, schema.X, schema.Y).values, float)
         if schema.N in ds else np.full_like(Q, np.nan))
    S = Q.shape[0]
    done = (np.asarray(ds["sample_done"].values).astype(bool) if "sample_done" in ds
            else np.ones(S, bool))
    done &= np.isfinite(Q).all((-2, -1)) & np.isfinite(F).all((-2, -1))
    if not done.any():
        raise InputError(f"{path or 'dataset'} has no complete sample for f={f}")

    def coord(name, default):
        return np.asarray(ds[name].values) if name in ds.coords else default

    sample = coord(schema.SAMPLE, np.arange(S)).astype(int)
    # zarr v3 may hand back numpy StringDType, which does not cast to "<U": go via str()
    source = np.array([str(s) for s in coord(schema.SOURCE, ["random"] * S)])
    run = coord(schema.RUN, np.zeros(S, int)).astype(int)
    step = coord(schema.STEP, np.full(S, -1)).astype(int)
    attrs = dict(ds.attrs)
    params = HolsteinParams.from_dict(attrs)
    T = attrs.get("electron_T")
    if T is None and schema.T in ds.coords and ds[schema.T].size == 1:
        T = float(ds[schema.T])
    return TrainData(Q=Q[done], F=F[done], n=n[done], sample=sample[done],
                     source=source[done], run=run[done], step=step[done], f=f, params=params,
                     electron_T=None if T is None else float(T), path=path, attrs=attrs)


def split_samples(source: np.ndarray, run: np.ndarray, seed: int = 0,
                  val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict:
    """Deterministic split of whole snapshots into train / val / test positions.

    The test split takes ``round(test_fraction * n_quench)`` quench snapshots (at least one
    when there are two or more and ``test_fraction > 0``); with three or more quench runs it
    takes whole runs (snapshots of one trajectory are correlated). The validation split takes
    ``max(1, round(val_fraction * rest))`` of the remaining snapshots of any source; when the
    test split is by run and three or more quench runs remain, its quench part is whole runs
    as well (``val_by = "run"``), so early stopping is not fooled by snapshots that are
    neighbours in time of training snapshots.

    Returns
    -------
    dict with ``train``, ``val``, ``test`` (sorted position arrays), ``test_by`` and ``val_by``
    (``"run"`` or ``"snapshot"``).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ParameterError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each "
                         "must be in [0, 1)")
    rng = np.random.default_rng(seed)
    S = len(source)
    quench = np.flatnonzero(source == "quench")
    n_test = round(test_fraction * len(quench))
    if test_fraction > 0 and len(quench) >= 2:
        n_test = max(n_test, 1)
    runs = np.unique(run[quench])
    test: list[int] = []
    test_by = "snapshot"
    if n_test and len(runs) >= 3:
        test_by = "run"
        for r in rng.permutation(runs):
            if len(test) >= n_test:
                break
            test.extend(quench[run[quench] == r].tolist())
    elif n_test:
        test = rng.permutation(quench)[:n_test].tolist()
    rest = np.setdiff1d(np.arange(S), test)
    n_val = max(1, round(val_fraction * len(rest))) if len(rest) >= 2 else 0
    rest_quench = np.intersect1d(rest, quench)
    rest_runs = np.unique(run[rest_quench])
    val_by = "snapshot"
    if n_val and val_fraction > 0 and test_by == "run" and len(rest_runs) >= 3:
        # whole runs here too, so that early stopping sees trajectories it never trained on
        val_by = "run"
        n_val_q = max(1, round(val_fraction * len(rest_quench)))
        val_l: list[int] = []
        for r in rng.permutation(rest_runs):
            if len(val_l) >= n_val_q:
                break
            val_l.extend(rest_quench[run[rest_quench] == r].tolist())
        others = np.setdiff1d(rest, rest_quench)
        n_val_o = round(val_fraction * len(others))
        val = np.concatenate([val_l, rng.permutation(others)[:n_val_o]]).astype(int)
    else:
        val = rng.permutation(rest)[:n_val]
    train = np.setdiff1d(rest, val)
    if train.size == 0:
        raise InputError(f"only {S} snapshot(s): nothing left to train on after the split")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(np.asarray(test, int)),
            "test_by": test_by, "val_by": val_by}


def split_parts(td: TrainData, seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.1) -> dict:
    """:func:`split_samples` applied to each store of ``td`` separately, then joined.

    Each store is split as it would be alone (so adding a store never changes which
    snapshots of the others are held out); ``test_by``/``val_by`` list one entry per store
    when the stores differ.
    """
    part = td.part if td.part is not None else np.zeros(len(td.Q), int)
    out: dict[str, Any] = {"train": [], "val": [], "test": []}
    by: dict[str, list[str]] = {"test_by": [], "val_by": []}
    for k in np.unique(part):
        pos = np.flatnonzero(part == k)
        sp = split_samples(td.source[pos], td.run[pos], seed, val_fraction, test_fraction)
        for key in out:
            out[key].append(pos[sp[key]])
        for key in by:
            by[key].append(sp[key])
    for key in out:
        out[key] = np.sort(np.concatenate(out[key]).astype(int))
    for key, vals in by.items():
        out[key] = vals[0] if len(set(vals)) == 1 else vals
    return out
