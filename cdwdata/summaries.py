"""Summaries of trajectory stores: phi, S(k,t), S(q,t), L(t) and fits, written to zarr.

:func:`analyze_store` reads a trajectory store lazily, computes with :mod:`cdwdata.analysis`
(DataArray in, DataArray out) and writes four stores into an output folder, each keeping the
dims ``(T, f, run, step, ...)`` of the trajectory and carrying the trajectory's attrs plus the
fit windows:

* ``order-parameter.zarr``   -- ``phi (T, f, run, step, x, y)``
* ``structure-factor.zarr``  -- ``S (T, f, run, step, kx, ky)``, ``Sq (T, f, run, step, q)``,
  the ensemble mean of S(q), Porod slopes of that mean at intermediate and large q per step
  (with the q window of every step) and pooled over the growth-fit window, and the
  collapse quality of ``S / L**2`` vs ``q L`` over the growth-fit window
* ``domain-size.zarr``       -- ``L (T, f, run, step)`` with ensemble mean and standard error
* ``growth-exponents.zarr``  -- ``alpha, alpha_err, prefactor (T, f)`` over the default window,
  ``alpha_alt (T, f, alt_window)`` over the alternative windows and
  ``alpha_window_err (T, f)``; the windows in attrs

One time window is used for every late-time number: the growth-fit window
(:func:`cdwdata.analysis.growth_window`, the last decade of the run, unless
:class:`AnalysisSettings` gives one). It is stored as the attr ``window`` of every output.

The intermediate Porod window is chosen from the data, per (T, f) cell and step, by
:func:`cdwdata.analysis.porod_window`: it starts at ``q_wall = 2 pi rho``, the wavenumber of
the measured wall spacing (``rho`` = ensemble-mean wall density of the frame), and spans a
factor ``POROD_SPAN``, ending at the latest where the large-q window starts; the large-q
window is :data:`cdwdata.analysis.LARGE_Q` (``pi/2 <= q <= pi``). Both can be fixed instead
(``porod_qL``, ``large_q``). The windows used are stored: ``q_wall``, ``porod_q_min`` and
``porod_q_max`` per step, the rule and the large-q window in attrs.

The trajectory store is verified first (:func:`cdwdata.store.verify`): damaged data is
refused, never analysed. The four stores are written into a hidden staging folder beside the
output and moved into place only when all are complete, so a failure part way (a full disk,
unreadable input) leaves the output as it was. The output folder is locked while it is
written (:mod:`cdwdata.storelock`).
"""

from __future__ import annotations

import datetime as _dt
import json
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
        Growth-exponent fit window in time units, also the late-time window of the collapse
        quality and of the pooled Porod slopes; default: the last decade of the run,
        ``(t_end / 10, t_end)`` (:func:`cdwdata.analysis.growth_window`).
    porod_qL : (lo, hi) or None
        Intermediate-q Porod window fixed in units of q L(t) (e.g.
        :data:`cdwdata.analysis.POROD_QL`); default None: chosen from the data
        (:func:`cdwdata.analysis.porod_window`).
    large_q : (lo, hi)
        Large-q window in lattice units (paper: about q^-2 there); default
        :data:`cdwdata.analysis.LARGE_Q`.
    n_boot, seed : int
        Bootstrap of alpha over runs.
    alt_windows : sequence of (a, b)
        Alternative growth windows ``(a t_end, b t_end)`` of the window-sensitivity error
        (default :data:`cdwdata.analysis.ALT_WINDOWS`).
    """

    window: tuple[float, float] | None = None
    porod_qL: tuple[float, float] | None = None
    large_q: tuple[float, float] = analysis.LARGE_Q
    n_boot: int = 200
    seed: int = 0
    alt_windows: tuple[tuple[float, float], ...] = analysis.ALT_WINDOWS


#: The stores :func:`analyze_store` writes, in order.
OUTPUTS = ("order-parameter", "structure-factor", "domain-size", "growth-exponents")
#: Advice of the error that refuses damaged input.
DAMAGED_ADVICE = ("`cdw verify STORE` lists the damage; `--resume` of the command that made it "
                  "recomputes the damaged runs")


def default_output(path) -> Path:
    """Where :func:`analyze_store` writes by default: STORE without .zarr plus -analysis."""
    return Path(str(path).removesuffix("/").removesuffix(".zarr") + "-analysis")


def _late(da, window):
    """``da`` at the steps whose time lies in ``window``."""
    t = np.asarray(da[schema.TIME].values, dtype=np.float64)
    return da.isel({schema.STEP: np.flatnonzero((t >= window[0]) & (t <= window[1]) & (t > 0))})


def _porod(Sq_mean, L_mean, rho_mean, s: AnalysisSettings, window):
    """Porod slopes of the ensemble-mean S(q) per (T, f, step) and pooled over ``window``.

    Intermediate window: chosen per frame from the measured wall density ``rho_mean``
    (:func:`analysis.porod_window`), or fixed in units of q L(t) (``s.porod_qL``:
    ``lo / L(t) .. hi / L(t)`` of each cell). Large-q window: ``s.large_q`` in lattice units.
    """
    Sq_mean = Sq_mean.transpose(schema.T, schema.F_FILL, schema.STEP, schema.QR)
    L_mean = L_mean.transpose(schema.T, schema.F_FILL, schema.STEP)
    rho_mean = rho_mean.transpose(schema.T, schema.F_FILL, schema.STEP)
    win = analysis.porod_window(rho_mean, q_cap=float(s.large_q[0]))
    q_wall = win[analysis.Q_WALL]
    if s.porod_qL is None:
        q_min, q_max = win[analysis.Q_MIN], win[analysis.Q_MAX]
        rule = win.attrs["rule"]
    else:
        q_min = float(s.porod_qL[0]) / L_mean
        q_max = float(s.porod_qL[1]) / L_mean
        rule = f"fixed: q L(t) = {s.porod_qL[0]:g} .. {s.porod_qL[1]:g} (L(t) = L_mean, eq. 15)"
    per_step = analysis.pooled_slope(Sq_mean, q_min, q_max)
    large = analysis.pooled_slope(Sq_mean, *map(float, s.large_q))
    late = analysis.pooled_slope(_late(Sq_mean, window), _late(q_min, window),
                                 _late(q_max, window), dim=schema.STEP)
    large_late = analysis.pooled_slope(_late(Sq_mean, window), *map(float, s.large_q),
                                       dim=schema.STEP)

    def named(da, long_name, units="1"):
        return da.assign_attrs({"units": units, "long_name": long_name})

    qunit = "1/lattice spacing"
    out = {
        "porod_slope": named(per_step[analysis.SLOPE], "log-log slope of the ensemble-mean "
                             "S(q) in the intermediate (Porod) window"),
        "porod_slope_err": named(per_step[analysis.SLOPE_ERR], "its standard error"),
        "porod_q_min": named(q_min, "lower end of the intermediate (Porod) q window", qunit),
        "porod_q_max": named(q_max, "upper end of the intermediate (Porod) q window", qunit),
        "q_wall": named(q_wall, "2 pi rho: wavenumber of the mean domain-wall spacing "
                        "(rho = ensemble-mean wall density)", qunit),
        "large_q_slope": named(large[analysis.SLOPE], "log-log slope of the ensemble-mean "
                               "S(q) in the large-q window"),
        "large_q_slope_err": named(large[analysis.SLOPE_ERR], "its standard error"),
        "porod_slope_late": named(late[analysis.SLOPE], "intermediate (Porod) slope pooled "
                                  "over the late-time window (one slope, own intercepts)"),
        "porod_slope_late_err": named(late[analysis.SLOPE_ERR], "its standard error"),
        "large_q_slope_late": named(large_late[analysis.SLOPE], "large-q slope pooled over "
                                    "the late-time window"),
        "large_q_slope_late_err": named(large_late[analysis.SLOPE_ERR], "its standard error"),
    }
    for name in ("porod_q_min", "porod_q_max", "q_wall"):
        out[name].name = name
    attrs = {"porod_window_rule": rule, "porod_start": analysis.POROD_START,
             "porod_span": analysis.POROD_SPAN, "large_q_window": list(map(float, s.large_q)),
             "late_window": list(map(float, window))}
    if s.porod_qL is not None:
        attrs["porod_qL_window"] = list(map(float, s.porod_qL))
    return out, attrs


def _collapse(Sq_mean, L_mean, window):
    """Collapse quality of S / L**2 vs q L over the steps in ``window`` (per T, f)."""
    x, y = analysis.scaling_collapse(_late(Sq_mean, window), _late(L_mean, window))
    quality = analysis.collapse_quality(x, y)
    quality.attrs.update({"window": list(map(float, window)),
                          "frames": int(x.sizes[schema.STEP])})
    return quality.drop_vars(schema.TIME, errors="ignore")


def matching(values, wanted, what: str) -> list[int]:
    """Indices in the coordinate ``values`` of each of the ``wanted`` values (np.isclose), in
    the order asked; a value the store does not hold is an InputError."""
    values = np.asarray(values)
    out = []
    for w in wanted:
        hit = np.flatnonzero(np.isclose(values.astype(float), float(w)))
        if not len(hit):
            raise InputError(f"{what}={w} is not in the store (it holds {values.tolist()})")
        out.append(int(hit[0]))
    return out


def select(ds, temperatures=None, fillings=None, runs=None):
    """The cells and runs of trajectory dataset ``ds`` to analyse (default: all of them)."""
    picks = {dim: sorted(set(matching(ds[dim].values, want, dim)))
             for dim, want in ((schema.T, temperatures), (schema.F_FILL, fillings),
                               (schema.RUN, runs)) if want is not None}
    return ds.isel(picks) if picks else ds


def analyze_store(path, out=None, settings: AnalysisSettings | None = None,
                  overwrite: bool = False, command: str | None = None,
                  temperatures=None, fillings=None, runs=None) -> dict[str, str]:
    """Analyse the trajectory store at ``path``; return ``{kind: output store path}``.

    Only complete frames are used: frames of runs that are not finished (NaN) are dropped
    by keeping the steps every run has reached (the attrs ``frames_used`` and
    ``frames_total`` of every output say how many). ``temperatures``, ``fillings`` and
    ``runs`` restrict the analysis to those cells and runs (e.g. the finished part of a
    store still being written); the selection is recorded in the attrs.

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
    if any(x is not None for x in (temperatures, fillings, runs)):
        ds = select(ds, temperatures, fillings, runs)
        ds.attrs["selection"] = json.dumps({
            "T": ds[schema.T].values.tolist(), "f": ds[schema.F_FILL].values.tolist(),
            "runs": ds[schema.RUN].values.tolist()})
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
        "frames_used": done, "frames_total": total, "window": list(map(float, window)),
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
    wall = analysis.interface_density(phi).compute()
    walls = {analysis.WALL: wall,
             analysis.WALL_C4: analysis.wall_anisotropy(phi).compute(),
             analysis.WALL_DN: analysis.wall_density_excess(n, phi).compute()}
    rho_mean = wall.mean(schema.RUN)
    porod, porod_attrs = _porod(ens_S[analysis.MEAN], ens_L[analysis.MEAN], rho_mean, s,
                                window)
    collapse = _collapse(ens_S[analysis.MEAN], ens_L[analysis.MEAN], window)
    d_S = xr.Dataset(
        {schema.S: S.astype("float32"), SQ: Sq_c, "Sq_mean": ens_S[analysis.MEAN],
         "Sq_sem": ens_S[analysis.SEM], **porod, analysis.QUALITY: collapse},
        attrs={**meta, "kind": "structure-factor", **porod_attrs,
               "collapse_window": list(map(float, window)),
               "collapse_frames": collapse.attrs["frames"]},
    )
    store.write_dataset(d_S, out / "structure-factor.zarr")

    d_L = xr.Dataset(
        {schema.LDOM: L_c, "L_mean": ens_L[analysis.MEAN], "L_sem": ens_L[analysis.SEM],
         **walls},
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
    alt = analysis.alternative_windows(t, s.alt_windows)
    sens = analysis.window_sensitivity(L_c, fit[analysis.ALPHA], alt)
    fit = fit.assign({analysis.ALPHA_ALT: sens[analysis.ALPHA_ALT],
                      analysis.ALPHA_WINDOW_ERR: sens[analysis.ALPHA_WINDOW_ERR]})
    fit.attrs.update({**meta, "kind": "growth-exponents", "window": list(window),
                      "window_units": "time (1/omega units of the model)",
                      "alt_windows": [list(w) for w in alt],
                      "alt_window_fractions": [list(map(float, w)) for w in s.alt_windows],
                      "bootstrap_seed": int(s.seed), "n_boot": int(s.n_boot),
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


def _f(value, fmt=".3f") -> str:
    value = float(value)
    return format(value, fmt) if np.isfinite(value) else "n/a"


def summary_table(growth_path) -> str:
    """Markdown table over (T, f) of a growth-exponents store: alpha, its bootstrap error over
    runs, its window-sensitivity error and alpha over each alternative window."""
    ds = store.open_dataset(growth_path).load()
    alts = ds.attrs.get("alt_windows", []) if analysis.ALPHA_ALT in ds else []
    head = "| T | f | alpha | alpha_err | "
    if analysis.ALPHA_WINDOW_ERR in ds:
        head += "alpha_window_err | "
    head += "".join(f"alpha (t = {lo:g}..{hi:g}) | " for lo, hi in alts)
    rows = [head.rstrip(), "|" + " --- |" * (head.count("|") - 1)]
    for T in ds[schema.T].values:
        for f in ds[schema.F_FILL].values:
            cell = ds.sel({schema.T: T, schema.F_FILL: f})
            row = f"| {T:g} | {f:g} | {_f(cell[analysis.ALPHA])} | " \
                  f"{_f(cell[analysis.ALPHA_ERR])} | "
            if analysis.ALPHA_WINDOW_ERR in ds:
                row += f"{_f(cell[analysis.ALPHA_WINDOW_ERR])} | "
            row += "".join(f"{_f(cell[analysis.ALPHA_ALT].isel({analysis.ALT_WINDOW: i}))} | "
                           for i in range(len(alts)))
            rows.append(row.rstrip())
    return "\n".join(rows)


def wall_table(dom_path) -> str:
    """Markdown table over (T, f) of a domain-size store: the walls at the last frame, mean
    and spread over runs: wall density, the anisotropy of their normals (+1 axes, -1
    diagonals) and the electron density on them relative to the mean."""
    ds = store.open_dataset(dom_path)
    keep = [v for v in (analysis.WALL, analysis.WALL_C4, analysis.WALL_DN) if v in ds]
    last = ds[keep].isel({schema.STEP: -1}).load()
    t = float(np.asarray(ds[schema.TIME].values).reshape(-1)[-1]) if schema.TIME in ds else None
    head = f"walls at t = {t:g}" if t is not None else "walls at the last frame"
    rows = [f"| T | f | wall density ({head}) | anisotropy <cos 4 theta> | "
            "n on walls - mean n |", "| --- | --- | --- | --- | --- |"]

    def cell(da, fmt):
        if da is None:
            return "n/a"
        v = np.asarray(da.values, dtype=float)
        sd = np.nanstd(v, ddof=1) if np.isfinite(v).sum() > 1 else np.nan
        return f"{_f(np.nanmean(v), fmt)} ± {_f(sd, fmt)}"

    for T in last[schema.T].values:
        for f in last[schema.F_FILL].values:
            c = last.sel({schema.T: T, schema.F_FILL: f})
            rows.append(f"| {T:g} | {f:g} | {cell(c.get(analysis.WALL), '.4f')} | "
                        f"{cell(c.get(analysis.WALL_C4), '.3f')} | "
                        f"{cell(c.get(analysis.WALL_DN), '.4f')} |")
    return "\n".join(rows)


def late_time_table(sf_path) -> str:
    """Markdown table over (T, f) of a structure-factor store: the collapse quality and the
    Porod slopes pooled over the late-time window, with the q windows used."""
    ds = store.open_dataset(sf_path)
    keep = [v for v in ("porod_slope_late", "porod_slope_late_err", "large_q_slope_late",
                        "large_q_slope_late_err", analysis.QUALITY, "porod_q_min",
                        "porod_q_max") if v in ds]
    ds = ds[keep].load()
    window = ds.attrs.get("late_window", ds.attrs.get("window"))
    rows = ["| T | f | collapse_msd | Porod slope | Porod q window | large-q slope |",
            "| --- | --- | --- | --- | --- | --- |"]
    for T in ds[schema.T].values:
        for f in ds[schema.F_FILL].values:
            cell = ds.sel({schema.T: T, schema.F_FILL: f})
            qwin = "n/a"
            if "porod_q_min" in cell and window:
                t = np.asarray(cell[schema.TIME].values, dtype=float)
                late = (t >= window[0]) & (t <= window[1]) & (t > 0)
                lo = np.asarray(cell["porod_q_min"].values)[late]
                hi = np.asarray(cell["porod_q_max"].values)[late]
                if np.isfinite(lo).any():
                    qwin = f"{np.nanmin(lo):.3g}..{np.nanmax(hi):.3g}"
            rows.append(
                f"| {T:g} | {f:g} | {_f(cell.get(analysis.QUALITY, np.nan), '.3g')} | "
                f"{_f(cell.get('porod_slope_late', np.nan), '.2f')} ± "
                f"{_f(cell.get('porod_slope_late_err', np.nan), '.2f')} | {qwin} | "
                f"{_f(cell.get('large_q_slope_late', np.nan), '.2f')} ± "
                f"{_f(cell.get('large_q_slope_late_err', np.nan), '.2f')} |")
    return "\n".join(rows)
