"""Judge a model on held-out exact quenches: ED-Langevin trajectory stores it never saw.

For every frame of every (T, f, run) of an ED-driven trajectory store (``cdw quench --model
ed``) in a step window, the model's forces at that filling and bath temperature are compared
with the exact forces ``F = g (n_ED - 1/2) - k Q - kappa sum_nn Q`` rebuilt from the stored
exact densities. Reported per filling: force RMSE (all sites), the RMSE at sites with a
fractional exact density (0.05 < n < 0.95: domain walls, where the chemical potential
matters), MAE, the Gaussian-core width ``sigma_fit`` of the error histogram (the paper's
sigma), the worst site with its (run, step, x, y), and for grand-canonical models the share of
sites whose density falls when mu rises (exact electrons: none); per frame, the RMSE as an
xarray Dataset over (T, f, run, step).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cdwdata import schema, store
from cdwdata.ed import elastic_force
from cdwdata.errors import InputError
from cdwdata.ml.metrics import errors
from cdwdata.params import HolsteinParams

#: Exact densities strictly between these count as fractional (wall) sites.
FRACTIONAL = (0.05, 0.95)


def _exact_forces(Q: np.ndarray, n: np.ndarray, params: HolsteinParams) -> np.ndarray:
    return params.g * (n - 0.5) + elastic_force(Q, params)


#: Finite-difference step of the dn/dmu check and the decrease that counts as negative.
DMU, DN_TOL = 0.01, 1e-5


def _monotonicity(ff, Q: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Per site: does the model's n_i fall when mu rises by DMU? (Exact: never.)"""
    pick = {"select_mu": mu} if getattr(ff, "cluster", None) is not None else {}
    lo = ff.density_at(Q, mu - 0.5 * DMU, **pick)
    hi = ff.density_at(Q, mu + 0.5 * DMU, **pick)
    return (hi - lo < -DN_TOL).ravel()


def evaluate(model: Any, path, step_range: tuple[int, int] = (100, 2000), every: int = 1,
             device: Any = None, dtype: Any = None, fillings=None, runs=None,
             precision: str | None = None, keep_forces: bool = False) -> dict[str, Any]:
    """Errors of ``model`` on the frames of the ED trajectory store at ``path``.

    Parameters
    ----------
    model : str or path, or callable ``(f, T) -> force field``
        A model name for :func:`cdwdata.ml.load_model` (loaded at each cell's f and T).
    step_range : (int, int)
        Frames with ``lo <= step <= hi`` (default 100..2000: t = 5..100 at dt = 0.05).
    every : int
        Use every ``every``-th frame of the window.
    fillings : sequence of float, optional
        Only these fillings of the store.
    runs : sequence of int, optional
        Only these runs (default: every run, each up to its last written frame).
    precision : str, optional
        Hidden-layer precision of a grand-canonical model (``"float32"`` or ``"bf16"``).
    keep_forces : bool
        Also return ``forces``: per filling, the exact and the ML forces of every site of
        every frame used, ``(F_exact, F_ml)`` (for the parity plot and error histogram,
        paper Fig. 2).

    Returns
    -------
    dict with ``by_f`` (error statistics per filling), ``frames`` (an xarray Dataset of the
    per-frame RMSE and MAE over (T, f, run, step)) and the selection.
    """
    import torch
    import xarray as xr

    from cdwdata.ml import load_model

    runs_arg = runs

    attrs = store.read_attrs(path)
    if attrs.get("forcefield") != "ed":
        raise InputError(f"{path} was driven by {attrs.get('forcefield')!r}; held-out "
                         "judgement needs exact (ED) quenches")
    params = HolsteinParams.from_dict(__import__("json").loads(attrs["params_json"]))
    ds = store.open_dataset(path)
    steps = ds[schema.STEP].values
    lo, hi = step_range
    frames = np.flatnonzero((steps >= lo) & (steps <= hi))[::max(1, int(every))]
    if not len(frames):
        raise InputError(f"{path} has no frame with {lo} <= step <= {hi}")
    done = ds[schema.FRAMES_DONE].values
    make = model if callable(model) else (
        lambda f, T: load_model(model, f=f, T=T, params=params, device=device,
                                **({} if dtype is None else {"dtype": dtype}),
                                **({} if precision is None else {"precision": precision})))
    Ts, fs = ds[schema.T].values, ds[schema.F_FILL].values
    runs = ds[schema.RUN].values
    only_runs = None if runs_arg is None else {int(r) for r in runs_arg}
    shape = (len(Ts), len(fs), len(runs), len(frames))
    rmse, mae, mu = (np.full(shape, np.nan) for _ in range(3))
    by_f: dict[str, Any] = {}
    forces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    name = None
    for it, T in enumerate(Ts):
        for jf, f in enumerate(fs):
            if fillings is not None and not any(math.isclose(f, x, abs_tol=1e-9)
                                                for x in fillings):
                continue
            ff = make(float(f), float(T))
            name = getattr(ff, "name", str(model))
            d_all, frac_all, where, mono, fex_all = [], [], [], [], []
            for r in range(len(runs)):
                if only_runs is not None and r not in only_runs:
                    continue
                ok = frames[frames < done[it, jf, r]]
                if not len(ok):
                    continue
                Q = ds[schema.Q].values[it, jf, r, ok]
                n_ex = ds[schema.N].values[it, jf, r, ok]
                F_ex = _exact_forces(Q, n_ex, params)
                with torch.no_grad():
                    F_ml = ff.forces(Q)
                d = F_ml - F_ex
                k = np.searchsorted(frames, ok)
                rmse[it, jf, r, k] = np.sqrt((d ** 2).mean((-2, -1)))
                mae[it, jf, r, k] = np.abs(d).mean((-2, -1))
                if getattr(ff, "last_mu", None) is not None:
                    mu[it, jf, r, k] = np.asarray(ff.last_mu.cpu() if hasattr(
                        ff.last_mu, "cpu") else ff.last_mu, float)
                    mono.append(_monotonicity(ff, Q, mu[it, jf, r, k]))
                d_all.append(d)
                if keep_forces:
                    fex_all.append(F_ex)
                frac_all.append((n_ex > FRACTIONAL[0]) & (n_ex < FRACTIONAL[1]))
                where.append((r, steps[ok]))
            if not d_all:
                continue
            d = np.concatenate(d_all)
            frac = np.concatenate(frac_all)
            e = errors(d, np.zeros_like(d))
            e["rmse_fractional"] = float(np.sqrt(np.mean(d[frac] ** 2))) if frac.any() else 0.0
            e["fraction_fractional"] = float(frac.mean())
            e["rmse_integer"] = float(np.sqrt(np.mean(d[~frac] ** 2))) if (~frac).any() else 0.0
            flat = int(np.argmax(np.abs(d)))
            fi, x, y = np.unravel_index(flat, d.shape)
            run_of = np.concatenate([[w[0]] * len(w[1]) for w in where])
            step_of = np.concatenate([w[1] for w in where])
            e["worst_site"] = {"T": float(T), "run": int(run_of[fi]), "step": int(step_of[fi]),
                               "x": int(x), "y": int(y), "error": float(d[fi, x, y])}
            e["n_frames"] = int(len(d))
            if mono:
                e["dn_dmu_negative_fraction"] = float(np.mean(np.concatenate(mono)))
            key = f"{f:g}" if len(Ts) == 1 else f"T{T:g}-f{f:g}"
            by_f[key] = e
            if keep_forces:
                F_ex_all = np.concatenate(fex_all)
                forces[key] = (F_ex_all, F_ex_all + d)
    frames_ds = xr.Dataset(
        {"rmse": ((schema.T, schema.F_FILL, schema.RUN, schema.STEP), rmse,
                  {"units": "t", "long_name": "force RMSE of the frame"}),
         "mae": ((schema.T, schema.F_FILL, schema.RUN, schema.STEP), mae,
                 {"units": "t", "long_name": "force MAE of the frame"}),
         schema.MU: ((schema.T, schema.F_FILL, schema.RUN, schema.STEP), mu,
                     schema.attrs(schema.MU))},
        coords={schema.T: Ts, schema.F_FILL: fs, schema.RUN: runs,
                schema.STEP: steps[frames]},
        attrs={"model": name or str(model), "store": str(path)})
    return {"model": name or str(model), "store": str(path), "step_range": [int(lo), int(hi)],
            "every": int(every), "runs": None if only_runs is None else sorted(only_runs),
            "precision": precision or "float32", "by_f": by_f, "frames": frames_ds,
            **({"forces": forces} if keep_forces else {})}
