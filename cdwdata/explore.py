"""Interactive coarsening explorer (hvplot + panel) for trajectory stores.

Three linked views of one trajectory store (dims ``T, f, run, step, x, y``):

* the lattice field (``phi`` from eq. 12, or ``n`` or ``Q``) at the chosen ``T, f, run, step``
  (widgets), as an hvplot image;
* the domain size ``L(t)`` (eq. 15) of every run and their mean on log-log axes, with the
  power-law fit ``L = A t**alpha`` over a time window (a range slider);
* the scaling collapse ``S(q, t) / L(t)**2`` versus ``q L(t)`` (paper Fig. 6) at a few
  log-spaced times.

``app(store_or_dataset)`` returns the panel layout (display it in a notebook, or
``.servable()``); ``serve(path, port)`` serves it on 127.0.0.1 only; ``cdw explore STORE``
does the same from the shell. Analysis results of a (T, f) cell are computed once (with
:mod:`cdwdata.analysis`, lazily over dask) and cached by the :class:`Explorer`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata import schema
from cdwdata.errors import InputError, ParameterError

#: Fields the image view can show, in order of preference.
FIELDS = (schema.PHI, schema.N, schema.Q)
#: Times shown in the scaling-collapse view (log-spaced among the stored frames).
N_COLLAPSE_TIMES = 6
_CMAPS = {schema.PHI: "RdBu_r", schema.N: "viridis", schema.Q: "RdBu_r"}
_FRAME_DIMS = (schema.T, schema.F_FILL, schema.RUN, schema.STEP)
LOOPBACK = "127.0.0.1"
#: Width of the sidebar in pixels; its widgets stretch to it (and are not clipped).
SIDEBAR_WIDTH = 280


def log_ticks(values) -> list[tuple[float, str]]:
    """Ticks ``(value, label)`` for a log axis over the positive ``values``: 1, 2 and 5 times
    powers of ten (every mantissa 1..9 when that gives fewer than two, the ends of the range
    when even that does), so that labels on a short log axis do not run together."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return []
    lo, hi = float(v.min()), float(v.max())
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [float(f"{m * 10.0**k:.12g}") for k in decades for m in mantissas]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 2:
            break
    else:
        ticks = sorted({lo, hi, *ticks})
    return [(t, f"{t:.3g}") for t in ticks]


def _holoviews():
    """holoviews with its bokeh backend loaded (options can only be set once one is)."""
    import holoviews as hv

    if "bokeh" not in hv.Store.renderers:
        hv.extension("bokeh", logo=False)
    return hv


def _open(store_or_dataset):
    import xarray as xr

    if isinstance(store_or_dataset, xr.Dataset):
        return store_or_dataset
    if isinstance(store_or_dataset, (str, os.PathLike)):
        from cdwdata.store import open_dataset

        return open_dataset(store_or_dataset)
    raise InputError(f"explore needs a store path or an xarray.Dataset, got "
                     f"{type(store_or_dataset).__name__}")


class Explorer:
    """A trajectory dataset plus cached analysis, from which panel layouts are built.

    Parameters
    ----------
    store_or_dataset : path or xarray.Dataset
        Trajectory store (or dataset) with ``n`` (preferred) or ``Q`` over
        ``(..., step, x, y)``; missing ``T``, ``f``, ``run`` dimensions are added.
    """

    def __init__(self, store_or_dataset) -> None:
        ds = _open(store_or_dataset)
        if schema.X not in ds.dims or schema.Y not in ds.dims or schema.STEP not in ds.dims:
            raise InputError(f"explore needs a trajectory with dims (..., step, x, y); got "
                             f"{dict(ds.sizes)} (kind={ds.attrs.get('kind')!r})")
        if schema.N not in ds and schema.Q not in ds:
            raise InputError("explore needs the density 'n' or the distortion 'Q' in the "
                             f"dataset; it holds {sorted(map(str, ds.data_vars))}")
        for dim in (schema.T, schema.F_FILL, schema.RUN):
            if dim not in ds.dims:
                if dim in ds.coords:  # scalar coordinate
                    ds = ds.expand_dims(dim)
                elif dim == schema.F_FILL and dim in ds.attrs:
                    ds = ds.expand_dims({dim: [float(ds.attrs[dim])]})
                else:
                    ds = ds.expand_dims({dim: [0.5 if dim == schema.F_FILL else 0]})
        if schema.FRAMES_DONE in ds:
            done = int(np.asarray(ds[schema.FRAMES_DONE].values).max())
            if 0 < done < ds.sizes[schema.STEP]:  # a run still being written: hide empty frames
                ds = ds.isel({schema.STEP: slice(0, done)})
        self.ds = ds
        self.name = str(ds.attrs.get("name") or (Path(store_or_dataset).name
                        if isinstance(store_or_dataset, (str, os.PathLike)) else "dataset"))
        self.fields = [f for f in FIELDS if f in ds or (f == schema.PHI and schema.N in ds)]
        self._cell_cache: dict[tuple[float, float], dict[str, Any]] = {}

    # -- data ----------------------------------------------------------------------------------
    def coords(self, dim: str) -> list:
        return [v.item() for v in self.ds[dim].values]

    def field(self, name: str):
        """Lazy DataArray of field ``name`` (``phi`` is computed from ``n``)."""
        if name == schema.PHI and schema.PHI not in self.ds:
            from cdwdata.analysis import order_parameter

            return order_parameter(self.ds[schema.N])
        if name not in self.ds:
            raise InputError(f"field {name!r} is not available; choose one of {self.fields}")
        return self.ds[name]

    def frame(self, name: str, T: float, f: float, run: int, step: int):
        """The (x, y) field at one (T, f, run, step), loaded."""
        sel = {schema.T: T, schema.F_FILL: f, schema.RUN: run, schema.STEP: step}
        return self.field(name).sel(sel).load()

    def cell(self, T: float, f: float) -> dict[str, Any]:
        """Analysis of one (T, f) cell (cached): ``L`` (run, step), ``Lmean`` (step) and the
        run-averaged ``Sq`` (step, q), all loaded, with ``t = 0`` frames dropped."""
        key = (float(T), float(f))
        if key not in self._cell_cache:
            from cdwdata import analysis

            if schema.N not in self.ds:
                raise InputError("L(t) and S(q,t) need the density 'n', which this store "
                                 "does not hold")
            n = self.ds[schema.N].sel({schema.T: T, schema.F_FILL: f})
            t = self._time(n)
            n = n.isel({schema.STEP: np.flatnonzero(t > 0)})
            import xarray as xr

            S = analysis.structure_factor(n)
            both = xr.Dataset({"L": analysis.domain_size(S),  # one pass over the data
                               "Sq": analysis.radial_structure_factor(S).mean(schema.RUN)})
            both = both.compute()
            L, Sq = both["L"], both["Sq"]
            self._cell_cache[key] = {"L": L, "Lmean": L.mean(schema.RUN), "Sq": Sq,
                                     "t": self._time(L)}
        return self._cell_cache[key]

    @staticmethod
    def _time(da) -> np.ndarray:
        if schema.TIME in da.coords:
            return np.asarray(da[schema.TIME].values, dtype=float)
        return np.asarray(da[schema.STEP].values, dtype=float)

    def default_window(self, T: float, f: float) -> tuple[float, float]:
        """The default fit window of ``cdw analyze`` (:func:`cdwdata.analysis.growth_window`:
        the last decade of the run), so that the explorer shows the same alpha."""
        from cdwdata import analysis

        t = self.cell(T, f)["t"]
        if t.size == 0:
            return (0.0, 0.0)
        return analysis.growth_window(t)

    # -- plots ---------------------------------------------------------------------------------
    def image(self, name: str, T: float, f: float, run: int, step: int):
        """hvplot image of field ``name`` at one frame."""
        import hvplot.xarray  # noqa: F401 - registers .hvplot

        da = self.frame(name, T, f, run, step)
        vmax = 1.0 if name == schema.PHI else float(np.nanmax(np.abs(da.values)) or 1.0)
        clim = (0.0, 1.0) if name == schema.N else (-vmax, vmax)
        time = float(da[schema.TIME]) if schema.TIME in da.coords else float(step)
        return da.hvplot.image(
            x=schema.X, y=schema.Y, cmap=_CMAPS[name], clim=clim, aspect="equal",
            frame_width=320, colorbar=True,
            title=f"{name}  T={T:g} f={f:g} run={run} step={step} (t={time:g})",
        )

    def growth(self, T: float, f: float, window: tuple[float, float] | None = None):
        """L(t) of each run and the mean (log-log) with the power-law fit over ``window``."""
        from cdwdata import analysis

        hv = _holoviews()

        c = self.cell(T, f)
        t, L = c["t"], c["L"]
        curves = [hv.Curve((t, L.sel({schema.RUN: r}).values), "t", "L",
                           label="runs").opts(color="lightgray", line_width=1)
                  for r in L[schema.RUN].values]
        curves.append(hv.Curve((t, c["Lmean"].values), "t", "L", label="mean").opts(
            color="black", line_width=2))
        title = f"L(t)  T={T:g} f={f:g}"
        window = window or self.default_window(T, f)
        sel = (t >= window[0]) & (t <= window[1])
        if sel.sum() >= analysis.MIN_FIT_POINTS:
            fit = analysis.growth_exponent(L, window=tuple(window))
            a, da_, A = (float(fit[k]) for k in (analysis.ALPHA, analysis.ALPHA_ERR,
                                                  analysis.PREFACTOR))
            tf = t[sel]
            curves.append(hv.Curve((tf, A * tf**a), "t", "L",
                                   label=f"fit alpha={a:.3f}±{da_:.3f}").opts(
                color="crimson", line_dash="dashed", line_width=2))
            title += f"  alpha={a:.3f}±{da_:.3f} over t={window[0]:.3g}..{window[1]:.3g}"
        else:
            title += f"  (window holds < {analysis.MIN_FIT_POINTS} frames: no fit)"
        return hv.Overlay(curves).opts(logx=True, logy=True, title=title, frame_width=320,
                                       frame_height=240, legend_position="right",
                                       xticks=log_ticks(t), yticks=log_ticks(L.values))

    def collapse(self, T: float, f: float):
        """Scaling collapse S(q,t)/L(t)^2 vs q L(t) at a few log-spaced times."""
        from cdwdata import analysis

        hv = _holoviews()

        c = self.cell(T, f)
        t = c["t"]
        if t.size == 0:
            return hv.Curve([]).opts(title="no frames with t > 0")
        picks = np.unique(np.round(np.geomspace(1, t.size, min(N_COLLAPSE_TIMES, t.size)))) - 1
        x, y = analysis.scaling_collapse(c["Sq"], c["Lmean"])
        curves, xs, ys = [], [], []
        colors = hv.plotting.util.process_cmap("viridis", len(picks))
        for color, i in zip(colors, picks.astype(int), strict=True):
            xi, yi = x.isel({schema.STEP: i}).values, y.isel({schema.STEP: i}).values
            ok = (xi > 0) & (yi > 0) & np.isfinite(xi) & np.isfinite(yi)
            xs.append(xi[ok])
            ys.append(yi[ok])
            label = f"t={t[i]:g}"
            curves.append(hv.Curve((xs[-1], ys[-1]), "qL", "S/L^2", label=label).opts(
                color=color))
            curves.append(hv.Scatter((xs[-1], ys[-1]), "qL", "S/L^2", label=label).opts(
                color=color, size=4))
        return hv.Overlay(curves).opts(logx=True, logy=True, frame_width=320, frame_height=240,
                                       title=f"scaling collapse  T={T:g} f={f:g}",
                                       legend_position="right",
                                       xticks=log_ticks(np.concatenate(xs)),
                                       yticks=log_ticks(np.concatenate(ys)))

    # -- layout --------------------------------------------------------------------------------
    def widgets(self) -> dict[str, Any]:
        """Fresh widgets (one set per layout / browser session)."""
        import panel as pn

        steps = self.coords(schema.STEP)
        # panel >= 1.5 calls a widget's title `label` (`name` is deprecated for it)
        key = "label" if "label" in pn.widgets.Select.param else "name"

        def titled(text: str) -> dict[str, Any]:  # as wide as the sidebar, never wider
            return {key: text, "sizing_mode": "stretch_width"}

        w = {
            "field": pn.widgets.Select(options=list(self.fields), **titled("field")),
            schema.T: pn.widgets.Select(options=self.coords(schema.T), **titled(schema.T)),
            schema.F_FILL: pn.widgets.Select(options=self.coords(schema.F_FILL),
                                             **titled(schema.F_FILL)),
            schema.RUN: pn.widgets.Select(options=self.coords(schema.RUN), **titled(schema.RUN)),
            schema.STEP: pn.widgets.DiscreteSlider(options=steps, value=steps[-1],
                                                   **titled(schema.STEP)),
        }
        if schema.N in self.ds:
            t = self._time(self.ds[schema.STEP])
            t = t[t > 0]
            if t.size:
                lo, hi = float(t[0]), float(t[-1])
                w["window"] = pn.widgets.RangeSlider(
                    start=lo, end=hi,
                    value=self.default_window(w[schema.T].value, w[schema.F_FILL].value),
                    step=float(t[1] - t[0]) if t.size > 1 else 1.0,
                    **titled("fit window (time)"))
        return w

    def layout(self):
        """Panel layout: widgets, field image, L(t) with fit and the scaling collapse."""
        import hvplot.xarray  # noqa: F401 - registers .hvplot
        import panel as pn

        hv = _holoviews()
        w = self.widgets()
        frame = hv.DynamicMap(pn.bind(self.image, name=w["field"], T=w[schema.T],
                                      f=w[schema.F_FILL], run=w[schema.RUN],
                                      step=w[schema.STEP]))
        plots = [pn.pane.HoloViews(frame, name="field", linked_axes=False)]
        if schema.N in self.ds:
            window = w.get("window")
            if window is not None:
                growth = pn.bind(self.growth, T=w[schema.T], f=w[schema.F_FILL], window=window)
            else:
                growth = pn.bind(self.growth, T=w[schema.T], f=w[schema.F_FILL])
            plots.append(pn.panel(growth, name="L(t)"))
            plots.append(pn.panel(pn.bind(self.collapse, T=w[schema.T], f=w[schema.F_FILL]),
                                  name="collapse"))
        controls = pn.Column(pn.pane.Markdown(f"### {self.name}", sizing_mode="stretch_width"),
                             *w.values(), width=SIDEBAR_WIDTH)
        return pn.Row(controls, pn.FlexBox(*plots), name="cdwdata explorer")


def demo_store(path, L: int = 12, steps: int = 160, save_every: int = 4, runs: int = 2,
               temperatures: tuple[float, ...] = (0.1,), fillings: tuple[float, ...] = (0.5,),
               seed: int = 0, overwrite: bool = False) -> str:
    """Write a tiny ED-Langevin quench store at ``path`` (seconds on one core) and return it.

    For notebooks and tests that have no real data: an ED thermal quench of ``runs`` runs on an
    L x L lattice (default 12 x 12, 160 steps, a frame every 4 steps). numpy's BLAS is held at
    one thread meanwhile (spinning BLAS threads make small eigensolves much slower on a busy
    machine). An existing complete store with the same settings is reused.
    """
    from cdwdata.quench import QuenchConfig, run_quench
    from cdwdata.store import open_dataset

    config = QuenchConfig(L=L, temperatures=tuple(temperatures), fillings=tuple(fillings),
                          runs=runs, steps=steps, save_every=save_every, seed=seed,
                          forcefield="ed")
    path = Path(path)
    if path.exists() and not overwrite:
        ds = open_dataset(path)
        done = ds.get(schema.FRAMES_DONE)
        if done is not None and int(done.min()) == ds.sizes[schema.STEP]:
            return str(path)
        overwrite = True
    from cdwdata.ensemble import blas_threads

    old = blas_threads(1)
    try:
        return run_quench(config, path, overwrite=overwrite, progress=False,
                          command=f"cdwdata.explore.demo_store({str(path)!r})")
    finally:
        if old is not None:
            blas_threads(old)


def app(store_or_dataset):
    """The coarsening explorer of a trajectory store or dataset, as a panel layout."""
    return Explorer(store_or_dataset).layout()


def serve(path, port: int = 5006, show: bool = False, threaded: bool = False,
          verbose: bool = True):
    """Serve the explorer of the store at ``path`` on http://127.0.0.1:port/ (loopback only).

    The store is opened once; each browser session gets its own widgets. With
    ``threaded=False`` this blocks until interrupted; with ``threaded=True`` it returns the
    server thread at once (stop it with ``.stop()``).
    """
    import panel as pn

    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ParameterError(f"port={port!r} is not allowed: use an integer in 1..65535")
    explorer = Explorer(path)
    origins = [f"{LOOPBACK}:{port}", f"localhost:{port}"]
    if verbose:
        print(f"cdwdata explorer of {path}: http://{LOOPBACK}:{port}/ (Ctrl-C to stop)",
              flush=True)
    return pn.serve({"/": explorer.layout}, port=port, address=LOOPBACK,
                    websocket_origin=origins, show=show, threaded=threaded,
                    title="cdwdata coarsening explorer", verbose=False)
