"""The paper's figures (Cheng, Zhang & Chern, Figs. 3-8) from cdwdata stores, as PNG files.

Every function takes xarray data -- a Dataset opened with :func:`cdwdata.store.open_dataset`
or the path of a store -- draws on a matplotlib :class:`~matplotlib.figure.Figure` (Agg
canvas, no pyplot and no global state), writes the PNG ``out`` and next to it a JSON file
``out`` with suffix ``.json`` holding the numbers drawn (fit values, collapse quality, the
curves, the steps shown, ...), and returns the PNG path. The JSON is the figure's source
data: tests and summaries read it instead of pixels.

=====================================  =======================================================
function                               paper figure and input
=====================================  =======================================================
:func:`fig3_correlations`              Fig. 3: ML vs ED ``C(r, t) = <Q_i Q_j>`` (two
                                       trajectory stores of the same lattice, same steps)
:func:`fig4_snapshots`                 Fig. 4: phi snapshots (order-parameter store from
                                       ``cdw analyze``, or a trajectory store with ``n``)
:func:`fig5_structure_factor`          Fig. 5: S(k, t) maps and S(q, t) (structure-factor
                                       store)
:func:`fig6_collapse`                  Fig. 6: S(q, t)/L^2 vs q L with q^-3 and q^-2 guides
                                       (structure-factor and domain-size stores)
:func:`fig7_growth`                    Fig. 7: L(t) with fitted power laws and the Allen-Cahn
                                       t^1/2 reference (domain-size and growth-exponents
                                       stores; one panel per pair)
:func:`fig8_density`                   Fig. 8: late-time density snapshots per filling
                                       (trajectory store with ``n``)
=====================================  =======================================================

Conventions follow :mod:`cdwdata.analysis`: ``time = step * dt`` in units of 1/omega,
``q = |k - (pi, pi)|``, ensemble means over ``run`` with their standard errors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cdwdata import analysis, schema
from cdwdata.errors import InputError

__all__ = ["fig3_correlations", "fig4_snapshots", "fig5_structure_factor", "fig6_collapse",
           "fig7_growth", "fig8_density", "sidecar_path", "read_sidecar"]

#: Resolution of the written PNG files.
DPI = 110
#: Exponent of the Allen-Cahn law L ~ t^(1/2) (non-conserved Ising order).
ALLEN_CAHN = 0.5


# --- helpers -----------------------------------------------------------------------------------
def _open(data: Any):
    """A Dataset as is, or the store at a path opened lazily."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        from cdwdata import store

        return store.open_dataset(data)
    raise InputError(f"expected an xarray.Dataset or a store path, got {type(data).__name__}")


def sidecar_path(png: str | os.PathLike) -> Path:
    """Where the numbers drawn in the figure ``png`` are written (same stem, ``.json``)."""
    return Path(png).with_suffix(".json")


def read_sidecar(png: str | os.PathLike) -> dict[str, Any]:
    """The numbers drawn in the figure ``png`` (see :func:`sidecar_path`)."""
    return json.loads(sidecar_path(png).read_text())


def _plain(value: Any) -> Any:
    """numpy values -> JSON (non-finite floats -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _save(fig, out: str | os.PathLike, drawn: dict[str, Any]) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"out={str(out)!r}: figures are written as PNG, use a .png path")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    sidecar_path(out).write_text(json.dumps(_plain(drawn), indent=1) + "\n")
    return out


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.6)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _loglog(ax) -> None:
    """Log-log axes labelled at 1, 2, 5 x 10^k (readable over short ranges too)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(FormatStrFormatter("%g"))


def _pick(ds, dim: str, value: float | None):
    """``ds`` at ``dim = value`` (nearest within 1e-9; default the first), dim dropped."""
    if dim not in ds.dims:
        return ds
    coords = np.asarray(ds[dim].values, dtype=float)
    if value is None:
        return ds.isel({dim: 0})
    hits = np.flatnonzero(np.isclose(coords, float(value), rtol=0, atol=1e-9))
    if hits.size == 0:
        have = ", ".join(f"{c:g}" for c in coords)
        raise InputError(f"{dim}={value:g} is not in the data ({dim} = {have})")
    return ds.isel({dim: int(hits[0])})


def _values(ds, dim: str, wanted: Sequence[float] | None) -> list[float]:
    if dim not in ds.coords:
        return [None] if wanted is None else list(wanted)
    have = [float(v) for v in np.atleast_1d(ds[dim].values)]
    if wanted is None:
        return have
    for w in wanted:
        if not np.isclose(have, float(w), rtol=0, atol=1e-9).any():
            raise InputError(f"{dim}={w:g} is not in the data ({dim} = "
                             f"{', '.join(f'{h:g}' for h in have)})")
    return [float(w) for w in wanted]


def _times(ds) -> np.ndarray:
    """``time`` along ``step`` (or the step index when there is no time coordinate)."""
    if schema.TIME in ds.coords:
        return np.asarray(ds[schema.TIME].values, dtype=float)
    return np.asarray(ds[schema.STEP].values, dtype=float)


def _geometric_steps(steps: np.ndarray, n: int, skip_zero: bool = True) -> list[int]:
    """About ``n`` of ``steps``, geometrically spaced from the first (non-zero) to the last."""
    steps = np.asarray(steps)
    pool = steps[steps > 0] if skip_zero and (steps > 0).any() else steps
    idx = np.unique(np.geomspace(1, pool.size, min(n, pool.size)).round().astype(int) - 1)
    return [int(s) for s in pool[idx]]


def _check_steps(ds, steps: Sequence[int], what: str) -> list[int]:
    have = set(int(s) for s in np.asarray(ds[schema.STEP].values))
    missing = [int(s) for s in steps if int(s) not in have]
    if missing:
        raise InputError(f"{what} has no frame at step(s) {missing} (it has steps "
                         f"{sorted(have)[:8]}{' ...' if len(have) > 8 else ''})")
    return [int(s) for s in steps]


def _complete_steps(ds) -> np.ndarray:
    """Steps every run of ``ds`` has written (all steps if there is no ``frames_done``).

    Select the cells and runs that are drawn first: in a store still being written, one run
    may be far ahead of the others.
    """
    steps = np.asarray(ds[schema.STEP].values)
    if schema.FRAMES_DONE in ds:
        done = int(np.asarray(ds[schema.FRAMES_DONE].values).min())
        return steps[:done]
    return steps


def _last_complete_step(ds, what: str) -> int:
    done = _complete_steps(ds)
    if done.size == 0:
        raise InputError(f"{what}: no complete frame in the store for the runs shown (it is "
                         "still being written)")
    return int(done[-1])


def _label_cell(T, f) -> str:
    parts = []
    if T is not None:
        parts.append(f"T = {T:g}")
    if f is not None:
        parts.append(f"f = {f:g}")
    return ", ".join(parts)


def _scalar(da) -> float | None:
    if da is None:
        return None
    try:
        return float(da)
    except (TypeError, ValueError):
        return None


# --- Fig. 3 ------------------------------------------------------------------------------------
def fig3_correlations(ml_traj: Any, ed_traj: Any, steps: Sequence[int],
                      out: str | os.PathLike, T: float | None = None,
                      fillings: Sequence[float] | None = None,
                      r_max: float | None = None) -> Path:
    """ML vs ED lattice correlation ``C(r, t) = <Q_i Q_j>`` after a quench (paper Fig. 3).

    For every filling (one panel each) and every step in ``steps`` the ensemble mean of
    :func:`cdwdata.analysis.correlation_function` over runs is drawn: ED as markers with
    standard-error bars, ML as lines of the same colour. The staggered (checkerboard) order
    shows as the short-period oscillation between even and odd shells.

    Parameters
    ----------
    ml_traj, ed_traj : Dataset or path
        Trajectory stores (dims ``T, f, run, step, x, y``, variable ``Q``) of the same lattice
        size; ML and ED runs with the same seed start from the same hot state.
    steps : sequence of int
        Langevin steps to show (each must be a frame of both stores).
    out : path
        PNG to write.
    T : float, optional
        Quench temperature (default: the first of the stores).
    fillings : sequence of float, optional
        Fillings to show (default: all fillings of the ED store).
    r_max : float, optional
        Largest distance drawn (default ``L / 2``).

    Returns
    -------
    Path of the PNG. The JSON sidecar holds, per filling and step, ``r``, the ML and ED
    means and standard errors, the number of runs and ``rms_diff``, the RMS of
    ``C_ML - C_ED`` over the drawn shells, next to ``mean_sem``, the mean combined standard
    error, so agreement within errors reads ``rms_diff <~ mean_sem``.
    """
    import matplotlib

    ml, ed = _open(ml_traj), _open(ed_traj)
    if schema.Q not in ml or schema.Q not in ed:
        raise InputError("fig3_correlations needs trajectory stores with the variable Q")
    if ml.sizes[schema.X] != ed.sizes[schema.X]:
        raise InputError(f"ML and ED lattices differ: L = {ml.sizes[schema.X]} vs "
                         f"{ed.sizes[schema.X]}")
    steps = _check_steps(ed, _check_steps(ml, steps, "the ML store"), "the ED store")
    if not steps:
        raise InputError("fig3_correlations needs at least one step")
    ml, ed = _pick(ml, schema.T, T), _pick(ed, schema.T, T)
    T_used = _scalar(ed[schema.T]) if schema.T in ed.coords else None
    fs = _values(ed, schema.F_FILL, fillings)
    L = ed.sizes[schema.X]
    r_max = L / 2 if r_max is None else float(r_max)
    fig, axes = _figure(len(fs), size=(4.6, 3.8))
    cmap = matplotlib.colormaps["viridis"]
    colors = [cmap(c) for c in np.linspace(0.0, 0.85, len(steps))]
    drawn: dict[str, Any] = {"figure": "fig3", "T": T_used, "L": L, "steps": steps,
                             "r_max": r_max, "panels": []}
    for ax, f in zip(axes[0], fs, strict=True):
        stats = {}
        for name, ds in (("ml", ml), ("ed", ed)):
            cell = _pick(ds, schema.F_FILL, f)
            Q = cell[schema.Q].sel({schema.STEP: steps}).astype("float64")
            C = analysis.correlation_function(Q).compute()
            stats[name] = (analysis.ensemble_mean(C), int(cell.sizes.get(schema.RUN, 1)))
        r = np.asarray(stats["ed"][0][analysis.MEAN][schema.R].values)
        keep = r <= r_max + 1e-12
        panel: dict[str, Any] = {"f": f, "r": r[keep], "curves": []}
        for c, s in zip(colors, steps, strict=True):
            m_ml = stats["ml"][0][analysis.MEAN].sel({schema.STEP: s}).values[keep]
            e_ml = stats["ml"][0][analysis.SEM].sel({schema.STEP: s}).values[keep]
            m_ed = stats["ed"][0][analysis.MEAN].sel({schema.STEP: s}).values[keep]
            e_ed = stats["ed"][0][analysis.SEM].sel({schema.STEP: s}).values[keep]
            ax.plot(r[keep], m_ml, "-", color=c, lw=1.2, label=f"ML, step {s}")
            ax.errorbar(r[keep], m_ed, yerr=np.nan_to_num(e_ed), fmt="o", ms=3.5, mfc="none",
                        color=c, capsize=2, lw=0.8, label=f"ED, step {s}")
            d = m_ml - m_ed
            sem = np.sqrt(np.nan_to_num(e_ml) ** 2 + np.nan_to_num(e_ed) ** 2)
            panel["curves"].append({
                "step": s, "ml_mean": m_ml, "ml_sem": e_ml, "ed_mean": m_ed, "ed_sem": e_ed,
                "rms_diff": float(np.sqrt(np.nanmean(d * d))),
                "mean_sem": float(np.mean(sem)),
            })
        panel["runs"] = {"ml": stats["ml"][1], "ed": stats["ed"][1]}
        drawn["panels"].append(panel)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xlabel("r (lattice spacings)")
        ax.set_ylabel(r"$C(r) = \langle Q_i Q_j \rangle$")
        ax.set_title(f"{_label_cell(T_used, f)}, {L}x{L}; ML {panel['runs']['ml']} runs, "
                     f"ED {panel['runs']['ed']} runs", fontsize=9)
        ax.legend(fontsize=7, ncols=2)
    fig.suptitle("ML vs ED lattice correlations after a thermal quench (paper Fig. 3)",
                 fontsize=10)
    return _save(fig, out, drawn)


# --- Fig. 4 ------------------------------------------------------------------------------------
def fig4_snapshots(traj: Any, out: str | os.PathLike, T: float | None = None,
                   f: float | None = None, run: int = 0,
                   steps: Sequence[int] | Literal["last"] | None = None,
                   n_panels: int = 4) -> Path:
    """Snapshots of the local CDW order parameter phi of one run (paper Fig. 4).

    Parameters
    ----------
    traj : Dataset or path
        An order-parameter store (``phi``, from ``cdw analyze``) or a trajectory store with
        densities ``n`` (phi is then computed, eq. 12).
    out : path
        PNG to write.
    T, f : float, optional
        Cell to show (default: the first).
    run : int
        Run to show.
    steps : sequence of int or "last", optional
        Steps to show; ``"last"``: the last frame the run has written (t_end of a finished
        run); default: ``n_panels`` steps geometrically spaced over the written frames of
        the run, ending with the last.

    Returns
    -------
    Path of the PNG; the JSON sidecar holds the steps, times and per panel the mean of
    ``|phi|`` and the fraction of sites with ``phi > 0``.
    """
    ds = _open(traj)
    cell = _pick(_pick(ds, schema.T, T), schema.F_FILL, f)
    if schema.RUN in cell.dims:
        cell = cell.isel({schema.RUN: int(run)})
    if schema.PHI in cell:
        phi = cell[schema.PHI]
    elif schema.N in cell:
        phi = analysis.order_parameter(cell[schema.N])
    else:
        raise InputError("fig4_snapshots needs an order-parameter store (phi) or a trajectory "
                         "store with densities n")
    if isinstance(steps, str):
        if steps != "last":
            raise InputError(f"steps={steps!r}: give a list of steps or 'last'")
        steps = [_last_complete_step(cell, "fig4_snapshots")]
    elif steps is None:
        _last_complete_step(cell, "fig4_snapshots")
        steps = _geometric_steps(_complete_steps(cell), n_panels, skip_zero=False)
    steps = _check_steps(cell, steps, "the store")
    phi = phi.sel({schema.STEP: steps}).astype("float64").compute()
    t = _times(phi)
    fig, axes = _figure(len(steps), size=(3.2, 3.3))
    drawn: dict[str, Any] = {"figure": "fig4", "T": _scalar(cell.get(schema.T)),
                             "f": _scalar(cell.get(schema.F_FILL)), "run": int(run),
                             "steps": steps, "time": t, "mean_abs_phi": [],
                             "positive_fraction": []}
    im = None
    for i, (ax, s) in enumerate(zip(axes[0], steps, strict=True)):
        p = phi.isel({schema.STEP: i}).transpose(schema.X, schema.Y).values
        im = ax.imshow(p.T, origin="lower", cmap="RdBu_r", vmin=-1, vmax=1,
                       interpolation="nearest")
        ax.set_title(f"step {s} (t = {t[i]:g})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        drawn["mean_abs_phi"].append(float(np.nanmean(np.abs(p))))
        drawn["positive_fraction"].append(float(np.mean(p > 0)))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=r"$\phi_i$")
    fig.suptitle(f"CDW order parameter after a quench, {_label_cell(drawn['T'], drawn['f'])} "
                 f"(run {run}; paper Fig. 4)", fontsize=10)
    return _save(fig, out, drawn)


# --- Fig. 5 ------------------------------------------------------------------------------------
def fig5_structure_factor(sf_store: Any, out: str | os.PathLike, T: float | None = None,
                          f: float | None = None, steps: Sequence[int] | None = None,
                          n_panels: int = 3) -> Path:
    """Structure factor S(k, t) around Q = (pi, pi) and its radial average S(q, t) (Fig. 5).

    The first panels show the ensemble mean of ``S(k)`` at ``steps`` (the CDW wave vector
    is the centre of each map); the last shows the ensemble mean ``S(q, t)`` on log-log
    axes at the same and a few more times.

    Parameters
    ----------
    sf_store : Dataset or path
        Structure-factor store of ``cdw analyze`` (``S``, ``Sq_mean``).
    out : path
    T, f : float, optional
        Cell (default: the first).
    steps : sequence of int, optional
        Steps of the S(k) maps (default: ``n_panels`` geometrically spaced after step 0).

    Returns
    -------
    Path of the PNG; the JSON sidecar holds the steps and times, the peak ``S(Q)`` of each
    map and the S(q, t) curves drawn.
    """
    import matplotlib

    ds = _open(sf_store)
    if schema.S not in ds or "Sq_mean" not in ds:
        raise InputError("fig5_structure_factor needs a structure-factor store (S, Sq_mean) "
                         "from cdw analyze")
    cell = _pick(_pick(ds, schema.T, T), schema.F_FILL, f)
    all_steps = np.asarray(cell[schema.STEP].values)
    steps = _check_steps(cell, steps, "the store") if steps is not None else \
        _geometric_steps(all_steps, n_panels)
    S = cell[schema.S].sel({schema.STEP: steps})
    Sk = (S.mean(schema.RUN) if schema.RUN in S.dims else S).astype("float64").compute()
    t_all = _times(cell)
    t = [float(t_all[np.flatnonzero(all_steps == s)[0]]) for s in steps]
    kx = np.asarray(Sk[schema.KX].values)
    ky = np.asarray(Sk[schema.KY].values)
    dk = 2 * np.pi / kx.size
    extent = [kx[0] - dk / 2, kx[-1] + dk / 2, ky[0] - dk / 2, ky[-1] + dk / 2]
    iq = (int(np.argmin(np.abs(kx - np.pi))), int(np.argmin(np.abs(ky - np.pi))))
    fig, axes = _figure(len(steps) + 1, size=(3.5, 3.3))
    drawn: dict[str, Any] = {"figure": "fig5", "T": _scalar(cell.get(schema.T)),
                             "f": _scalar(cell.get(schema.F_FILL)), "steps": steps, "time": t,
                             "S_at_Q": [], "Sq": {}}
    for i, (ax, s) in enumerate(zip(axes[0][:-1], steps, strict=True)):
        m = Sk.isel({schema.STEP: i}).transpose(schema.KX, schema.KY).values
        im = ax.imshow(m.T, origin="lower", extent=extent, cmap="magma",
                       interpolation="nearest")
        ax.set_title(f"S(k), step {s} (t = {t[i]:g})", fontsize=9)
        ax.set_xlabel(r"$k_x$")
        ax.set_ylabel(r"$k_y$")
        fig.colorbar(im, ax=ax, shrink=0.8)
        drawn["S_at_Q"].append(float(m[iq]))
    ax = axes[0][-1]
    Sq = cell["Sq_mean"].astype("float64").compute()
    q = np.asarray(Sq[schema.QR].values)
    ok = q > 0
    curve_steps = sorted(set(steps) | set(_geometric_steps(all_steps, 5)))
    cmap = matplotlib.colormaps["viridis"]
    for c, s in zip(np.linspace(0, 0.9, len(curve_steps)), curve_steps, strict=True):
        y = Sq.sel({schema.STEP: s}).values
        ax.plot(q[ok], y[ok], "o-", ms=2.5, lw=1, color=cmap(c),
                label=f"t = {t_all[np.flatnonzero(all_steps == s)[0]]:g}")
        drawn["Sq"][str(s)] = y[ok]
    drawn["q"] = q[ok]
    _loglog(ax)
    ax.set_xlabel(r"$q = |k - Q|$")
    ax.set_ylabel(r"$S(q, t)$")
    ax.set_title("radial average (ensemble mean)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"structure factor of the density, {_label_cell(drawn['T'], drawn['f'])} "
                 "(paper Fig. 5)", fontsize=10)
    return _save(fig, out, drawn)


# --- Fig. 6 ------------------------------------------------------------------------------------
def _anchor(x_curves, y_curves, lo: float, hi: float, exponent: float) -> float | None:
    """Prefactor ``c`` of the guide ``y = c x**exponent`` fitted to every point in [lo, hi].

    Least squares in log-log with the slope fixed: ``log c = mean(log y - exponent log x)``
    over the points of all curves inside the window (None if there are none).
    """
    vals = []
    for x, y in zip(x_curves, y_curves, strict=True):
        ok = (x >= lo) & (x <= hi) & (y > 0) & np.isfinite(y)
        vals.extend(np.log(y[ok]) - exponent * np.log(x[ok]))
    return float(np.exp(np.mean(vals))) if vals else None


def fig6_collapse(sf_store: Any, dom_store: Any, out: str | os.PathLike,
                  temperatures: Sequence[float] | None = None, f: float | None = None,
                  steps: Sequence[int] | None = None, n_curves: int = 6,
                  x_range: tuple[float, float] | None = None) -> Path:
    """Scaling collapse ``S(q, t) / L(t)^2`` vs ``q L(t)`` (paper Fig. 6), one panel per T.

    Curves are the ensemble means ``Sq_mean`` and ``L_mean`` at ``steps``. Guide lines (slope
    fixed, prefactor fitted to every drawn point in a window): the 2D Porod tail ``q^-3``
    (black) over the Porod window ``cdw analyze`` used at the last drawn step
    (``porod_q_min .. porod_q_max`` times ``L_mean``, in ``q L``) and ``q^-2`` (red dashed)
    over its large-q window (``large_q_window`` attr times ``L_mean``). Each panel states
    the collapse quality of the drawn curves (:func:`cdwdata.analysis.collapse_quality`,
    smaller is better) and the stored Porod slope pooled over the late-time window (or of
    the last frame, for stores without it).

    Parameters
    ----------
    sf_store, dom_store : Dataset or path
        Structure-factor and domain-size stores of the same ``cdw analyze`` run.
    out : path
    temperatures : sequence of float, optional
        One panel each (default: every T of the store).
    f : float, optional
        Filling (default: the first).
    steps : sequence of int, optional
        Steps to overlay (default: ``n_curves`` geometrically spaced over the store's
        late-time window, the growth window of ``cdw analyze``; over every step after 0 if
        the window holds fewer than two).
    x_range : (float, float), optional
        ``q L`` range over which the collapse quality is measured (default: all).

    Returns
    -------
    Path of the PNG; the JSON sidecar holds per panel ``collapse_msd`` (drawn curves),
    ``collapse_msd_window`` (stored, every frame of the late-time window), the Porod slopes,
    the guide windows, the steps and the curves drawn.
    """
    sf, dom = _open(sf_store), _open(dom_store)
    if "Sq_mean" not in sf or "L_mean" not in dom:
        raise InputError("fig6_collapse needs the structure-factor (Sq_mean) and domain-size "
                         "(L_mean) stores of cdw analyze")
    sf, dom = _pick(sf, schema.F_FILL, f), _pick(dom, schema.F_FILL, f)
    Ts = _values(sf, schema.T, temperatures)
    all_steps = np.asarray(sf[schema.STEP].values)
    late_window = sf.attrs.get("late_window", sf.attrs.get("window"))
    if steps is None:
        pool = all_steps
        if late_window is not None:
            t = _times(sf)
            late = all_steps[(t >= late_window[0]) & (t <= late_window[1]) & (t > 0)]
            pool = late if late.size >= 2 else all_steps
        steps = _geometric_steps(pool, n_curves)
    steps = _check_steps(sf, steps, "the store")
    porod_win = tuple(sf.attrs.get("porod_qL_window", analysis.POROD_QL))
    large_win = sf.attrs.get("large_q_window")
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    fig, axes = _figure(len(Ts), size=(4.4, 3.8))
    drawn: dict[str, Any] = {"figure": "fig6", "f": _scalar(sf.get(schema.F_FILL)),
                             "steps": steps, "late_window": late_window,
                             "porod_window_rule": sf.attrs.get("porod_window_rule"),
                             "large_q_window": large_win, "panels": []}
    t_all = _times(sf)
    for ax, T in zip(axes[0], Ts, strict=True):
        Sq = _pick(sf, schema.T, T)["Sq_mean"].sel({schema.STEP: steps}).astype("float64")
        Lm = _pick(dom, schema.T, T)["L_mean"].sel({schema.STEP: steps}).astype("float64")
        x, y = analysis.scaling_collapse(Sq.compute(), Lm.compute())
        quality = float(analysis.collapse_quality(x, y, x_range=x_range))
        xs, ys = [], []
        for c, s in zip(np.linspace(0, 0.9, len(steps)), steps, strict=True):
            xv = x.sel({schema.STEP: s}).values
            yv = y.sel({schema.STEP: s}).values
            ok = (xv > 0) & (yv > 0) & np.isfinite(yv)
            xs.append(xv[ok])
            ys.append(yv[ok])
            ax.plot(xv[ok], yv[ok], "o-", ms=2.5, lw=0.9, color=cmap(c),
                    label=f"t = {t_all[np.flatnonzero(all_steps == s)[0]]:g}")
        guides = {}
        x_all = np.concatenate(xs) if xs else np.array([])
        cell = _pick(sf, schema.T, T)
        L_last = float(Lm.sel({schema.STEP: steps[-1]}))
        win3 = porod_win
        if "porod_q_min" in cell and "porod_q_max" in cell:
            lo = float(cell["porod_q_min"].sel({schema.STEP: steps[-1]})) * L_last
            hi = float(cell["porod_q_max"].sel({schema.STEP: steps[-1]})) * L_last
            win3 = (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
        if x_all.size:
            x_hi = float(x_all.max())
            win2 = (x_hi / 2.0, x_hi) if large_win is None else \
                (float(large_win[0]) * L_last, float(large_win[1]) * L_last)
            windows = [(-3.0, win3, ("k", "-"), "Porod $q^{-3}$"),
                       (-2.0, win2, ("r", "--"), "$q^{-2}$")]
            windows = [w for w in windows if w[1] is not None]
            for expo, (lo, hi), style, name in windows:
                c = _anchor(xs, ys, lo, hi, expo)
                if c is None:
                    continue
                xg = np.array([lo / 1.5, hi * 1.5])
                ax.plot(xg, c * xg**expo, style[1], color=style[0], lw=1.4, label=name)
                guides[str(int(expo))] = {"prefactor": c, "fit_range": [lo, hi]}
        porod = {}
        for name in ("porod_slope", "porod_slope_err", "large_q_slope", "large_q_slope_err",
                     "porod_slope_late", "porod_slope_late_err", "large_q_slope_late",
                     "large_q_slope_late_err", analysis.QUALITY):
            if name in cell:
                da = cell[name]
                if schema.STEP in da.dims:
                    da = da.sel({schema.STEP: steps[-1]})
                key = "collapse_msd_window" if name == analysis.QUALITY else name
                porod[key] = float(da)
        _loglog(ax)
        ax.set_xlabel(r"$q\,L(t)$")
        ax.set_ylabel(r"$S(q, t) / L(t)^2$")
        late = porod.get("porod_slope_late")
        slope = late if late is not None and math.isfinite(late) else porod.get("porod_slope")
        which = "late-time" if slope is late else "last frame"
        err = porod.get("porod_slope_late_err" if slope is late else "porod_slope_err",
                        float("nan"))
        extra = "" if slope is None or not math.isfinite(slope) else \
            f"\nPorod slope ({which}) {slope:.2f} ± {err:.2f}"
        ax.set_title(f"{_label_cell(T, drawn['f'])}: collapse spread {quality:.3g}{extra}",
                     fontsize=8.5)
        ax.legend(fontsize=7)
        drawn["panels"].append({"T": T, "collapse_msd": quality, "guides": guides,
                                **porod, "qL": xs, "S_over_L2": ys})
    fig.suptitle("dynamical scaling of the structure factor (paper Fig. 6)", fontsize=10)
    return _save(fig, out, drawn)


# --- Fig. 7 ------------------------------------------------------------------------------------
def fig7_growth(dom_store: Any, growth_store: Any, out: str | os.PathLike,
                titles: Sequence[str] | None = None) -> Path:
    """Domain growth L(t) on log-log axes with the fitted power laws (paper Fig. 7).

    Each (T, f) cell of the growth-exponents store is drawn as the ensemble mean ``L_mean``
    (markers; band = standard error) and its fit ``A t^alpha`` over the fit window (the
    store's ``window`` attr); the legend gives ``alpha +/- alpha_err``. The dotted grey line
    is the Allen-Cahn law ``t^(1/2)`` through the first fitted point.

    Parameters
    ----------
    dom_store, growth_store : Dataset or path, or equal-length sequences of them
        Domain-size and growth-exponents stores of ``cdw analyze``; a sequence gives one
        panel per pair (paper: (a) the T scan at f = 0.5, (b) the f scan at T = 0.1).
    out : path
    titles : sequence of str, optional
        Panel titles.

    Returns
    -------
    Path of the PNG; the JSON sidecar holds per panel and cell ``T, f, alpha, alpha_err,
    prefactor, window``.
    """
    if isinstance(dom_store, (list, tuple)) != isinstance(growth_store, (list, tuple)):
        raise InputError("give one domain-size and one growth-exponents store, or two "
                         "sequences of the same length")
    doms = list(dom_store) if isinstance(dom_store, (list, tuple)) else [dom_store]
    grows = list(growth_store) if isinstance(growth_store, (list, tuple)) else [growth_store]
    if len(doms) != len(grows) or not doms:
        raise InputError(f"{len(doms)} domain-size vs {len(grows)} growth-exponents stores")
    titles = list(titles) if titles is not None else [None] * len(doms)
    fig, axes = _figure(len(doms), size=(4.8, 4.0))
    drawn: dict[str, Any] = {"figure": "fig7", "allen_cahn_exponent": ALLEN_CAHN,
                             "panels": []}
    for ax, d_in, g_in, title in zip(axes[0], doms, grows, titles, strict=True):
        dom, gr = _open(d_in), _open(g_in).load()
        if "L_mean" not in dom or analysis.ALPHA not in gr:
            raise InputError("fig7_growth needs domain-size (L_mean) and growth-exponents "
                             "(alpha) stores of cdw analyze")
        window = [float(w) for w in gr.attrs.get("window", (np.nan, np.nan))]
        t = _times(dom)
        late = t > 0
        panel: dict[str, Any] = {"title": title, "window": window, "cells": []}
        first_fit = None
        for T in _values(gr, schema.T, None):
            for f in _values(gr, schema.F_FILL, None):
                sel = {k: v for k, v in ((schema.T, T), (schema.F_FILL, f)) if v is not None}
                cell = dom.sel(sel, method="nearest") if sel else dom
                Lm = np.asarray(cell["L_mean"].values, dtype=float)
                Ls = np.asarray(cell["L_sem"].values, dtype=float) if "L_sem" in cell \
                    else np.full_like(Lm, np.nan)
                g = gr.sel(sel, method="nearest") if sel else gr
                a, da, A = (float(g[k]) for k in (analysis.ALPHA, analysis.ALPHA_ERR,
                                                   analysis.PREFACTOR))
                (line,) = ax.plot(t[late], Lm[late], "o", ms=3, alpha=0.8)
                if np.isfinite(Ls[late]).any():
                    ax.fill_between(t[late], (Lm - np.nan_to_num(Ls))[late],
                                    (Lm + np.nan_to_num(Ls))[late], color=line.get_color(),
                                    alpha=0.2, lw=0)
                tw = t[(t >= window[0]) & (t <= window[1]) & late]
                if tw.size and np.isfinite(a) and np.isfinite(A):
                    ax.plot(tw, A * tw**a, "-", color=line.get_color(), lw=1.6,
                            label=f"{_label_cell(T, f)}: α = {a:.3f} ± {da:.3f}")
                    if first_fit is None:
                        first_fit = (float(tw[0]), float(A * tw[0] ** a))
                else:
                    line.set_label(f"{_label_cell(T, f)}: no fit")
                panel["cells"].append({"T": T, "f": f, "alpha": a, "alpha_err": da,
                                       "prefactor": A, "window": window,
                                       "time": t[late], "L_mean": Lm[late]})
        if first_fit is not None:
            t0, L0 = first_fit
            tr = t[late][t[late] >= t0]
            ax.plot(tr, L0 * (tr / t0) ** ALLEN_CAHN, ":", color="0.4", lw=1.5,
                    label=r"Allen-Cahn $t^{1/2}$")
            panel["allen_cahn_anchor"] = {"t0": t0, "L0": L0}
        for w in window:
            if np.isfinite(w):
                ax.axvline(w, color="0.85", lw=0.8, zorder=0)
        _loglog(ax)
        ax.set_xlabel(r"$t$ ($1/\omega$)")
        ax.set_ylabel(r"$L(t)$ (lattice spacings)")
        ax.set_title(title or f"fit window t = {window[0]:g} .. {window[1]:g}", fontsize=9)
        ax.legend(fontsize=7)
        drawn["panels"].append(panel)
    fig.suptitle("CDW domain growth L(t) ~ t^alpha (paper Fig. 7)", fontsize=10)
    return _save(fig, out, drawn)


# --- Fig. 8 ------------------------------------------------------------------------------------
def fig8_density(traj: Any, out: str | os.PathLike, step: int | None = None, run: int = 0,
                 T: float | None = None, fillings: Sequence[float] | None = None,
                 crop: int | None = None) -> Path:
    """Late-time snapshots of the local density n_i, one panel per filling (paper Fig. 8).

    Parameters
    ----------
    traj : Dataset or path
        Trajectory store with densities ``n``.
    out : path
    step : int, optional
        Step to show (default: the last step that every run shown has written, t_end of a
        finished store).
    run : int
        Run to show.
    T : float, optional
        Temperature (default: the first).
    fillings : sequence of float, optional
        Default: every filling of the store.
    crop : int, optional
        Show only the ``crop x crop`` corner (the paper's close-up view).

    Returns
    -------
    Path of the PNG; the JSON sidecar holds the step and time and per filling the mean
    density of the shown frame (f itself for force fields that solve the filling, ED and the
    grand-canonical model; near f for a direct-force model, whose densities come from its
    forces), and the fractions of nearly full (n > 0.9) and empty (n < 0.1) sites.
    """
    ds = _open(traj)
    if schema.N not in ds:
        raise InputError("fig8_density needs a trajectory store with densities n")
    cell = _pick(ds, schema.T, T)
    fs = _values(cell, schema.F_FILL, fillings)
    if step is None:
        shown = cell
        if schema.F_FILL in shown.dims:
            shown = shown.sel({schema.F_FILL: fs}, method="nearest")
        if schema.RUN in shown.dims:
            shown = shown.isel({schema.RUN: int(run)})
        step = _last_complete_step(shown, "fig8_density")
    step = _check_steps(ds, [step], "the store")[0]
    t = float(_times(cell.sel({schema.STEP: [step]}))[0])
    fig, axes = _figure(len(fs), size=(3.4, 3.4))
    drawn: dict[str, Any] = {"figure": "fig8", "T": _scalar(cell.get(schema.T)), "step": step,
                             "time": t, "run": int(run), "crop": crop, "panels": []}
    im = None
    for ax, f in zip(axes[0], fs, strict=True):
        n = _pick(cell, schema.F_FILL, f)[schema.N]
        if schema.RUN in n.dims:
            n = n.isel({schema.RUN: int(run)})
        n = n.sel({schema.STEP: step}).transpose(schema.X, schema.Y).values.astype(float)
        shown = n[:crop, :crop] if crop else n
        im = ax.imshow(shown.T, origin="lower", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(f"f = {f:g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        drawn["panels"].append({"f": f, "mean_n": float(np.mean(n)),
                                "full_fraction": float(np.mean(n > 0.9)),
                                "empty_fraction": float(np.mean(n < 0.1))})
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=r"$n_i$")
    fig.suptitle(f"local electron density at step {step} (t = {t:g}), "
                 f"{_label_cell(drawn['T'], None)} (paper Fig. 8)", fontsize=10)
    return _save(fig, out, drawn)
