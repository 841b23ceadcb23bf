"""Training loop of the canonical ML force field (paper section III, appendix B).

:func:`train` reads one filling of one or several ED training stores and splits whole
snapshots into train / validation / test (:mod:`cdwdata.ml.data`), computes the descriptor
features once (float32, in memory), sets the normalisation buffers from the training split,
then runs Adam with a learning-rate schedule and early stopping, keeps the best epoch, scores
every split (:mod:`cdwdata.ml.metrics`) and writes ``<out>.safetensors`` + ``<out>.json``
(model card, :mod:`cdwdata.ml.modelfile`).

Kind ``"force"`` (the paper) learns per-site forces from the features; kind ``"energy"``
learns Behler-Parrinello site energies and is fitted on ``F = -dE/dQ`` snapshot by snapshot.
Target ``"electronic"`` makes the network learn ``F - F_elastic``, the elastic force being
exact. The loss is the mean square error of the force (eq. B1), or Huber
(``loss="huber"``); the kept epoch is the one with the smallest validation RMSE (MAE for
Huber).

Differences from the paper, on purpose: minibatches of ``batch_size`` sites (default 1024)
instead of single sites, and a learning-rate schedule with early stopping instead of a fixed
500 epochs.

The grand-canonical density model has its own loop, :mod:`cdwdata.ml.gctrain`.
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

from cdwdata._version import __version__
from cdwdata.errors import ModelError, ParameterError
from cdwdata.ml import modelfile
from cdwdata.ml.data import TrainData, load_trainset, split_parts
from cdwdata.ml.metrics import errors
from cdwdata.ml.model import HIDDEN, ForceModel
from cdwdata.ml.options import KINDS, LOSSES, SCHEDULES, TARGETS
from cdwdata.params import check_choice

__all__ = ["compute_features", "output_path", "torch_threads", "train"]


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
    opts = _Options(kind=check_choice("kind", kind, KINDS),
                    target=check_choice("target", target, TARGETS),
                    epochs=int(epochs), batch_size=int(batch_size), lr=lr,
                    schedule=check_choice("schedule", schedule, SCHEDULES), patience=patience,
                    lr_patience=lr_patience, lr_factor=lr_factor, seed=seed,
                    val_fraction=val_fraction, test_fraction=test_fraction, hidden=hidden,
                    loss=check_choice("loss", loss, LOSSES), huber_delta=huber_delta)
    if not huber_delta > 0:
        raise ParameterError(f"huber_delta={huber_delta} must be > 0")
    if opts.epochs < 1 or opts.batch_size < 1 or not lr > 0:
        raise ParameterError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: each must "
                             "be > 0")
    with torch_threads(threads):
        return _train(data, f, out, opts, device, progress, overwrite, name, command)


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


@dataclass(frozen=True)
class _Options:
    """The training settings of :func:`train` (validated), as recorded in the model card."""

    kind: str
    target: str
    epochs: int
    batch_size: int
    lr: float
    schedule: str
    patience: int
    lr_patience: int
    lr_factor: float
    seed: int
    val_fraction: float
    test_fraction: float
    hidden: Any
    loss: str
    huber_delta: float


@dataclass
class _Tensors:
    """What the loop works on, on the training device.

    ``G`` features (S, L, L, nf) float32; ``Q``, ``F`` configurations and total forces
    (S, L, L) float32; ``Y`` what the network learns (the total force or ``F - F_elastic``,
    computed in float64, as ``Y_np``); ``tr``, ``va``, ``te`` snapshot positions;
    ``X_tr``, ``y_tr`` the normalised training sites (kind "force").
    """

    G: torch.Tensor
    Q: torch.Tensor
    F: torch.Tensor
    Y: torch.Tensor
    Y_np: np.ndarray
    tr: torch.Tensor
    va: torch.Tensor
    te: torch.Tensor
    X_tr: torch.Tensor
    y_tr: torch.Tensor
    n_train_sites: int
    f_std: float

    @property
    def n_features(self) -> int:
        return int(self.G.shape[-1])


def _train(data, f, out, opts: _Options, device, progress, overwrite, name, command):
    from cdwdata.ml.forcefield import _device

    dev = _device(device)
    out_stem = output_path(out)
    name = name or out_stem.name
    if not overwrite and modelfile.exists(out_stem):
        raise ModelError(f"{out_stem} already exists: choose another --out or overwrite it")
    t_start = time.perf_counter()
    td = load_trainset(data, f)
    split = split_parts(td, opts.seed, opts.val_fraction, opts.test_fraction)
    torch.manual_seed(opts.seed)
    model = ForceModel(kind=opts.kind, hidden=opts.hidden, target=opts.target,
                       params=td.params).to(dev)
    data_t = _tensors(model, td, split, opts.target, dev)
    feature_time = time.perf_counter() - t_start
    history, best_epoch = _fit(model, data_t, opts, td.L, name, progress)
    model.eval()
    metrics = _metrics(model, data_t, td, split, opts.kind)
    card = _card(name, model, td, split, opts, history, best_epoch, metrics, data_t,
                 feature_time, dev, command)
    written = modelfile.save(model.cpu(), out_stem, card, overwrite=overwrite)
    t = written["training"]
    return {"name": name, "path": str(out_stem), "card": written, "metrics": metrics,
            "epochs_run": len(history), "best_epoch": best_epoch, "time_s": t["time_s"],
            "time_per_epoch_s": t["time_per_epoch_s"], "sites_per_s": t["sites_per_s"]}


def _tensors(model: ForceModel, td: TrainData, split: dict, target: str, dev) -> _Tensors:
    """Features once, the learned target, and the normalisation set from the training split."""
    G = compute_features(model, td.Q, device=dev)  # (S, L, L, nf) float32
    nf = G.shape[-1]
    tr, va, te = (torch.as_tensor(split[k], dtype=torch.long, device=dev)
                  for k in ("train", "val", "test"))
    F_all = torch.as_tensor(td.F, dtype=torch.float32, device=dev)
    # what the network itself learns: the total force or F - F_elastic (computed in float64)
    Y_np = td.F - td.params.elastic_force(td.Q) if target == "electronic" else td.F
    Y_all = torch.as_tensor(Y_np, dtype=torch.float32, device=dev)
    G_tr = G[tr].reshape(-1, nf)
    F_tr = Y_all[tr].reshape(-1)
    model.input_norm.set(G_tr.double().mean(0), G_tr.double().std(0))
    model.output_norm.set(F_tr.double().mean(), F_tr.double().std())
    X_tr = model.input_norm(G_tr)  # pre-normalised once
    y_tr = model.output_norm(F_tr.unsqueeze(-1)).squeeze(-1)
    return _Tensors(G=G, Q=torch.as_tensor(td.Q, dtype=torch.float32, device=dev), F=F_all,
                    Y=Y_all, Y_np=Y_np, tr=tr, va=va, te=te, X_tr=X_tr, y_tr=y_tr,
                    n_train_sites=int(G_tr.shape[0]), f_std=float(model.output_norm.std))


def _optimizer(model: ForceModel, opts: _Options):
    """Adam on the MLP and the learning-rate scheduler of ``opts.schedule`` (or None)."""
    opt = torch.optim.Adam(model.mlp.parameters(), lr=opts.lr)
    if opts.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=opts.lr_factor, patience=opts.lr_patience,
            min_lr=opts.lr * 1e-3)
    elif opts.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts.epochs,
                                                           eta_min=opts.lr * 1e-3)
    else:
        sched = None
    return opt, sched


def _loss_fn(opts: _Options, f_std: float):
    """Loss of normalised predictions: MSE, or Huber with ``huber_delta`` in force units."""
    delta = float(opts.huber_delta) / f_std  # in the network's normalised units

    def loss_fn(pred, y):
        if opts.loss == "huber":
            return torch.nn.functional.huber_loss(pred, y, delta=delta)
        return torch.mean((pred - y) ** 2)

    return loss_fn


def _epoch_sites(model, d: _Tensors, opt, loss_fn, batch_size: int, gen) -> float:
    """One epoch of kind "force" over shuffled sites; the training RMSE (force units)."""
    total, count = 0.0, 0
    perm = torch.randperm(d.n_train_sites, generator=gen).to(d.X_tr.device)
    for i in range(0, d.n_train_sites, batch_size):
        idx = perm[i:i + batch_size]
        pred = model.mlp(d.X_tr[idx]).squeeze(-1)
        y = d.y_tr[idx]
        err = pred - y
        batch_loss = loss_fn(pred, y)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        total += float((err.detach() ** 2).sum())
        count += len(idx)
    return math.sqrt(total / count) * d.f_std


def _epoch_snapshots(model, d: _Tensors, opt, loss_fn, snaps_per_batch: int, L: int,
                     gen) -> float:
    """One epoch of kind "energy" over shuffled whole snapshots; the training RMSE."""
    total, count = 0.0, 0
    perm = d.tr[torch.randperm(len(d.tr), generator=gen).to(d.tr.device)]
    for i in range(0, len(perm), snaps_per_batch):
        idx = perm[i:i + snaps_per_batch]
        pred = model(d.Q[idx])
        err = (pred - d.F[idx]) / d.f_std
        batch_loss = loss_fn(pred / d.f_std, d.F[idx] / d.f_std)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        total += float((err.detach() ** 2).sum())
        count += idx.numel() * L * L
    return math.sqrt(total / count) * d.f_std


def _val_error(model, d: _Tensors, kind: str) -> tuple[float, float]:
    """Validation RMSE and MAE (force units); NaN without a validation split."""
    model.eval()
    if len(d.va) == 0:
        return float("nan"), float("nan")
    if kind == "force":  # network output vs network target: same error as the total
        pred = _predict_sites(model, d.G[d.va].reshape(-1, d.n_features))
        true = d.Y[d.va].reshape(-1)
    else:
        pred = _predict_snapshots(model, d.Q[d.va]).reshape(-1)
        true = d.F[d.va].reshape(-1)
    model.train()
    diff = pred.double() - true.double()
    return float(torch.sqrt((diff * diff).mean())), float(diff.abs().mean())


def _fit(model, d: _Tensors, opts: _Options, L: int, name: str,
         progress: bool) -> tuple[list[dict[str, float]], int]:
    """Epochs with early stopping; loads the best epoch's weights. Returns (history, best)."""
    from tqdm.auto import tqdm

    opt, sched = _optimizer(model, opts)
    loss_fn = _loss_fn(opts, d.f_std)
    gen = torch.Generator(device="cpu").manual_seed(opts.seed)
    snaps_per_batch = max(1, opts.batch_size // (L * L))
    history: list[dict[str, float]] = []
    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    bar = tqdm(range(1, opts.epochs + 1), desc=f"train {name}", unit="epoch",
               disable=not progress, leave=False)
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        if opts.kind == "force":
            train_rmse = _epoch_sites(model, d, opt, loss_fn, opts.batch_size, gen)
        else:
            train_rmse = _epoch_snapshots(model, d, opt, loss_fn, snaps_per_batch, L, gen)
        v, v_mae = _val_error(model, d, opts.kind)
        # MSE: select on the validation RMSE; Huber: on the validation MAE (a few sites
        # the loss deliberately down-weights would otherwise decide the epoch)
        monitor = (v_mae if opts.loss == "huber" else v) if math.isfinite(v) else train_rmse
        if opts.schedule == "plateau":
            sched.step(monitor)
        elif sched is not None:
            sched.step()
        dt = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_rmse": train_rmse, "val_rmse": v,
                        "val_mae": v_mae, "lr": opt.param_groups[0]["lr"], "time_s": dt})
        bar.set_postfix(train=f"{train_rmse:.4f}", val=f"{v:.4f}", s_per_epoch=f"{dt:.2f}")
        if monitor < best * (1 - 1e-4):
            best, best_epoch, bad = monitor, epoch, 0
            best_state = copy.deepcopy(model.weights())
        else:
            bad += 1
            if bad >= opts.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_weights(best_state)
    return history, best_epoch


def _metrics(model, d: _Tensors, td: TrainData, split: dict, kind: str) -> dict[str, Any]:
    """Total-force errors of the train, validation and test snapshots."""
    metrics = {}
    for key, pos in (("train", d.tr), ("val", d.va), ("test", d.te)):
        if len(pos) == 0:
            metrics[key] = {"n_sites": 0, "n_snapshots": 0}
            continue
        if kind == "force":  # total force = network output + exact elastic part
            pred = _predict_sites(model, d.G[pos].reshape(-1, d.n_features)) \
                .double().cpu().numpy() + (td.F[split[key]] - d.Y_np[split[key]]).reshape(-1)
        else:
            pred = _predict_snapshots(model, d.Q[pos]).reshape(-1).double().cpu().numpy()
        m = errors(pred, td.F[split[key]].reshape(-1))
        m["n_snapshots"] = len(pos)
        metrics[key] = m
    return metrics


def _lr_schedule(opts: _Options) -> dict[str, Any]:
    if opts.schedule == "plateau":
        return {"kind": "plateau", "factor": opts.lr_factor, "patience": opts.lr_patience,
                "min_lr": opts.lr * 1e-3}
    if opts.schedule == "cosine":
        return {"kind": "cosine", "min_lr": opts.lr * 1e-3}
    return {"kind": "none"}


def _loss_text(opts: _Options) -> str:
    return (("MSE" if opts.loss == "mse" else f"Huber (delta = {opts.huber_delta:g} force units)")
            + (" of the total force per site (in units of the force std)"
               if opts.target == "total" else
               " of the electronic force F - F_elastic per site (in units of its "
               "std); the elastic force is exact"))


def _card(name, model, td: TrainData, split, opts: _Options, history, best_epoch, metrics,
          d: _Tensors, feature_time, dev, command) -> dict[str, Any]:
    """The model card: data, split, training record, metrics and normalisation."""
    L = td.L
    counts = {s: int((td.source == s).sum()) for s in np.unique(td.source)}
    train_time = sum(h["time_s"] for h in history)
    per_epoch = train_time / len(history)
    snaps_per_batch = max(1, opts.batch_size // (L * L))
    return {
        "name": name,
        "description": (f"{'direct-force' if opts.kind == 'force' else 'Behler-Parrinello energy'} "
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
        "split": {"seed": opts.seed, "val_fraction": opts.val_fraction,
                  "test_fraction": opts.test_fraction, "test_by": split["test_by"],
                  "val_by": split["val_by"], "unit": "whole snapshots (sample index)",
                  **{k: td.sample[split[k]].tolist() for k in ("train", "val", "test")}},
        "training": {
            "epochs": opts.epochs, "epochs_run": len(history), "best_epoch": best_epoch,
            "stopped_early": len(history) < opts.epochs, "patience": opts.patience,
            "batch_size": opts.batch_size,
            "batch_unit": ("sites" if opts.kind == "force"
                           else f"sites, as whole snapshots ({snaps_per_batch} per batch)"),
            "optimizer": "Adam", "lr": opts.lr,
            "lr_schedule": _lr_schedule(opts),
            "loss": _loss_text(opts),
            "loss_function": opts.loss,
            "huber_delta": opts.huber_delta if opts.loss == "huber" else None,
            "selected_on": "validation MAE" if opts.loss == "huber" else "validation RMSE",
            "target": opts.target,
            "seed": opts.seed, "device": str(dev), "dtype": "float32",
            "torch_threads": torch.get_num_threads(),
            "feature_time_s": feature_time, "time_s": train_time,
            "time_per_epoch_s": per_epoch,
            "sites_per_s": (d.n_train_sites / per_epoch) if opts.kind == "force"
            else len(d.tr) * L * L / per_epoch,
            "n_train_sites": d.n_train_sites,
            "history": history,
        },
        "metrics": metrics,
        "normalisation": {"force_mean": float(model.output_norm.mean),
                          "force_std": d.f_std},
        "code_version": __version__,
        "torch_version": torch.__version__,
        "command": command,
    }
