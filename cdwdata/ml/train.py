"""Training of the ML force field on an ED training set (paper section III, appendix B).

Pipeline: read one filling of a training store (:mod:`cdwdata.trainset` layout, dims
``(f, sample, x, y)``) -> split whole snapshots into train / validation / test (deterministic
in ``seed``; the test split holds quench snapshots only, whole quench runs when there are at
least three) -> compute the descriptor features once (float32, in memory) -> set the
normalisation buffers from the training split -> Adam on the force MSE (eq. B1) with a
learning-rate schedule and early stopping on the validation RMSE -> keep the best epoch ->
write ``<out>.safetensors`` + ``<out>.json`` (model card) and return the metrics.

Differences from the paper, on purpose: minibatches of ``batch_size`` sites (default 1024)
instead of single sites, a learning-rate schedule and early stopping instead of a fixed 500
epochs; the loss is the same MSE of the total force.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdwdata import schema
from cdwdata._version import __version__
from cdwdata.ed import elastic_force
from cdwdata.errors import InputError, ModelError
from cdwdata.ml import modelfile
from cdwdata.ml.model import HIDDEN, KINDS, TARGETS, ForceModel
from cdwdata.params import HolsteinParams, check_filling

#: Learning-rate schedules understood by :func:`train`.
SCHEDULES = ("plateau", "cosine", "none")
#: Loss functions: the paper's mean square error, or Huber (quadratic within ``huber_delta``
#: of the label, linear beyond), which does not let the few sites whose exact force is set by
#: the global chemical potential (domain-wall levels at mu; no local model can predict them,
#: see benchmarks/locality.py) dominate the fit of all the others.
LOSSES = ("mse", "huber")


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
        raise InputError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each "
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


def sigma_fit(d: np.ndarray, width: float = 4.0, iterations: int = 3) -> tuple[float, float]:
    """Mean and width of a Gaussian fitted to the core of the histogram of ``d``.

    This is the "standard deviation" of the paper's error histograms (Fig. 2): a Gaussian
    fitted to the histogram, which a few sites far out in the tails do not move, unlike the
    RMSE. The fit window starts at ``median +/- width * 1.4826 * MAD`` and is refitted
    ``iterations`` times to ``+/- width`` fitted widths (80 bins). Falls back to the robust
    (MAD) estimate if the fit fails, and to ``(mean, std)`` for fewer than 20 values or when
    more than half of them are equal.
    """
    from scipy.optimize import curve_fit

    d = np.asarray(d, float).ravel()
    d = d[np.isfinite(d)]
    if d.size < 20:
        return (float(d.mean()), float(d.std())) if d.size else (math.nan, math.nan)
    mu = float(np.median(d))
    s = 1.4826 * float(np.median(np.abs(d - mu)))
    if s == 0.0:
        return float(d.mean()), float(d.std())

    def gauss(x, a, m, w):
        return a * np.exp(-0.5 * ((x - m) / w) ** 2)

    for _ in range(int(iterations)):
        h, e = np.histogram(d, bins=80, range=(mu - width * s, mu + width * s))
        c = 0.5 * (e[1:] + e[:-1])
        try:
            (_, m, w), _ = curve_fit(gauss, c, h.astype(float), p0=(float(h.max()), mu, s),
                                     maxfev=2000)
        except (RuntimeError, ValueError):
            break
        if not (np.isfinite(m) and np.isfinite(w) and w != 0.0):
            break
        mu, s = float(m), abs(float(w))
    return mu, s


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


def errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Error statistics of ``pred - true``: RMSE, MAE, max, mean, std, Gaussian-core width.

    ``sigma_fit`` is the width of a Gaussian fitted to the error histogram (the paper's
    sigma, Fig. 2; see :func:`sigma_fit`) and ``tail_fraction`` the fraction of sites more
    than 5 ``sigma_fit`` from its centre: the RMSE is the width of the whole distribution,
    including those tails.
    """
    d = np.asarray(pred, float) - np.asarray(true, float)
    if d.size == 0:
        return {"n_sites": 0}
    centre, width = sigma_fit(d)
    tail = float(np.mean(np.abs(d - centre) > 5 * width)) if width > 0 else 0.0
    return {"rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d))),
            "max_abs": float(np.max(np.abs(d))), "mean": float(d.mean()),
            "std": float(d.std()), "sigma_fit": width, "tail_fraction": tail,
            "n_sites": int(d.size)}


def compute_features(model: ForceModel, Q: np.ndarray, chunk: int = 32,
                     device: Any = "cpu") -> torch.Tensor:
    """Descriptor features of configurations ``(S, L, L)`` -> float32 ``(S, L, L, n_feat)``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(Q), chunk):
            q = torch.as_tensor(Q[i:i + chunk], dtype=torch.float32, device=device)
            out.append(model.features(q).float())
    return torch.cat(out)


def output_path(out: str | os.PathLike) -> Path:
    """Where ``out`` is written: a bare name goes to the shipped-models folder."""
    from cdwdata.ml.forcefield import MODELS_DIR

    s = str(out)
    p = modelfile.stem(s)
    if os.sep not in s and "/" not in s and not s.endswith((modelfile.CARD_SUFFIX,
                                                             modelfile.WEIGHTS_SUFFIX)):
        return MODELS_DIR / p.name
    return p


def _predict_sites(model: ForceModel, G: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.head(G[i:i + chunk]) for i in range(0, len(G), chunk)]) \
            if len(G) else G.new_zeros(0)


def _predict_snapshots(model: ForceModel, Q: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(Q[i:i + chunk]) for i in range(0, len(Q), chunk)]) \
            if len(Q) else Q.new_zeros(Q.shape)


def train(data: Any, f: float, out: str | os.PathLike, kind: str = "force",
          target: str = "total", epochs: int = 500, batch_size: int = 1024, lr: float = 1e-3,
          schedule: str = "plateau", patience: int = 30, lr_patience: int = 8,
          lr_factor: float = 0.5, seed: int = 0, val_fraction: float = 0.1,
          test_fraction: float = 0.1, device: Any = None, hidden=HIDDEN,
          progress: bool = True, overwrite: bool = False, name: str | None = None,
          threads: int | None = None, command: str | None = None, loss: str = "mse",
          huber_delta: float = 0.05) -> dict[str, Any]:
    """Train an ML force field on filling ``f`` of a training set and save it.

    Parameters
    ----------
    data : path or xarray.Dataset
        Training set (:mod:`cdwdata.trainset` layout).
    f : float
        Filling to train on.
    out : path or name
        Output model (``<out>.safetensors`` + ``<out>.json``); a bare name (no directory,
        no suffix) is written to the shipped-models folder ``cdwdata/ml/models``.
    kind : {"force", "energy"}
        Direct force model (paper) or Behler-Parrinello energy model.
    target : {"total", "electronic"}
        The network learns the total force (paper) or only the electronic force
        ``F - F_elastic = g (n - 1/2)``, the elastic force being added exactly (see
        :mod:`cdwdata.ml.model`). Either way the model returns, and is scored on, the total
        force.
    epochs : int
        Maximum number of epochs (paper: 500).
    batch_size : int
        Sites per minibatch (kind "energy": rounded to whole snapshots, at least one).
    lr : float
        Initial Adam learning rate (paper: 1e-3).
    schedule : {"plateau", "cosine", "none"}
        ReduceLROnPlateau on the validation RMSE (factor ``lr_factor``, patience
        ``lr_patience``), cosine annealing to ``lr/1000`` over ``epochs``, or constant.
    patience : int
        Early stopping: stop after this many epochs without a better validation RMSE.
    seed : int
        Seeds the split, the weight initialisation and the minibatch order.
    val_fraction, test_fraction : float
        Fractions of snapshots held out (see :func:`split_samples`).
    device : str, optional
        ``"cpu"`` (default) or ``"cuda"``.
    progress : bool
        Show a tqdm progress bar over epochs.
    overwrite : bool
        Replace an existing model at ``out``.
    name : str, optional
        Model name in the card (default: the file stem of ``out``).
    threads : int, optional
        torch CPU threads while training (restored afterwards). On a shared, loaded machine
        one thread can be several times faster than torch's default.
    command : str, optional
        Command line recorded in the card.
    loss : {"mse", "huber"}
        Mean square error of the force (paper, eq. B1), or Huber loss with threshold
        ``huber_delta`` (force units): quadratic for small errors, linear for large ones.
        With Huber the kept epoch is the one with the smallest validation MAE.
    huber_delta : float
        Threshold of the Huber loss in force units (default 0.05).

    Returns
    -------
    dict with ``name``, ``path`` (model stem), ``card``, ``metrics`` (``train``, ``val``,
    ``test``: rmse/mae/max_abs/...), ``epochs_run``, ``best_epoch``, ``time_s``,
    ``time_per_epoch_s`` and ``sites_per_s`` (training throughput).
    """
    if kind not in KINDS:
        raise ModelError(f"kind={kind!r} is not a model kind: use one of {KINDS}")
    if target not in TARGETS:
        raise ModelError(f"target={target!r} is not a model target: use one of {TARGETS}")
    if loss not in LOSSES:
        raise InputError(f"loss={loss!r}: use one of {LOSSES}")
    if not huber_delta > 0:
        raise InputError(f"huber_delta={huber_delta} must be > 0")
    if schedule not in SCHEDULES:
        raise InputError(f"schedule={schedule!r}: use one of {SCHEDULES}")
    if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
        raise InputError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: each must be > 0")
    with torch_threads(threads):
        return _train(data, f, out, kind, target, epochs, batch_size, lr, schedule, patience,
                      lr_patience, lr_factor, seed, val_fraction, test_fraction, device, hidden,
                      progress, overwrite, name, command, loss, huber_delta)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``torch.set_num_threads(n)`` (no change for None), then restore."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(data, f, out, kind, target, epochs, batch_size, lr, schedule, patience, lr_patience,
           lr_factor, seed, val_fraction, test_fraction, device, hidden, progress, overwrite,
           name, command, loss="mse", huber_delta=0.05):
    from cdwdata.ml.forcefield import _device

    dev = _device(device)
    out_stem = output_path(out)
    name = name or out_stem.name
    if not overwrite and modelfile.exists(out_stem):
        raise ModelError(f"{out_stem} already exists: choose another --out or overwrite it")
    t_start = time.perf_counter()
    td = load_trainset(data, f)
    split = split_parts(td, seed, val_fraction, test_fraction)
    L = td.L
    torch.manual_seed(seed)
    model = ForceModel(kind=kind, hidden=hidden, target=target, params=td.params).to(dev)
    G = compute_features(model, td.Q, device=dev)  # (S, L, L, nf) float32
    nf = G.shape[-1]
    tr, va, te = (torch.as_tensor(split[k], dtype=torch.long, device=dev)
                  for k in ("train", "val", "test"))
    F_all = torch.as_tensor(td.F, dtype=torch.float32, device=dev)
    # what the network itself learns: the total force or F - F_elastic (computed in float64)
    Y_np = td.F - elastic_force(td.Q, td.params) if target == "electronic" else td.F
    Y_all = torch.as_tensor(Y_np, dtype=torch.float32, device=dev)
    G_tr = G[tr].reshape(-1, nf)
    F_tr = Y_all[tr].reshape(-1)
    model.input_norm.set(G_tr.double().mean(0), G_tr.double().std(0))
    model.output_norm.set(F_tr.double().mean(), F_tr.double().std())
    f_std = float(model.output_norm.std)
    X_tr = model.input_norm(G_tr)  # pre-normalised once
    y_tr = model.output_norm(F_tr.unsqueeze(-1)).squeeze(-1)
    n_train_sites = int(G_tr.shape[0])
    del G_tr, F_tr
    Q_all = torch.as_tensor(td.Q, dtype=torch.float32, device=dev)
    feature_time = time.perf_counter() - t_start

    opt = torch.optim.Adam(model.mlp.parameters(), lr=lr)
    if schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=lr_factor, patience=lr_patience, min_lr=lr * 1e-3)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs),
                                                           eta_min=lr * 1e-3)
    else:
        sched = None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    snaps_per_batch = max(1, int(batch_size) // (L * L))

    delta = float(huber_delta) / f_std  # in the network's normalised units

    def loss_fn(pred, y):
        if loss == "huber":
            return torch.nn.functional.huber_loss(pred, y, delta=delta)
        return torch.mean((pred - y) ** 2)

    def val_error() -> tuple[float, float]:
        """Validation RMSE and MAE (force units)."""
        model.eval()
        if len(va) == 0:
            return float("nan"), float("nan")
        if kind == "force":  # network output vs network target: same error as the total
            pred = _predict_sites(model, G[va].reshape(-1, nf))
            true = Y_all[va].reshape(-1)
        else:
            pred = _predict_snapshots(model, Q_all[va]).reshape(-1)
            true = F_all[va].reshape(-1)
        model.train()
        d = pred.double() - true.double()
        return float(torch.sqrt((d * d).mean())), float(d.abs().mean())

    history: list[dict[str, float]] = []
    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    from tqdm.auto import tqdm

    bar = tqdm(range(1, int(epochs) + 1), desc=f"train {name}", unit="epoch",
               disable=not progress, leave=False)
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        total, count = 0.0, 0
        if kind == "force":
            perm = torch.randperm(n_train_sites, generator=gen).to(dev)
            for i in range(0, n_train_sites, int(batch_size)):
                idx = perm[i:i + int(batch_size)]
                pred = model.mlp(X_tr[idx]).squeeze(-1)
                y = y_tr[idx]
                err = pred - y
                batch_loss = loss_fn(pred, y)
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total += float((err.detach() ** 2).sum())
                count += len(idx)
        else:
            perm = tr[torch.randperm(len(tr), generator=gen).to(dev)]
            for i in range(0, len(perm), snaps_per_batch):
                idx = perm[i:i + snaps_per_batch]
                pred = model(Q_all[idx])
                err = (pred - F_all[idx]) / f_std
                batch_loss = loss_fn(pred / f_std, F_all[idx] / f_std)
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total += float((err.detach() ** 2).sum())
                count += idx.numel() * L * L
        train_rmse = math.sqrt(total / count) * f_std
        v, v_mae = val_error()
        # MSE: select on the validation RMSE; Huber: on the validation MAE (a few sites
        # the loss deliberately down-weights would otherwise decide the epoch)
        monitor = (v_mae if loss == "huber" else v) if math.isfinite(v) else train_rmse
        if schedule == "plateau":
            sched.step(monitor)
        elif sched is not None:
            sched.step()
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_rmse": train_rmse, "val_rmse": v, "val_mae": v_mae,
               "lr": opt.param_groups[0]["lr"], "time_s": dt}
        history.append(rec)
        bar.set_postfix(train=f"{train_rmse:.4f}", val=f"{v:.4f}", s_per_epoch=f"{dt:.2f}")
        if monitor < best * (1 - 1e-4):
            best, best_epoch, bad = monitor, epoch, 0
            best_state = copy.deepcopy(model.weights())
        else:
            bad += 1
            if bad >= patience:
                break
    bar.close()
    if best_state is not None:
        model.load_weights(best_state)
    model.eval()
    train_time = sum(h["time_s"] for h in history)

    metrics = {}
    for key, pos in (("train", tr), ("val", va), ("test", te)):
        if len(pos) == 0:
            metrics[key] = {"n_sites": 0, "n_snapshots": 0}
            continue
        if kind == "force":  # total force = network output + exact elastic part
            pred = _predict_sites(model, G[pos].reshape(-1, nf)).double().cpu().numpy() \
                + (td.F[split[key]] - Y_np[split[key]]).reshape(-1)
        else:
            pred = _predict_snapshots(model, Q_all[pos]).reshape(-1).double().cpu().numpy()
        m = errors(pred, td.F[split[key]].reshape(-1))
        m["n_snapshots"] = len(pos)
        metrics[key] = m

    counts = {s: int((td.source == s).sum()) for s in np.unique(td.source)}
    per_epoch = train_time / len(history)
    card = {
        "name": name,
        "description": (f"{'direct-force' if kind == 'force' else 'Behler-Parrinello energy'} "
                        f"ML force field of the Holstein model at filling f={td.f:g} "
                        "(Cheng et al., section III / appendix B)"),
        "params": td.params.to_dict(),
        "filling": td.f,
        "electron_T": td.electron_T,
        "electron_temperatures": [] if td.electron_T is None else [td.electron_T],
        "data_sources": counts,
        "descriptor": {"module": "cdwdata.descriptor", "r_cut": model.r_cut,
                       "n_features": model.n_features},
        "trainset": {"path": td.path, "sha256": td.sha256(), "L": L, "n_samples": len(td.Q),
                     "sources": counts, "created": td.attrs.get("created"),
                     "command": td.attrs.get("command"),
                     "cdwdata_version": td.attrs.get("cdwdata_version"),
                     **({"parts": list(td.parts)} if len(td.parts) > 1 else {})},
        "split": {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                  "test_by": split["test_by"], "val_by": split["val_by"], "unit": "whole snapshots (sample index)",
                  **{k: td.sample[split[k]].tolist() for k in ("train", "val", "test")}},
        "training": {
            "epochs": int(epochs), "epochs_run": len(history), "best_epoch": best_epoch,
            "stopped_early": len(history) < int(epochs), "patience": patience,
            "batch_size": int(batch_size),
            "batch_unit": ("sites" if kind == "force"
                           else f"sites, as whole snapshots ({snaps_per_batch} per batch)"),
            "optimizer": "Adam", "lr": lr,
            "lr_schedule": {"kind": schedule, "factor": lr_factor, "patience": lr_patience,
                            "min_lr": lr * 1e-3} if schedule == "plateau" else
                           {"kind": schedule, "min_lr": lr * 1e-3} if schedule == "cosine" else
                           {"kind": "none"},
            "loss": (("MSE" if loss == "mse" else f"Huber (delta = {huber_delta:g} force units)")
                     + (" of the total force per site (in units of the force std)"
                        if target == "total" else
                        " of the electronic force F - F_elastic per site (in units of its "
                        "std); the elastic force is exact")),
            "loss_function": loss, "huber_delta": huber_delta if loss == "huber" else None,
            "selected_on": "validation MAE" if loss == "huber" else "validation RMSE",
            "target": target,
            "seed": seed, "device": str(dev), "dtype": "float32",
            "torch_threads": torch.get_num_threads(),
            "feature_time_s": feature_time, "time_s": train_time,
            "time_per_epoch_s": per_epoch,
            "sites_per_s": (n_train_sites / per_epoch) if kind == "force"
            else len(tr) * L * L / per_epoch,
            "n_train_sites": n_train_sites,
            "history": history,
        },
        "metrics": metrics,
        "normalisation": {"force_mean": float(model.output_norm.mean),
                          "force_std": f_std},
        "code_version": __version__,
        "torch_version": torch.__version__,
        "command": command,
    }
    written = modelfile.save(model.cpu(), out_stem, card, overwrite=overwrite)
    return {"name": name, "path": str(out_stem), "card": written, "metrics": metrics,
            "epochs_run": len(history), "best_epoch": best_epoch, "time_s": train_time,
            "time_per_epoch_s": per_epoch, "sites_per_s": written["training"]["sites_per_s"]}
