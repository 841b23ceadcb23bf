"""Summaries of trajectory stores: phi, S(k,t), S(q,t), L(t) and fits, written to zarr.

:func:`analyze_store` reads a trajectory store lazily, computes with :mod:`cdwdata.analysis`
(DataArray in, DataArray out) and writes four stores into an output folder, each keeping the
dims ``(T, f, run, step, ...)`` of the trajectory and carrying the trajectory's attrs plus the
fit windows:

* ``order-parameter.zarr``   -- ``phi (T, f, run, step, x, y)``
* ``structure-factor.zarr``  -- ``S (T, f, run, step, kx, ky)``, ``Sq (T, f, run, step, q)``,
  the ensemble mean of S(q) and Porod slopes of that mean at intermediate and large q
* ``domain-size.zarr``       -- ``L (T, f, run, step)`` with ensemble mean and standard error
* ``growth-exponents.zarr``  -- ``alpha, alpha_err, prefactor (T, f)``, window in attrs

The trajectory store is verified first (:func:`cdwdata.store.verify`): damaged data is
refused, never analysed. The four stores are written into a hidden staging folder beside the
output and moved into place only when all are complete, so a failure part way (a full disk,
unreadable input) leaves the output as it was. The output folder is locked while it is
written (:mod:`cdwdata.storelock`).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdwdata import analysis, schema, store, storelock
from cdwdata._version import __version__
from cdwdata.errors import InputError, StoreError

SQ = "Sq"  # radially averaged S(q, t) in the structure-factor store


@dataclass(frozen=True)
class AnalysisSettings:
    """Fit windows of :func:`analyze_store`.

    Attributes
    ----------
    window : (t_min, t_max) or None
        Growth-exponent fit window in time units; default: the last decade of the run,
        ``(t_end / 10, t_end)``.
    porod_qL : (lo, hi)
        Intermediate-q Porod window in units of q L(t) (paper: q^-3 there).
    large_q : (lo, hi)
        Large-q window in lattice units (paper: about q^-2 there).
    n_boot, seed : int
        Bootstrap of alpha over runs.
    """

    window: tuple[float, float] | None = None
    porod_qL: tuple[float, float] = analysis.POROD_QL
    large_q: tuple[float, float] = analysis.LARGE_Q
    n_boot: int = 200
    seed: int = 0


#: The stores :func:`analyze_store` writes, in order.
OUTPUTS = ("order-parameter", "structure-factor", "domain-size", "growth-exponents")
#: Advice of the error that refuses damaged input.
DAMAGED_ADVICE = ("`cdw verify STORE` lists the damage; `--resume` of the command that made it "
                  "recomputes the damaged runs")


def default_output(path) -> Path:
    """Where :func:`analyze_store` writes by default: STORE without .zarr plus -analysis."""
    return Path(str(path).removesuffix("/").removesuffix(".zarr") + "-analysis")


def _slope_or_nan(Sq, lo: float, hi: float):
    """Porod fit of ``Sq`` over q in [lo, hi], or NaN with fewer than ``MIN_FIT_POINTS`` shells
    inside."""
    q = Sq[schema.QR]
    if not (np.isfinite(lo) and np.isfinite(hi)) or int(((q >= lo) & (q <= hi)).sum()) < analysis.MIN_FIT_POINTS:
        nan = (Sq.isel({schema.QR: 0}, drop=True) * np.nan)
        return nan, nan
    fit = analysis.porod_slope(Sq, (lo, hi))
    return fit[analysis.SLOPE], fit[analysis.SLOPE_ERR]


def _porod(Sq_mean, L_mean, qL_window, q_window):
    """Porod slopes of the ensemble-mean S(q) per (T, f, step) in two q windows.

    The intermediate window is fixed in units of q L(t), so it moves with time: each frame is
    fitted over ``qL_window / L(t)`` (the widest range common to all (T, f) cells).
    """
    import xarray as xr

    inter, inter_err = [], []
    for s in range(Sq_mean.sizes[schema.STEP]):
        Lf = L_mean.isel({schema.STEP: s})
        lo, hi = qL_window[0] / float(Lf.max()), qL_window[1] / float(Lf.min())
        frame = Sq_mean.isel({schema.STEP: s}).drop_vars(schema.TIME, errors="ignore")
        slope, err = _slope_or_nan(frame, lo, hi)
        inter.append(slope)
        inter_err.append(err)
    step = Sq_mean[schema.STEP].drop_vars(schema.TIME, errors="ignore")
    large, large_err = _slope_or_nan(Sq_mean, *q_window)
    order = (schema.T, schema.F_FILL, schema.STEP)
    return {
        "porod_slope": xr.concat(inter, dim=step, coords="minimal").transpose(*order),
        "porod_slope_err": xr.concat(inter_err, dim=step, coords="minimal").transpose(*order),
        "large_q_slope": large,
        "large_q_slope_err": large_err,
    }


def analyze_store(path, out=None, settings: AnalysisSettings | None = None,
                  overwrite: bool = False, command: str | None = None) -> dict[str, str]:
    """Analyse the trajectory store at ``path``; return ``{kind: output store path}``.

    Only complete frames are used: frames of runs that are not finished (NaN) are dropped
    by keeping the steps every run has reached (the attrs ``frames_used`` and
    ``frames_total`` of every output say how many).

    Raises
    ------
    StoreDamagedError
        The trajectory store has missing or corrupt chunks (nothing is written).
    StoreBusyError
        Another process writes the same output.
    StoreError
        Not a trajectory store, too few frames, or outputs exist and ``overwrite`` is false.
    """
    s = settings or AnalysisSettings()
    ds = store.open_dataset(path)
    if ds.attrs.get("kind") != "trajectory" or schema.N not in ds:
        raise StoreError(f"{path} is not a trajectory store with densities n")
    out = Path(out) if out else default_output(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with storelock.writing(out, command):
        existing = [name for name in OUTPUTS if (out / f"{name}.zarr").exists()]
        if existing and not overwrite:
            raise StoreError(f"{out / (existing[0] + '.zarr')} already exists: pass "
                             "--overwrite to replace it")
        store.verify(path).raise_if_damaged(DAMAGED_ADVICE)
        staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            _analyze(ds, path, staging, s, command)
            store.publish(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {name: str(out / f"{name}.zarr") for name in OUTPUTS}


def _analyze(ds, path, out: Path, s: AnalysisSettings, command: str | None) -> None:
    """Compute the summaries of trajectory dataset ``ds`` into new stores in ``out``."""
    import xarray as xr

    total = ds.sizes[schema.STEP]
    done = int(ds[schema.FRAMES_DONE].min()) if schema.FRAMES_DONE in ds else total
    if done < 2:
        raise StoreError(f"{path}: fewer than 2 complete frames in every run; nothing to analyse")
    ds = ds.isel({schema.STEP: slice(0, done)})
    n = ds[schema.N].astype("float64")
    t = ds[schema.TIME].values
    window = s.window or analysis.growth_window(t)
    meta = {k: v for k, v in ds.attrs.items() if k not in ("kind",)}
    meta.update({
        "source_store": str(path), "analysis_version": __version__,
        "analysis_command": command or "",
        "analyzed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "frames_used": done, "frames_total": total,
    })

    phi = analysis.order_parameter(n)
    S = analysis.structure_factor(n)
    Sq = analysis.radial_structure_factor(S)
    Ldom = analysis.domain_size(S)

    d_phi = xr.Dataset({schema.PHI: phi.astype("float32")},
                       attrs={**meta, "kind": "order-parameter"})
    store.write_dataset(d_phi, out / "order-parameter.zarr")

    Sq_c = Sq.compute()
    L_c = Ldom.compute()
    ens_S = analysis.ensemble_mean(Sq_c)
    ens_L = analysis.ensemble_mean(L_c)
    porod = _porod(ens_S[analysis.MEAN], ens_L[analysis.MEAN], s.porod_qL, s.large_q)
    d_S = xr.Dataset(
        {schema.S: S.astype("float32"), SQ: Sq_c, "Sq_mean": ens_S[analysis.MEAN],
         "Sq_sem": ens_S[analysis.SEM], **porod},
        attrs={**meta, "kind": "structure-factor", "porod_qL_window": list(s.porod_qL),
               "large_q_window": list(s.large_q)},
    )
    store.write_dataset(d_S, out / "structure-factor.zarr")

    wall = analysis.interface_density(phi).compute()
    d_L = xr.Dataset(
        {schema.LDOM: L_c, "L_mean": ens_L[analysis.MEAN], "L_sem": ens_L[analysis.SEM],
         analysis.WALL: wall},
        attrs={**meta, "kind": "domain-size"},
    )
    store.write_dataset(d_L, out / "domain-size.zarr")

    note = ""
    try:
        fit = analysis.growth_exponent(L_c, window=window, n_boot=s.n_boot, seed=s.seed)
    except InputError as err:  # too few frames for any fit: keep the other summaries
        note = str(err)
        nan = L_c.isel({schema.RUN: 0, schema.STEP: 0}, drop=True) * np.nan
        fit = xr.Dataset({analysis.ALPHA: nan, analysis.ALPHA_ERR: nan,
                          analysis.PREFACTOR: nan})
    fit.attrs.update({**meta, "kind": "growth-exponents", "window": list(window),
                      "window_units": "time (1/omega units of the model)",
                      "fit_note": note})
    store.write_dataset(fit, out / "growth-exponents.zarr")


def frames_note(growth_path) -> str:
    """One line: how many frames of the trajectory an analysis used."""
    attrs = store.read_attrs(growth_path)
    used, total = attrs.get("frames_used"), attrs.get("frames_total")
    if used is None or total is None or used == total:
        return f"frames used: {used if used is not None else '?'} (every frame of every run)"
    return (f"frames used: {used} of {total} (the frames every run has reached; the store "
            "is still being written or some runs are unfinished)")


def summary_table(growth_path) -> str:
    """Markdown table of alpha +/- alpha_err over (T, f) of a growth-exponents store."""
    ds = store.open_dataset(growth_path).load()
    rows = ["| T | f | alpha | alpha_err |", "| --- | --- | --- | --- |"]
    for T in ds[schema.T].values:
        for f in ds[schema.F_FILL].values:
            a = ds[analysis.ALPHA].sel({schema.T: T, schema.F_FILL: f}).item()
            e = ds[analysis.ALPHA_ERR].sel({schema.T: T, schema.F_FILL: f}).item()
            rows.append(f"| {T:g} | {f:g} | {a:.3f} | {e:.3f} |")
    return "\n".join(rows)


