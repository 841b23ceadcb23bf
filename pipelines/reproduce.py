#!/usr/bin/env python
"""One-command reproduction of Cheng, Zhang & Chern, *ML for phase ordering of CDWs*.

    python pipelines/reproduce.py --preset small            # ~2 minutes on a 2-core CPU
    python pipelines/reproduce.py --preset full --device cuda --out runs/paper

Stages (each skipped when its outputs exist and are complete; see ``pipelines/README.md``):

 1. ``trainset``        ED training sets, one store for every filling (section III)
 2. ``train``           one direct-force ML model per filling f = 0.5, 0.4, 0.3 (appendix B)
 3. ``validate``        force / density errors on held-out ED quench snapshots (Fig. 2)
 4. ``quench-T-scan``   ML-Langevin ensemble A: f = 0.5 at T = 0.1, 0.2, 0.3 (Figs. 4-7a)
 5. ``quench-f-scan``   ML-Langevin ensemble B: T = 0.1 at f = 0.5, 0.4, 0.3 (Figs. 7b, 8)
 6. ``analyze-T-scan``  phi, S(k,t), S(q,t), L(t), Porod slopes, alpha (cdw analyze)
 7. ``analyze-f-scan``
 8. ``correlation-ed``  ED-Langevin quenches on a small lattice for C(r, t) (Fig. 3)
 9. ``correlation-ml``  the same quenches (same seeds) with the ML models
10. ``catalog``         intake catalog of everything produced (catalog.yaml)
11. ``figures``         figures/fig3..fig8 (cdwdata.figures) with their source-data JSON
12. ``summary``         summary.md: growth exponents, validation errors, ML-vs-ED agreement

Everything that defines a run is the preset (``pipelines/presets.py`` or a YAML file); its
values go to ``pipeline.json`` and into every store's attrs (``pipeline_config``). The
command-line options only say where and how to compute (output folder, Dask scheduler,
device, workers), never what.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import presets as _presets  # noqa: E402  (pipelines/ is not a package)

#: Paper values quoted in summary.md (Fig. 2 error std; Fig. 7 growth exponents).
PAPER_SIGMA = {0.5: 0.010, 0.4: 0.011, 0.3: 0.014}
PAPER_ALPHA_T = {0.1: 0.059, 0.2: 0.115, 0.3: 0.155}  # f = 0.5
PAPER_ALPHA_F = 0.059  # T = 0.1, every f
MARKER_DIR = ".pipeline"


class PipelineError(Exception):
    """A stage cannot run as asked; the message says what to do."""


# --- context ------------------------------------------------------------------------------------
@dataclass
class Context:
    """Where and how a preset is run (none of this changes the results)."""

    preset: Any
    out: Path
    scheduler: str | None = None
    device: str = "cpu"
    workers: int | None = None
    use_shipped_models: bool = False
    resume: bool = False
    until: str | None = None  # stop after this stage
    only: tuple[str, ...] = ()  # run only these stages (another process may run the rest)
    progress: bool = False
    command: str = ""
    log: Callable[[str], None] = print
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _clients: dict = field(default_factory=dict)

    # paths
    @property
    def trainset(self) -> Path:
        return self.out / "data" / "trainset.zarr"

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    def model_name(self, f: float, which: str = "T-scan") -> str:
        """The model of filling f in ensemble ``which`` (T-scan or f-scan)."""
        q = self.preset.quench
        if self.use_shipped_models and which == "f-scan" and q.shipped_model_f_scan:
            return q.shipped_model_f_scan
        if self.use_shipped_models and q.shipped_model:
            return q.shipped_model
        return f"holstein-f{float(f):g}"

    def model_names(self) -> list[str]:
        """Every model a run of the preset uses, in order of first use."""
        names = [self.model_name(f, w) for w in ("T-scan", "f-scan") for f in self.preset.fillings]
        return list(dict.fromkeys(names))

    def model_stem(self, f: float) -> Path:
        return self.models_dir / self.model_name(f)

    def forcefield(self, which: str = "T-scan") -> str:
        """Force-field spec of ensemble ``which`` ('{f}' is replaced by the filling)."""
        if self.use_shipped_models:
            q = self.preset.quench
            if which == "f-scan" and q.shipped_model_f_scan:
                return q.shipped_model_f_scan
            return q.shipped_model or "holstein-f{f}"
        return str(self.models_dir.resolve() / "holstein-f{f}")

    def quench(self, which: str) -> Path:
        return self.out / "quench" / f"{which}.zarr"

    def analysis(self, which: str) -> Path:
        return self.out / "analysis" / which

    def correlation(self, which: str) -> Path:
        return self.out / "correlation" / f"{which}.zarr"

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    @property
    def params(self):
        from cdwdata import HolsteinParams

        return HolsteinParams(**self.preset.params)

    # Dask clients, started on first use (a fully skipped rerun starts none)
    def client(self, kind: str = "cpu"):
        """``cpu``: ED and CPU work; ``device``: the ML quenches (GPU workers on cuda)."""
        gpu = kind == "device" and str(self.device).startswith("cuda") and not self.scheduler
        key = "gpu" if gpu else "cpu"
        if key not in self._clients:
            from cdwdata.ensemble import dask_client

            what = self.scheduler or ("local GPU cluster" if gpu else
                                      f"local cluster of {self.workers or 'one worker per core'}"
                                      + (" workers" if self.workers else ""))
            self.log(f"    dask: {what}")
            self._clients[key] = self._stack.enter_context(
                dask_client(self.scheduler, n_workers=None if gpu else self.workers,
                            device="cuda" if gpu else "cpu"))
        return self._clients[key]

    def close(self) -> None:
        self._stack.close()
        self._clients.clear()

    def stage_attrs(self, stage: str) -> dict[str, Any]:
        return {"pipeline_preset": self.preset.name, "pipeline_stage": stage,
                "pipeline_config": json.dumps(self.preset.to_dict(), sort_keys=True),
                "pipeline_command": self.command}

    def tag(self, path: Path, stage: str) -> None:
        """Write the pipeline attrs into the store at ``path``."""
        from cdwdata import store

        store.update_attrs(path, self.stage_attrs(stage))


# --- stages -------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One step of the pipeline.

    ``config`` is what defines the outputs (a rerun with another config is refused);
    ``complete()`` checks the outputs themselves; ``run(overwrite)`` makes them and returns
    a small JSON-able result.
    """

    name: str
    what: str
    config: dict[str, Any]
    outputs: list[Path]
    complete: Callable[[], bool]
    run: Callable[[bool], Any]
    deps: tuple[str, ...] = ()
    disabled: str | None = None  # reason the stage does not apply


def _jsonable(x: Any) -> Any:
    """Plain JSON values (dataclasses become dicts, tuples lists, anything else str)."""
    def default(o):
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        return str(o)

    return json.loads(json.dumps(x, default=default))


def _frames_complete(path: Path) -> bool:
    from cdwdata import store

    if not path.exists():
        return False
    try:
        attrs = store.read_attrs(path)
        done = store.frames_done(path)
    except Exception:  # noqa: BLE001 - a damaged store is simply not complete
        return False
    n_frames = int(attrs["steps"]) // int(attrs["save_every"]) + 1
    return bool((done >= n_frames).all())


def _stores_exist(paths: list[Path]) -> bool:
    return all((p / "zarr.json").exists() for p in paths)


def trainset_stage(ctx: Context) -> Stage:
    p = ctx.preset
    ts = p.trainset

    def config():
        from cdwdata.trainset import TrainsetConfig

        return TrainsetConfig(L=ts.L, fillings=tuple(p.fillings), T=ts.T, n_random=ts.n_random,
                              quench_runs=ts.quench_runs, quench_steps=ts.quench_steps,
                              quench_save_every=ts.quench_save_every, seed=ts.seed,
                              params=ctx.params)

    def complete():
        from cdwdata.trainset import is_complete

        try:
            return ctx.trainset.exists() and is_complete(ctx.trainset)
        except Exception:  # noqa: BLE001
            return False

    def run(overwrite):
        from cdwdata.trainset import generate, quench_store_path

        cfg = config()
        generate(ctx.trainset, cfg, client=ctx.client("cpu"), resume=ctx.resume and not overwrite,
                 overwrite=overwrite, command=ctx.command, progress=ctx.progress)
        ctx.tag(ctx.trainset, "trainset")
        if cfg.quench_runs:
            ctx.tag(quench_store_path(ctx.trainset), "trainset")
        per_f = len(cfg.plan()[0])
        return {"samples_per_filling": per_f, "L": ts.L}

    n = ts.n_random + ts.quench_runs * (ts.quench_steps // ts.quench_save_every)
    return Stage("trainset", f"ED training set, {ts.L}x{ts.L}, {n} snapshots per filling "
                 f"(f = {', '.join(f'{f:g}' for f in p.fillings)})",
                 {"trainset": _jsonable(ts), "fillings": list(p.fillings), "params": p.params},
                 [ctx.trainset], complete, run)


def train_stage(ctx: Context) -> Stage:
    p, tr = ctx.preset, ctx.preset.training

    def complete():
        from cdwdata.ml import modelfile

        return all(modelfile.exists(ctx.model_stem(f)) for f in p.fillings)

    def run(overwrite):
        from cdwdata.ml.train import train

        out = {}
        for f in p.fillings:
            t0 = time.perf_counter()
            res = train(ctx.trainset, f, ctx.model_stem(f), kind=tr.kind, target=tr.target,
                        epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr, schedule=tr.schedule,
                        patience=tr.patience, seed=tr.seed, val_fraction=tr.val_fraction,
                        test_fraction=tr.test_fraction, device=ctx.device, loss=tr.loss,
                        progress=ctx.progress, overwrite=True, name=ctx.model_name(f),
                        threads=p.torch_threads, command=ctx.command)
            test = res["metrics"].get("test", {})
            ctx.log(f"    f={f:g}: {res['epochs_run']} epochs, test RMSE "
                    f"{test.get('rmse', float('nan')):.4g} ({time.perf_counter() - t0:.1f} s)")
            out[f"{f:g}"] = {"epochs_run": res["epochs_run"], "test": test}
        return out

    return Stage("train", f"{tr.kind} models for f = {', '.join(f'{f:g}' for f in p.fillings)}, "
                 f"{tr.epochs} epochs", {"training": _jsonable(tr), "fillings": list(p.fillings)},
                 [Path(str(ctx.model_stem(f)) + ".json") for f in p.fillings], complete, run,
                 deps=("trainset",))


def validate_stage(ctx: Context) -> Stage:
    p = ctx.preset
    vdir = ctx.out / "validation"
    reports = [vdir / f"{ctx.model_name(f)}-validation.json" for f in p.fillings]

    def run(overwrite):
        from cdwdata.ml.validate import validate

        out = {}
        for f in p.fillings:
            rep = validate(ctx.model_stem(f), ctx.trainset, vdir, device=ctx.device)
            ctx.log(f"    f={f:g}: force RMSE {rep['force']['rmse']:.4g}, sigma "
                    f"{rep['force']['std']:.4g} on {rep['n_snapshots']} held-out snapshots")
            out[f"{f:g}"] = {"force": rep["force"], "density": rep.get("density")}
        return out

    return Stage("validate", "force errors on held-out ED quench snapshots (Fig. 2)",
                 {"fillings": list(p.fillings)}, reports,
                 lambda: all(r.exists() for r in reports), run, deps=("train",))


def quench_stage(ctx: Context, which: str) -> Stage:
    p, q = ctx.preset, ctx.preset.quench
    if which == "T-scan":
        temps, fills, seed = tuple(q.T_scan), (q.f_fixed,), q.seed
    else:
        temps, fills, seed = (q.T_fixed,), tuple(q.f_scan), q.seed + 1
    path = ctx.quench(which)

    def config():
        from cdwdata.quench import QuenchConfig

        return QuenchConfig(L=q.L, temperatures=temps, fillings=fills, runs=q.runs,
                            steps=q.steps, save_every=q.save_every, seed=seed,
                            params=ctx.params, forcefield=ctx.forcefield(which),
                            frame_vars=("Q", "n"), frame_dtype=q.frame_dtype,
                            device=ctx.device, compute_dtype=q.compute_dtype,
                            precision=q.precision)

    def run(overwrite):
        from cdwdata.ensemble import run_ensemble

        run_ensemble(config(), path, client=ctx.client("device"),
                     resume=ctx.resume and not overwrite, overwrite=overwrite,
                     command=ctx.command, progress=ctx.progress)
        ctx.tag(path, f"quench-{which}")
        return {"cells": len(temps) * len(fills), "runs": q.runs}

    models = "shipped" if ctx.use_shipped_models else "trained"
    return Stage(f"quench-{which}",
                 f"ML-Langevin ensemble {'A' if which == 'T-scan' else 'B'}: {q.L}x{q.L}, "
                 f"T = {', '.join(f'{t:g}' for t in temps)}, f = "
                 f"{', '.join(f'{f:g}' for f in fills)}, {q.runs} runs x {q.steps} steps",
                 {"quench": _ensemble_quench(ctx, which), "temperatures": list(temps),
                  "fillings": list(fills),
                  "seed": seed, "models": models, "params": p.params},
                 [path], lambda: _frames_complete(path), run, deps=("train",))


def _ensemble_quench(ctx: Context, which: str) -> dict[str, Any]:
    """The quench settings of one ensemble, with its own model as ``shipped_model``."""
    q = _jsonable(ctx.preset.quench)
    q.pop("shipped_model_f_scan", None)
    if which == "f-scan" and ctx.preset.quench.shipped_model_f_scan:
        q["shipped_model"] = ctx.preset.quench.shipped_model_f_scan
    return q


def analyze_stage(ctx: Context, which: str) -> Stage:
    a = ctx.preset.analysis
    out = ctx.analysis(which)
    kinds = ("order-parameter", "structure-factor", "domain-size", "growth-exponents")
    stores = [out / f"{k}.zarr" for k in kinds]

    def run(overwrite):
        from cdwdata.summaries import AnalysisSettings, analyze_store

        dt = ctx.params.dt
        window = (a.fit_steps[0] * dt, a.fit_steps[1] * dt)
        settings = AnalysisSettings(window=window,
                                    porod_qL=tuple(a.porod_qL) if a.porod_qL else None,
                                    large_q=tuple(a.large_q), n_boot=a.n_boot, seed=a.seed)
        written = analyze_store(ctx.quench(which), out, settings, overwrite=True,
                                command=ctx.command)
        for path in written.values():
            ctx.tag(Path(path), f"analyze-{which}")
        ctx.log(f"    fit window: steps {a.fit_steps[0]}..{a.fit_steps[1]} "
                f"(t = {window[0]:g}..{window[1]:g})")
        return {"window": list(window)}

    return Stage(f"analyze-{which}", f"cdw analyze of ensemble {which}: phi, S, L(t), alpha "
                 f"(fit over steps {a.fit_steps[0]}..{a.fit_steps[1]})",
                 {"analysis": _jsonable(a)}, stores, lambda: _stores_exist(stores), run,
                 deps=(f"quench-{which}",))


def correlation_stage(ctx: Context, which: str) -> Stage:
    c = ctx.preset.correlation
    path = ctx.correlation(which)
    ed = which == "ed"

    def run(overwrite):
        from cdwdata.ensemble import run_ensemble
        from cdwdata.quench import QuenchConfig

        if ed and c.ed_store:
            src = reuse_ed_store(Path(c.ed_store), path, c, ctx.params)
            ctx.tag(path, f"correlation-{which}")
            return {"runs": c.runs, "copied_from": str(src)}
        cfg = QuenchConfig(L=c.L, temperatures=(c.T,), fillings=tuple(c.fillings), runs=c.runs,
                           steps=c.steps, save_every=c.save_every, seed=c.seed,
                           params=ctx.params, forcefield="ed" if ed else ctx.forcefield(),
                           frame_vars=("Q", "n"), frame_dtype="float64", device=ctx.device,
                           compute_dtype="float64" if ed else ctx.preset.quench.compute_dtype,
                           precision="float32" if ed else ctx.preset.quench.precision)
        # ED on CPU workers unless the device is a GPU (batched ED there)
        run_ensemble(cfg, path, client=ctx.client("device" if not ed or
                                                  str(ctx.device).startswith("cuda")
                                                  else "cpu"),
                     resume=ctx.resume and not overwrite, overwrite=overwrite,
                     command=ctx.command, progress=ctx.progress)
        ctx.tag(path, f"correlation-{which}")
        return {"runs": c.runs}

    cfg = {"correlation": _jsonable(c), "params": ctx.preset.params}
    if not ed:
        cfg["models"] = "shipped" if ctx.use_shipped_models else "trained"
    copied = f" (copied from {c.ed_store})" if ed and c.ed_store else ""
    return Stage(f"correlation-{which}",
                 f"{'ED' if ed else 'ML'}-Langevin quenches for C(r,t): {c.L}x{c.L}, T = {c.T:g}, "
                 f"f = {', '.join(f'{f:g}' for f in c.fillings)}, {c.runs} runs x {c.steps} "
                 f"steps{copied}",
                 cfg, [path], lambda: _frames_complete(path), run,
                 deps=() if ed else ("train",))


def reuse_ed_store(src: Path, dest: Path, c, params) -> Path:
    """Copy the complete ED-Langevin trajectory store ``src`` to ``dest`` after checking that
    it was made with exactly the settings of the correlation section ``c`` (else
    PipelineError naming the differences). Returns the resolved source path."""
    import shutil

    from cdwdata import HolsteinParams, store

    if not (src / "zarr.json").exists():
        raise PipelineError(f"correlation.ed_store={str(src)!r}: no zarr store there")
    attrs = store.read_attrs(src)
    want = {"kind": "trajectory", "forcefield": "ed", "L": c.L, "steps": c.steps,
            "save_every": c.save_every, "seed": c.seed, "runs": c.runs,
            "temperatures": [float(c.T)], "fillings": [float(f) for f in c.fillings]}
    got = {k: attrs.get(k) for k in want}
    bad = [f"{k}: {got[k]!r} (need {want[k]!r})" for k in want if got[k] != want[k]]
    try:
        if not HolsteinParams.from_dict(attrs).matches(params):
            bad.append(f"params: {attrs.get('params_json')} (need {params.to_dict()})")
    except Exception as err:  # noqa: BLE001 - any unreadable params is a mismatch
        bad.append(f"params: {err}")
    if not {"Q", "n"} <= set(attrs.get("frame_vars", ())):
        bad.append(f"frame_vars: {attrs.get('frame_vars')} (need Q and n)")
    if bad:
        raise PipelineError(f"correlation.ed_store={str(src)!r} was not made with this "
                            f"preset's correlation settings: {'; '.join(bad)}")
    if not _frames_complete(src):
        raise PipelineError(f"correlation.ed_store={str(src)!r} is not complete (some runs "
                            "lack frames); finish it first (e.g. cdw ed-dataset --resume)")
    tmp = dest.with_name(f".{dest.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return src.resolve()


def catalog_stage(ctx: Context) -> Stage:
    yaml_path = ctx.out / "catalog.yaml"

    def sources() -> list[Path]:
        paths = [ctx.out / d for d in ("data", "models", "quench", "analysis", "correlation")]
        paths = [d for d in paths if d.exists()]
        if ctx.use_shipped_models:
            from cdwdata.ml.forcefield import model_file

            paths += sorted({Path(f"{model_file(name)}.json") for name in ctx.model_names()})
        return paths

    def run(overwrite):
        from cdwdata import catalog

        cat = catalog.build(sources(), yaml_path, name=f"reproduce-{ctx.preset.name}",
                            description=f"cdwdata paper reproduction, preset "
                            f"{ctx.preset.name!r}: {ctx.preset.description}")
        kinds = sorted({e.metadata["kind"] for e in cat.entries.values()})
        ctx.log(f"    {len(cat.entries)} entries, kinds: {', '.join(kinds)}")
        return {"entries": len(cat.entries), "kinds": kinds}

    return Stage("catalog", "intake catalog of every store and model", {}, [yaml_path],
                 yaml_path.exists, run,
                 deps=("trainset", "train", "quench-T-scan", "quench-f-scan", "analyze-T-scan",
                       "analyze-f-scan", "correlation-ed", "correlation-ml"))


FIGURES = ("fig3-correlations", "fig4-phi-snapshots", "fig5-structure-factor", "fig6-collapse",
           "fig7-growth", "fig8-density")


def figures_stage(ctx: Context) -> Stage:
    q, c = ctx.preset.quench, ctx.preset.correlation
    pngs = {name: ctx.figures / f"{name}.png" for name in FIGURES}

    def run(overwrite):
        from cdwdata import figures

        A, B = ctx.analysis("T-scan"), ctx.analysis("f-scan")
        ctx.figures.mkdir(parents=True, exist_ok=True)
        figures.fig3_correlations(ctx.correlation("ml"), ctx.correlation("ed"),
                                  list(c.show_steps), pngs["fig3-correlations"])
        figures.fig4_snapshots(A / "order-parameter.zarr", pngs["fig4-phi-snapshots"],
                               T=q.T_fixed if q.T_fixed in q.T_scan else None, f=q.f_fixed)
        figures.fig5_structure_factor(A / "structure-factor.zarr",
                                      pngs["fig5-structure-factor"],
                                      T=q.T_fixed if q.T_fixed in q.T_scan else None)
        shown = [T for T in (min(q.T_scan), max(q.T_scan))]
        figures.fig6_collapse(A / "structure-factor.zarr", A / "domain-size.zarr",
                              pngs["fig6-collapse"], temperatures=sorted(set(shown)))
        figures.fig7_growth([A / "domain-size.zarr", B / "domain-size.zarr"],
                            [A / "growth-exponents.zarr", B / "growth-exponents.zarr"],
                            pngs["fig7-growth"],
                            titles=[f"(a) f = {q.f_fixed:g}", f"(b) T = {q.T_fixed:g}"])
        figures.fig8_density(ctx.quench("f-scan"), pngs["fig8-density"])
        return {"figures": [str(p.relative_to(ctx.out)) for p in pngs.values()]}

    return Stage("figures", "paper Figs. 3-8 (cdwdata.figures)",
                 {"figures": list(FIGURES)}, list(pngs.values()),
                 lambda: all(p.exists() for p in pngs.values()), run,
                 deps=("analyze-T-scan", "analyze-f-scan", "correlation-ed", "correlation-ml"))


def summary_stage(ctx: Context, timings: Callable[[], list[dict]]) -> Stage:
    path = ctx.out / "summary.md"

    def run(overwrite):
        path.write_text(summary_markdown(ctx, timings()))
        return {"summary": "summary.md"}

    return Stage("summary", "summary.md (growth exponents, validation errors)", {}, [path],
                 path.exists, run, deps=("validate", "figures", "catalog"))


def build_stages(ctx: Context, timings: Callable[[], list[dict]]) -> list[Stage]:
    stages = [trainset_stage(ctx), train_stage(ctx), validate_stage(ctx),
              quench_stage(ctx, "T-scan"), quench_stage(ctx, "f-scan"),
              analyze_stage(ctx, "T-scan"), analyze_stage(ctx, "f-scan"),
              correlation_stage(ctx, "ed"), correlation_stage(ctx, "ml"),
              catalog_stage(ctx), figures_stage(ctx), summary_stage(ctx, timings)]
    if ctx.use_shipped_models:
        for s in stages[:3]:
            s.disabled = "--use-shipped-models"
    return stages


# --- summary -------------------------------------------------------------------------------------
def _validation_rows(ctx: Context) -> list[str]:
    rows = ["| f | model | force RMSE | MAE | Gaussian-fit sigma (paper's sigma) | sites in the "
            "tails (> 5 sigma) | density RMSE | snapshots |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def errs(e: dict) -> str:
        # sigma_fit: width of a Gaussian fitted to the error histogram (older reports: std)
        nan = float("nan")
        return (f"{e.get('rmse', nan):.4f} | {e.get('mae', nan):.4f} | "
                f"{e.get('sigma_fit', e.get('std', nan)):.4f}")

    for f in ctx.preset.fillings:
        paper = PAPER_SIGMA.get(round(f, 6))
        paper_s = f"{paper:.3f}" if paper is not None else "-"
        if ctx.use_shipped_models:
            from cdwdata import ml

            card = ml.load_model(ctx.model_name(f)).card
            test = (card.get("metrics") or {}).get("test") or {}
            rows.append(f"| {f:g} | {ctx.model_name(f)} (shipped; card test split) | "
                        f"{errs(test)} ({paper_s}) | {_pct(test.get('tail_fraction'))} | - | "
                        f"{test.get('n_snapshots', '-')} |")
            continue
        rep_path = ctx.out / "validation" / f"{ctx.model_name(f)}-validation.json"
        rep = json.loads(rep_path.read_text())
        dens = rep.get("density") or {}
        rows.append(f"| {f:g} | {rep['model']} | {errs(rep['force'])} ({paper_s}) | "
                    f"{_pct(rep['force'].get('tail_fraction'))} | "
                    f"{dens.get('rmse', float('nan')):.4f} | {rep['n_snapshots']} |")
    return rows


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _alpha_rows(ctx: Context) -> list[str]:
    from cdwdata import store

    rows = ["| ensemble | T | f | alpha | alpha_err | paper alpha |",
            "| --- | --- | --- | --- | --- | --- |"]
    for which in ("T-scan", "f-scan"):
        g = store.open_dataset(ctx.analysis(which) / "growth-exponents.zarr").load()
        for T in g["T"].values:
            for f in g["f"].values:
                cell = g.sel(T=T, f=f)
                paper = PAPER_ALPHA_T.get(round(float(T), 6)) if which == "T-scan" \
                    else PAPER_ALPHA_F
                rows.append(f"| {which} | {T:g} | {f:g} | {float(cell['alpha']):.3f} | "
                            f"{float(cell['alpha_err']):.3f} | "
                            f"{'-' if paper is None else f'{paper:.3f}'} |")
    return rows


def summary_markdown(ctx: Context, stages: list[dict]) -> str:
    from cdwdata import store
    from cdwdata.figures import read_sidecar

    p, q, a, c = ctx.preset, ctx.preset.quench, ctx.preset.analysis, ctx.preset.correlation
    growth = store.read_attrs(ctx.analysis("T-scan") / "growth-exponents.zarr")
    w = growth.get("window", [float("nan")] * 2)
    lines = [f"# Paper reproduction: preset `{p.name}`", "",
             f"{p.description}.", "",
             f"Command: `{ctx.command}`", "",
             f"Model parameters: {ctx.params.to_dict()}; "
             f"ML force fields: {'shipped models' if ctx.use_shipped_models else 'trained here'} "
             f"(T-scan `{ctx.forcefield('T-scan')}`, f-scan `{ctx.forcefield('f-scan')}`).",
             "",
             "## Growth exponents L(t) ~ t^alpha (paper Fig. 7)", "",
             f"Quenches of {q.L}x{q.L} lattices, {q.runs} runs per cell, {q.steps} steps "
             f"(dt = {ctx.params.dt:g}). Fit window (late times): steps {a.fit_steps[0]}.."
             f"{a.fit_steps[1]}, i.e. t = {w[0]:g}..{w[1]:g}; error = bootstrap over runs "
             f"({a.n_boot} resamples). Ensemble B uses seed {q.seed + 1}, so its "
             f"(T = {q.T_fixed:g}, f = {q.f_fixed:g}) cell is independent of A's.", ""]
    lines += _alpha_rows(ctx)
    lines += ["", "## ML force-field validation (paper Fig. 2)", "",
              "Errors of the ML total force (and of the density it implies) on held-out ED "
              "quench snapshots; plots in `validation/`.", ""]
    lines += _validation_rows(ctx)
    fig3 = ctx.figures / "fig3-correlations.png"
    if fig3.exists():
        d = read_sidecar(fig3)
        lines += ["", "## ML vs ED lattice correlations C(r, t) (paper Fig. 3)", "",
                  f"{c.L}x{c.L}, T = {c.T:g}, {c.runs} runs each, same seeds (same hot starts "
                  "and noise). `rms_diff` = RMS of C_ML - C_ED over r <= L/2; `sem` = mean "
                  "combined standard error.", "",
                  "| f | step | rms_diff | sem | C(0) ML | C(0) ED |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for panel in d["panels"]:
            for cur in panel["curves"]:
                lines.append(f"| {panel['f']:g} | {cur['step']} | {cur['rms_diff']:.4g} | "
                             f"{cur['mean_sem']:.4g} | {cur['ml_mean'][0]:.4g} | "
                             f"{cur['ed_mean'][0]:.4g} |")
    fig6 = ctx.figures / "fig6-collapse.png"
    if fig6.exists():
        d = read_sidecar(fig6)
        lines += ["", "## Scaling collapse (paper Fig. 6)", ""]
        for panel in d["panels"]:
            slope = panel.get("porod_slope")
            lines.append(f"- T = {panel['T']:g}: collapse spread {panel['collapse_msd']:.3g}; "
                         f"Porod slope at the last frame "
                         f"{'n/a' if slope is None else f'{slope:.2f}'} (paper: -3), large-q "
                         f"slope {_fmt(panel.get('large_q_slope'))} (paper: about -2)")
    lines += ["", "## Figures", ""]
    lines += [f"- `figures/{name}.png` (numbers drawn: `figures/{name}.json`)"
              for name in FIGURES]
    lines += ["- `validation/*-parity.png`, `validation/*-error-hist.png` (Fig. 2)", "",
              "Catalog of every store and model: `catalog.yaml` "
              "(`cdw catalog list --catalog catalog.yaml`).", "",
              "## Stage timings", "", "| stage | status | time (s) |", "| --- | --- | --- |"]
    for s in stages:
        if s["status"] == "skipped" and s.get("original_time_s") is not None:
            # made by an earlier invocation: its own time, not the seconds spent skipping it
            lines.append(f"| {s['name']} | done earlier | {s['original_time_s']:.1f} |")
        else:
            lines.append(f"| {s['name']} | {s['status']} | {s.get('time_s', 0):.1f} |")
    made = [s.get("original_time_s") if s["status"] == "skipped" else s.get("time_s")
            for s in stages]
    lines += ["", f"Total compute time of all stages: {sum(t or 0.0 for t in made):.0f} s."]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# --- runner -------------------------------------------------------------------------------------
def _marker(ctx: Context, name: str) -> Path:
    return ctx.out / MARKER_DIR / f"{name}.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _environment() -> dict[str, Any]:
    import torch

    from cdwdata._version import __version__

    return {"cdwdata_version": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "host": platform.node()}


def plan(ctx: Context) -> list[dict[str, Any]]:
    """What :func:`run_pipeline` would do, stage by stage, without doing anything.

    Each entry has ``name``, ``what`` and ``state``: ``complete`` (would be skipped),
    ``to run``, ``disabled: <reason>`` or ``refused: config changed``.
    """
    out = []
    for stage in build_stages(ctx, list):
        marker = _marker(ctx, stage.name)
        done = json.loads(marker.read_text()) if marker.exists() else None
        if ctx.only and stage.name not in ctx.only:
            state = "not selected (--only)"
        elif stage.disabled:
            state = f"disabled: {stage.disabled}"
        elif done is not None and done.get("config") != _jsonable(stage.config):
            state = "refused: config changed"
        elif done is not None and stage.complete():
            state = "complete"
        else:
            state = "to run"
        out.append({"name": stage.name, "what": stage.what, "state": state,
                    "outputs": [_rel(o, ctx.out) for o in stage.outputs]})
    return out


def run_pipeline(ctx: Context) -> dict[str, Any]:
    """Run (or skip) every stage of ``ctx.preset``; return the pipeline record."""
    import torch

    from cdwdata.ensemble import blas_threads

    threads_before = torch.get_num_threads(), blas_threads()
    torch.set_num_threads(int(ctx.preset.torch_threads))  # a loaded machine: 1 is fastest
    blas_threads(int(ctx.preset.torch_threads))
    ctx.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    record: dict[str, Any] = {
        "preset": ctx.preset.to_dict(), "command": ctx.command, "out": str(ctx.out.resolve()),
        "options": {"scheduler": ctx.scheduler, "device": ctx.device, "workers": ctx.workers,
                    "use_shipped_models": ctx.use_shipped_models, "resume": ctx.resume},
        "environment": _environment(), "started": _now(), "stages": []}
    if ctx.use_shipped_models:
        check_shipped_models(ctx)
    stages = build_stages(ctx, lambda: record["stages"])
    names = [s.name for s in stages]
    for opt, wanted in (("--until", [ctx.until] if ctx.until else []), ("--only", ctx.only)):
        for name in wanted:
            if name not in names:
                raise PipelineError(f"{opt} {name!r} is not a stage: use one of "
                                    f"{', '.join(names)}")
    ran: set[str] = set()
    ctx.log(f"cdwdata paper reproduction, preset {ctx.preset.name!r} -> {ctx.out}")
    try:
        for i, stage in enumerate(stages, 1):
            if i > 1 and stages[i - 2].name == ctx.until:
                ctx.log(f"stopping after {ctx.until} (--until)")
                record["stopped_after"] = ctx.until
                break
            head = f"[{i:2d}/{len(stages)}] {stage.name}"
            entry: dict[str, Any] = {"name": stage.name, "what": stage.what,
                                     "config": stage.config,
                                     "outputs": [_rel(o, ctx.out) for o in stage.outputs]}
            if ctx.only and stage.name not in ctx.only:
                entry.update(status="skipped", reason="--only", time_s=0.0)
                record["stages"].append(entry)
                continue
            if stage.disabled:
                ctx.log(f"{head}: skipped ({stage.disabled})")
                entry.update(status="skipped", reason=stage.disabled, time_s=0.0)
                record["stages"].append(entry)
                continue
            marker = _marker(ctx, stage.name)
            done = json.loads(marker.read_text()) if marker.exists() else None
            if done is not None and done.get("config") != _jsonable(stage.config):
                diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in
                                 _diff(done.get("config"), _jsonable(stage.config)))
                raise PipelineError(
                    f"stage {stage.name}: {_rel(stage.outputs[0], ctx.out)} in {ctx.out} was "
                    f"made with another configuration (preset {done.get('preset')!r}; {diff}); "
                    f"use another --out, or delete those outputs and {_rel(marker, ctx.out)}")
            # outputs completed earlier from inputs that were remade in this run are stale
            stale = sorted(set(stage.deps) & ran) if done is not None else []
            t0 = time.perf_counter()
            if done is not None and not stale and stage.complete():
                ctx.log(f"{head}: skipped (complete; took {done.get('time_s', 0):.1f} s "
                        f"when made)")
                entry.update(status="skipped", reason="complete",
                             time_s=time.perf_counter() - t0,
                             original_time_s=done.get("time_s"), result=done.get("result"))
                record["stages"].append(entry)
                continue
            why = f" (inputs changed: {', '.join(stale)})" if stale else ""
            ctx.log(f"{head}: {stage.what}{why}")
            result = stage.run(bool(stale))
            dt = time.perf_counter() - t0
            ran.add(stage.name)
            entry.update(status="ran", time_s=dt, result=_jsonable(result))
            record["stages"].append(entry)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"stage": stage.name, "preset": ctx.preset.name,
                                          "config": _jsonable(stage.config), "time_s": dt,
                                          "finished": _now(), "result": _jsonable(result)},
                                         indent=1) + "\n")
            ctx.log(f"{' ' * len(head)}  done in {dt:.1f} s")
            _write_record(ctx, record, t_start)
    except BaseException as err:
        record["error"] = f"{type(err).__name__}: {err}"
        _write_record(ctx, record, t_start)
        raise
    finally:
        ctx.close()
        torch.set_num_threads(threads_before[0])
        if threads_before[1] is not None:
            blas_threads(threads_before[1])
    record["finished"] = _now()
    _write_record(ctx, record, t_start)
    if "summary" in ran:  # the summary's timing table includes itself only from here on
        (ctx.out / "summary.md").write_text(summary_markdown(ctx, record["stages"]))
    if "stopped_after" in record:
        ctx.log(f"stopped after {record['stopped_after']} in {record['wall_s']:.1f} s; run "
                "again without --until to continue")
    else:
        ctx.log(f"all stages done in {record['wall_s']:.1f} s: {ctx.out / 'summary.md'}")
    return record


def _write_record(ctx: Context, record: dict[str, Any], t_start: float) -> None:
    record["wall_s"] = time.perf_counter() - t_start
    # a run of selected stages keeps its own record, so two processes never share one
    name = "pipeline" + "".join(f".{s}" for s in ctx.only) + ".json"
    tmp = ctx.out / f"{name}.tmp"
    tmp.write_text(json.dumps(_jsonable(record), indent=1) + "\n")
    os.replace(tmp, ctx.out / name)


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, old, new) of every leaf where two configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def check_shipped_models(ctx: Context) -> None:
    """Raise PipelineError unless a shipped model exists for every filling of the preset."""
    from cdwdata.ml.forcefield import MODELS_DIR, list_models

    shipped = list_models()
    missing = [name for name in ctx.model_names() if name not in shipped]
    if missing:
        raise PipelineError(
            f"--use-shipped-models: no shipped model {', '.join(missing)} in {MODELS_DIR} "
            f"(shipped: {', '.join(shipped) or 'none yet'}); run without "
            "--use-shipped-models to make the ED training sets and train the models here")


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reproduce.py", description=__doc__.split("\n\n")[0],
        epilog="Presets: " + "; ".join(f"{k}: {v.description} ({v.expected_time})"
                                       for k, v in _presets.PRESETS.items()))
    p.add_argument("--preset", default="small",
                   help="small | full | a YAML preset file (default small)")
    p.add_argument("--out", default=None,
                   help="output folder (default runs/reproduce-<preset>)")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler (default: local clusters)")
    p.add_argument("--device", default="cpu",
                   help="torch device for training and the Langevin hot loop: cpu | cuda")
    p.add_argument("--workers", type=int, default=None,
                   help="workers of the local CPU cluster (default: one per core)")
    p.add_argument("--use-shipped-models", action="store_true",
                   help="skip the training set, training and validation; use the models "
                   "shipped with cdwdata (holstein-f0.5, -f0.4, -f0.3)")
    p.add_argument("--resume", action="store_true",
                   help="continue partially written stores (passed through to every store)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--until", default=None, metavar="STAGE",
                   help="stop after this stage (a later run continues from there)")
    p.add_argument("--only", nargs="+", default=(), metavar="STAGE",
                   help="run only these stages, for example quench-f-scan in a second "
                   "process while the first runs quench-T-scan (its record goes to "
                   "pipeline.STAGE.json)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the stages and whether each would run or be skipped; do nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preset = _presets.load(args.preset)
    except ValueError as err:
        print(f"reproduce.py: {err}", file=sys.stderr)
        return 2
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        print(f"reproduce.py: --device {args.device!r}: use cpu or cuda", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / f"reproduce-{preset.name}")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python pipelines/reproduce.py " + " ".join(shlex.quote(str(a)) for a in argv_list)
    ctx = Context(preset=preset, out=out, scheduler=args.scheduler, device=args.device,
                  workers=args.workers, use_shipped_models=args.use_shipped_models,
                  resume=args.resume, progress=args.progress, command=command,
                  until=args.until, only=tuple(args.only))
    from cdwdata.errors import CdwError, StoreError

    if args.dry_run:
        print(f"preset {preset.name!r} ({preset.expected_time}) -> {out}")
        for i, st in enumerate(plan(ctx), 1):
            print(f"[{i:2d}] {st['name']:15s} {st['state']:24s} {st['what']}")
        return 0
    try:
        run_pipeline(ctx)
    except PipelineError as err:
        print(f"reproduce.py: {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"reproduce.py: {err}\n(reproduce.py: rerun with --resume to continue partial "
              f"stores, or use another --out)", file=sys.stderr)
        return 2
    except CdwError as err:
        print(f"reproduce.py: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Context", "PipelineError", "Stage", "main", "plan", "run_pipeline"]

if __name__ == "__main__":
    sys.exit(main())
