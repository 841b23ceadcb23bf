"""ML densities and forces of a trajectory store against KPM at the model's own solved mu.

A grand-canonical ML quench stores, for every frame, the configuration ``Q``, the ML densities
``n`` (and forces ``F`` when they were stored) and the chemical potential ``mu`` the model
solved for the filling. At a fixed mu and T the exact local density is a function of the
configuration alone, which :func:`cdwdata.kpm.density` computes in O(N) on lattices of any
size; the difference is the model's error on exactly the configurations its own dynamics
visited, including 200x200 late-time states with walls longer than any training snapshot.

:func:`check_store` returns an xarray Dataset over ``(T, f, run, step)`` with the RMSE, MAE
and worst site of the density and force errors; frames that were not written are NaN.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cdwdata import schema
from cdwdata.errors import InputError, StoreError
from cdwdata.params import HolsteinParams
from cdwdata.summaries import matching

#: Error variables of the report: (name, units, long name).
VARIABLES = {
    "n_rmse": ("1", "RMSE of n_ML - n_KPM over the sites of a frame"),
    "n_mae": ("1", "mean |n_ML - n_KPM|"),
    "n_max": ("1", "largest |n_ML - n_KPM| (worst site)"),
    "F_rmse": ("t", "RMSE of F_ML - F_KPM"),
    "F_mae": ("t", "mean |F_ML - F_KPM|"),
    "F_max": ("t", "largest |F_ML - F_KPM| (worst site)"),
    "worst_x": ("lattice spacing", "row of the worst density site"),
    "worst_y": ("lattice spacing", "column of the worst density site"),
    "n_ml_worst": ("1", "ML density at the worst site"),
    "n_kpm_worst": ("1", "KPM density at the worst site"),
    "filling_kpm": ("1", "KPM filling sum_i n_i / N at the model's mu"),
    "mu": ("t", "chemical potential solved by the model (used for KPM)"),
    "kpm_order": ("1", "Chebyshev order of the KPM expansion"),
    "kpm_distance": ("lattice spacing", "probing distance of the KPM diagonal"),
    "kpm_probing_estimate": ("1", "a-posteriori estimate of the KPM probing error"),
    "kpm_seconds": ("s", "KPM wall time for the frame's batch"),
}


def _electron_T(attrs: dict, T: float, f: float) -> float:
    """The electron temperature the store's model ran at in cell (T, f): the bath T for a
    grand-canonical model (its per-filling attrs were recorded at the first T of the store,
    so their ``electron_T`` is not the cell's), else the model's fixed one."""
    ff = (attrs.get("forcefield_attrs") or {}).get(f"{f:g}") or {}
    if ff.get("grand_canonical"):
        return float(T)
    return float(ff.get("electron_T", attrs.get("electron_T", T)))


def _model_name(attrs: dict, f: float) -> str:
    models = attrs.get("models") or {}
    return str(models.get(f"{f:g}") or str(attrs.get("model", "")).replace("{f}", f"{f:g}"))


def _select(values: np.ndarray, wanted, what: str) -> list:
    return list(values) if wanted is None else [values[i] for i in matching(values, wanted,
                                                                          what)]


def frame_steps(ds, steps: Sequence[int] | None = None, window: tuple[int, int] | None = None,
                every: int = 1) -> list[int]:
    """Steps to check: explicit ``steps``, else the frames in ``window`` (default: every frame
    after the hot start, step > 0), every ``every``-th."""
    have = [int(s) for s in ds[schema.STEP].values]
    if steps is not None:
        missing = [s for s in steps if int(s) not in have]
        if missing:
            raise InputError(f"steps {missing} are not frames of the store (frames every "
                             f"{have[1] - have[0] if len(have) > 1 else '?'} steps up to "
                             f"{have[-1]})")
        return [int(s) for s in steps]
    lo, hi = window if window is not None else (1, have[-1])
    return [s for s in have if lo <= s <= hi][::max(1, int(every))]


def check_store(path, steps: Sequence[int] | None = None, window: tuple[int, int] | None = None,
                every: int = 1, runs: Sequence[int] | None = None,
                temperatures: Sequence[float] | None = None,
                fillings: Sequence[float] | None = None, tol: float = 1e-3,
                distance: int | None = None, source: str = "store", backend: str | None = None,
                device: Any = None, progress=None, model: str | None = None):
    """Compare the ML densities and forces of a trajectory store with KPM.

    Parameters
    ----------
    path : str or path
        A trajectory store written by an ML grand-canonical model (needs ``Q`` and ``mu``).
    steps, window, every : see :func:`frame_steps`.
    runs, temperatures, fillings : optional selections (default: all).
    tol : float
        KPM tolerance on the densities (default 1e-3; forces: ``g * tol``).
    distance : int, optional
        Fixed KPM probing distance (default: the a-posteriori search of :mod:`cdwdata.kpm`).
    source : {"store", "model"}
        ML densities from the store's ``n`` (the frames as the dynamics wrote them) or from the
        store's model re-evaluated at the stored mu (for stores without ``n``).
    backend, device : passed to :func:`cdwdata.kpm.density`.
    model : str, optional
        With ``source="model"``: evaluate this grand-canonical model (name or path) at the
        stored mu instead of the store's own, to judge another model on the same frames.
    progress : callable, optional
        Called with one line of text per (T, f, step) done.

    Returns
    -------
    xarray.Dataset over (T, f, run, step), variables :data:`VARIABLES`.
    """
    import xarray as xr

    from cdwdata import kpm, store
    from cdwdata.ed import elastic_force

    ds = store.open_dataset(path)
    for name in (schema.Q, schema.MU):
        if name not in ds:
            raise StoreError(f"{path} has no {name!r} variable: KPM needs the configurations "
                             "and the chemical potential the model solved (a grand-canonical "
                             "ML quench store)")
    if source not in ("store", "model"):
        raise InputError(f"source={source!r}: use 'store' or 'model'")
    if model is not None and source != "model":
        raise InputError("another model is evaluated only at the stored mu: source='model' "
                         "(cdw validate MODEL --kpm STORE --from-model)")
    if source == "store" and schema.N not in ds:
        raise StoreError(f"{path} stores no densities 'n': use source='model' to re-evaluate "
                         "the store's model")
    p = HolsteinParams.from_dict(ds.attrs)
    Ts = _select(ds[schema.T].values, temperatures, "T")
    fs = _select(ds[schema.F_FILL].values, fillings, "f")
    rs = _select(ds[schema.RUN].values, runs, "run")
    st = frame_steps(ds, steps, window, every)
    if not st:
        raise InputError(f"no frames of {path} in the selection")
    done = ds[schema.FRAMES_DONE] if schema.FRAMES_DONE in ds else None
    frame_of = {int(s): i for i, s in enumerate(ds[schema.STEP].values)}
    shape = (len(Ts), len(fs), len(rs), len(st))
    out = {name: np.full(shape, np.nan) for name in VARIABLES}
    models: dict[tuple[float, float], Any] = {}

    for it, T in enumerate(Ts):
        for jf, f in enumerate(fs):
            Te = _electron_T(ds.attrs, float(T), float(f))
            for ks, s in enumerate(st):
                cell = ds.sel({schema.T: T, schema.F_FILL: f, schema.STEP: s}).sel(
                    {schema.RUN: rs})
                ok = np.ones(len(rs), bool)
                if done is not None:
                    nd = done.sel({schema.T: T, schema.F_FILL: f, schema.RUN: rs}).values
                    ok = nd > frame_of[s]
                if not ok.any():
                    continue
                Q = cell[schema.Q].values[ok].astype(np.float64)
                mu = cell[schema.MU].values[ok].astype(np.float64)
                good = np.isfinite(mu) & np.isfinite(Q).all(axis=(-2, -1))
                if not good.any():
                    continue
                Q, mu, idx = Q[good], mu[good], np.flatnonzero(ok)[good]
                if source == "store":
                    n_ml = cell[schema.N].values[idx].astype(np.float64)
                else:
                    if (f, Te) not in models:  # a model at each cell's filling and T
                        from cdwdata.ml.forcefield import load_model

                        models[f, Te] = load_model(model or _model_name(ds.attrs, float(f)),
                                                   params=p, f=float(f), T=Te)
                    n_ml = models[f, Te].density_at(Q, mu, Te)
                elastic = elastic_force(Q, p)
                if source == "store" and schema.FORCE in ds:
                    F_ml = cell[schema.FORCE].values[idx].astype(np.float64)
                else:
                    F_ml = p.g * (n_ml - 0.5) + elastic
                t0 = time.perf_counter()
                n_k, info = kpm.density(Q, mu, Te, p, tol=tol, distance=distance,
                                        backend=backend, device=device, return_info=True)
                secs = time.perf_counter() - t0
                F_k = p.g * (n_k - 0.5) + elastic
                dn, dF = n_ml - n_k, F_ml - F_k
                L = Q.shape[-1]
                for b, r in enumerate(idx):
                    at = (it, jf, r, ks)
                    w = int(np.abs(dn[b]).argmax())
                    wx, wy = divmod(w, L)
                    vals = {"n_rmse": np.sqrt((dn[b] ** 2).mean()), "n_mae": np.abs(dn[b]).mean(),
                            "n_max": np.abs(dn[b]).max(), "F_rmse": np.sqrt((dF[b] ** 2).mean()),
                            "F_mae": np.abs(dF[b]).mean(), "F_max": np.abs(dF[b]).max(),
                            "worst_x": wx, "worst_y": wy, "n_ml_worst": n_ml[b, wx, wy],
                            "n_kpm_worst": n_k[b, wx, wy], "filling_kpm": n_k[b].mean(),
                            "mu": mu[b], "kpm_order": info.order,
                            "kpm_distance": info.distance,
                            "kpm_probing_estimate": info.probing_estimate, "kpm_seconds": secs}
                    for name, v in vals.items():
                        out[name][at] = v
                if progress is not None:
                    progress(f"T={float(T):g} f={float(f):g} step={s}: {len(idx)} frame(s), "
                             f"force RMSE {np.sqrt((dF ** 2).mean()):.4f}, KPM order "
                             f"{info.order}, distance {info.distance}, {secs:.1f} s")

    coords = {schema.T: np.asarray(Ts, float), schema.F_FILL: np.asarray(fs, float),
              schema.RUN: np.asarray(rs, int), schema.STEP: np.asarray(st, int)}
    dims = (schema.T, schema.F_FILL, schema.RUN, schema.STEP)
    res = xr.Dataset({name: (dims, arr, {"units": VARIABLES[name][0],
                                         "long_name": VARIABLES[name][1]})
                      for name, arr in out.items()}, coords=coords)
    res = res.assign_coords({schema.TIME: (schema.STEP, np.asarray(st) * p.dt,
                                           schema.attrs(schema.TIME))})
    for c in (schema.T, schema.F_FILL, schema.RUN, schema.STEP):
        res[c].attrs.update(schema.attrs(c))
    from cdwdata._version import __version__

    res.attrs.update(p.to_dict())
    res.attrs.update({"kind": "kpm-check", "store": str(path), "model": str(
        model if model is not None else ds.attrs.get("model", "")), "models": dict(ds.attrs.get("models") or {}), "ml_source": source,
        "kpm_tol": tol, "kpm_distance": -1 if distance is None else int(distance),
        "cdwdata_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
    return res


def table(res) -> str:
    """Markdown table of a :func:`check_store` result, one row per checked frame."""
    lines = ["| T | f | run | step | time | mu | n RMSE | n MAE | n max (site) | force RMSE | "
             "force MAE | force max | KPM order | KPM s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    flat = res.to_dataframe().reset_index()
    for _, r in flat.iterrows():
        if not np.isfinite(r["n_rmse"]):
            continue
        lines.append(
            f"| {r['T']:g} | {r['f']:g} | {int(r['run'])} | {int(r['step'])} | {r['time']:g} | "
            f"{r['mu']:.4f} | {r['n_rmse']:.2e} | {r['n_mae']:.2e} | {r['n_max']:.2e} "
            f"({int(r['worst_x'])}, {int(r['worst_y'])}) | {r['F_rmse']:.4f} | "
            f"{r['F_mae']:.4f} | {r['F_max']:.3f} | {int(r['kpm_order'])} | "
            f"{r['kpm_seconds']:.1f} |")
    return "\n".join(lines)


def summary(res) -> str:
    """One line per (T, f): force RMSE, MAE and the worst site over every checked frame."""
    lines = []
    for T in res[schema.T].values:
        for f in res[schema.F_FILL].values:
            c = res.sel({schema.T: T, schema.F_FILL: f})
            m = np.isfinite(c["F_rmse"].values)
            if not m.any():
                continue
            rmse = float(np.sqrt(np.nanmean(c["F_rmse"].values ** 2)))
            lines.append(f"T={T:g} f={f:g}: {int(m.sum())} frame(s), force RMSE {rmse:.4f}, "
                         f"MAE {float(np.nanmean(c['F_mae'].values)):.4f}, worst "
                         f"{float(np.nanmax(c['F_max'].values)):.3f}")
    return "\n".join(lines)
