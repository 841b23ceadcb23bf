"""Validation of an ML force field on held-out ED quench snapshots (paper Fig. 2).

The snapshots are the test split listed in the model card when the store is the model's
training set (same content hash), otherwise every quench snapshot of the store. Output:
a JSON report (RMSE, MAE, max error, error mean and std of the force, the width
``sigma_fit`` of a Gaussian fitted to the error histogram (the paper's sigma) and the
fraction of sites in the tails beyond it; the same for the density), a parity plot ``F_ML``
vs ``F_exact`` and a histogram of ``delta = F_ML - F_exact`` (log scale, so that the tails
show), as PNG files (matplotlib, Agg canvas; no pyplot state).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata._version import __version__
from cdwdata.errors import InputError, ModelError
from cdwdata.ml import modelfile
from cdwdata.ml.data import TrainData, load_trainset
from cdwdata.ml.metrics import errors, errors_by_step, sigma_fit

#: Points drawn in a parity plot at most (a random, seeded subset beyond that).
MAX_SCATTER = 200_000


def _as_forcefield(model: Any, device: Any = None):
    from cdwdata.ml.forcefield import MLForceField, load_model

    if isinstance(model, MLForceField):
        return model
    return load_model(model, device=device)


def select_test(ff, td: TrainData, all_quench: bool = False) -> tuple[np.ndarray, str]:
    """Positions in ``td`` to validate on, and a phrase saying which they are."""
    trainset = ff.card.get("trainset", {})
    same = trainset.get("sha256") == td.sha256()
    if same and not all_quench:
        ids = set(ff.card.get("split", {}).get("test", []))
        pos = np.flatnonzero(np.isin(td.sample, sorted(ids)))
        if pos.size == 0:
            raise InputError(f"model {ff.name!r} lists no test snapshots of this store; pass a "
                             "separate ED store of quench snapshots")
        return pos, "test split of the model card"
    pos = np.flatnonzero(td.source == "quench")
    if pos.size == 0:
        raise InputError(f"{td.path or 'the dataset'} has no quench snapshots for f={td.f:g} "
                         "to validate on")
    what = "all quench snapshots of the store"
    if same:
        what += " (includes snapshots the model was trained on)"
    elif td.path is not None and trainset.get("path") == td.path:
        what += (" (WARNING: this is the model's training store but its content changed; "
                 "some snapshots may have been trained on)")
    return pos, what


def _predict(ff, Q: np.ndarray, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Forces of ``ff`` and the densities they imply
    (:meth:`~cdwdata.params.HolsteinParams.density_from_force` with the model's parameters
    and filling), ``Q (S, L, L)`` -> two float64 arrays of that shape."""
    F, n = [], []
    for i in range(0, len(Q), chunk):
        Fi = ff.forces(Q[i:i + chunk])
        F.append(Fi)
        n.append(ff.params.density_from_force(Fi, Q[i:i + chunk], ff.f))
    return np.concatenate(F), np.concatenate(n)


def _check_compatible(ff, td: TrainData) -> None:
    if not ff.params.matches(td.params):
        raise ModelError(f"model {ff.name!r} was trained for {ff.params}, the store holds "
                         f"{td.params}")
    if (ff.electron_T is not None and td.electron_T is not None
            and not math.isclose(ff.electron_T, td.electron_T, rel_tol=1e-9, abs_tol=1e-12)):
        raise ModelError(f"model {ff.name!r} was trained on ED labels at T={ff.electron_T}, "
                         f"the store's labels are at T={td.electron_T}")


def _entry(ff, F_ml, n_ml, td: TrainData, pos) -> dict[str, Any]:
    F_ex = td.F[pos]
    out = {"model": ff.name, "kind": ff.kind, "card_sha256": ff.card_sha256,
           "trainset_sha256": ff.card.get("trainset", {}).get("sha256"),
           "dtype": str(ff.dtype).removeprefix("torch."),
           "force": errors(F_ml, F_ex)}
    if np.isfinite(td.n[pos]).all():
        out["density"] = errors(n_ml, td.n[pos])
    out.update(errors_by_step(F_ml, F_ex, td.step[pos], td.source[pos]))
    return out


def _by_store(F_ml: np.ndarray, td: TrainData, pos: np.ndarray) -> list[dict[str, Any]]:
    """Force errors of the selected snapshots of each store separately."""
    out = []
    for k, part in enumerate(td.parts):
        mine = td.part[pos] == k
        entry = {key: part.get(key) for key in ("path", "sha256", "quench_forcefield")}
        entry["n_snapshots"] = int(mine.sum())
        if mine.any():
            p = pos[mine]
            entry["force"] = errors(F_ml[mine], td.F[p])
            entry.update(errors_by_step(F_ml[mine], td.F[p], td.step[p], td.source[p]))
        out.append(entry)
    return out


def force_plots(entries: list[tuple[str, np.ndarray, np.ndarray]], parity: Path, hist: Path,
                seed: int = 0) -> None:
    """Paper Fig. 2: ML vs exact forces (parity) and the error histogram, one panel per
    ``(label, F_exact, F_ml)`` entry, written to ``parity`` and ``hist``."""
    from matplotlib.figure import Figure

    k = len(entries)
    fig = Figure(figsize=(4.2 * k, 4.0), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    rng = np.random.default_rng(seed)
    for ax, (label, F_ex, F_ml) in zip(axes, entries, strict=True):
        x, y = F_ex.ravel(), F_ml.ravel()
        if x.size > MAX_SCATTER:
            sel = rng.choice(x.size, MAX_SCATTER, replace=False)
            x, y = x[sel], y[sel]
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, zorder=0)
        ax.scatter(x, y, s=2, alpha=0.4, linewidths=0, rasterized=True)
        rmse = float(np.sqrt(np.mean((F_ml - F_ex) ** 2)))
        ax.set_title(f"{label}\nRMSE = {rmse:.4g}", fontsize=10)
        ax.set_xlabel(r"$F_{\mathrm{exact}}$")
        ax.set_ylabel(r"$F_{\mathrm{ML}}$")
        ax.set_aspect("equal", adjustable="datalim")
    fig.savefig(parity, dpi=120)

    fig = Figure(figsize=(4.2 * k, 3.4), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (label, F_ex, F_ml) in zip(axes, entries, strict=True):
        d = (F_ml - F_ex).ravel()
        centre, width = sigma_fit(d)
        lim = 8 * width if width > 0 else float(np.abs(d).max() or 1.0)
        inside = np.abs(d - centre) <= lim
        ax.hist(d[inside], bins=80, color="C1", alpha=0.8)
        ax.set_title(f"{label}\n$\\sigma$ = {width:.3g} (Gaussian fit), RMSE = "
                     f"{np.sqrt(np.mean(d * d)):.3g}\n{100 * (1 - inside.mean()):.2f}% of "
                     f"sites beyond $\\pm 8\\sigma$ (not drawn)", fontsize=9)
        ax.set_xlabel(r"$\delta = F_{\mathrm{ML}} - F_{\mathrm{exact}}$")
        ax.set_ylabel("sites")
        ax.set_yscale("log")
    fig.savefig(hist, dpi=120)


def validate(model: Any, data: Any, out_dir: str | os.PathLike | None = None,
             compare: Any = None, all_quench: bool = False, device: Any = None,
             plots: bool = True) -> dict[str, Any]:
    """Validation report of ``model`` on ED quench snapshots of ``data``.

    Parameters
    ----------
    model : str, path or MLForceField
        Model name or path (see :func:`cdwdata.ml.load_model`).
    data : path, xarray.Dataset or a list of them
        ED store(s) in the training-set layout (dims ``(f, sample, x, y)``); for a model
        trained on several stores, pass the same list to use its test split. With several
        stores the report also lists the errors per store (``by_store``).
    out_dir : path, optional
        Where the report and plots go (default: next to the model card).
    compare : str, path or MLForceField, optional
        A second model of the same filling and parameters (e.g. the energy variant trained on
        the same data), evaluated on the same snapshots and put in the report and plots.
    all_quench : bool
        Use every quench snapshot of the store even if it is the model's training set.
    device : str, optional
    plots : bool
        Write the PNG files.

    Returns
    -------
    dict: the report (also written as ``<name>-validation.json``), with ``files``.
    """
    ff = _as_forcefield(model, device)
    td = load_trainset(data, ff.f)
    _check_compatible(ff, td)
    pos, what = select_test(ff, td, all_quench)
    F_ml, n_ml = _predict(ff, td.Q[pos])
    report: dict[str, Any] = {
        "report": "ml-force-field validation (paper Fig. 2)",
        "model": ff.name,
        "store": td.path,
        "store_sha256": td.sha256(),
        "f": ff.f,
        "electron_T": td.electron_T,
        "params": ff.params.to_dict(),
        "selection": what,
        "n_snapshots": int(len(pos)),
        "samples": td.sample[pos].tolist(),
        **_entry(ff, F_ml, n_ml, td, pos),
    }
    if len(td.parts) > 1:
        report["by_store"] = _by_store(F_ml, td, pos)
    entries = [(f"{ff.name} ({ff.kind})", td.F[pos], F_ml)]
    if compare is not None:
        other = _as_forcefield(compare, device)
        if not math.isclose(other.f, ff.f, abs_tol=1e-9):
            raise ModelError(f"cannot compare {ff.name!r} (f={ff.f}) with {other.name!r} "
                             f"(f={other.f}): different fillings")
        _check_compatible(other, td)
        F2, n2 = _predict(other, td.Q[pos])
        e2 = _entry(other, F2, n2, td, pos)
        if len(td.parts) > 1:
            e2["by_store"] = _by_store(F2, td, pos)
        e2["same_trainset"] = e2["trainset_sha256"] == report["trainset_sha256"]
        e2["same_test_split"] = (other.card.get("split", {}).get("test")
                                 == ff.card.get("split", {}).get("test"))
        report["compare"] = e2
        entries.append((f"{other.name} ({other.kind})", td.F[pos], F2))
    report["code_version"] = __version__
    report["created"] = modelfile.now()

    out = Path(out_dir) if out_dir is not None else (
        Path(ff.path).parent if ff.path else Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    files = {"report": str(out / f"{ff.name}-validation.json")}
    if plots:
        files["parity"] = str(out / f"{ff.name}-parity.png")
        files["error_hist"] = str(out / f"{ff.name}-error-hist.png")
        force_plots(entries, Path(files["parity"]), Path(files["error_hist"]))
    report["files"] = files
    text = json.dumps(report, indent=2) + "\n"
    modelfile.atomic_write(Path(files["report"]), text.encode())
    return report
