"""``cdw validate``: error statistics, parity plot and error histogram of an ML model; with
``--kpm STORE``, the ML densities and forces of a trajectory store of any size against KPM at
the model's own solved chemical potential."""

from __future__ import annotations

from cdwdata.ml.options import PRECISIONS


def configure(p) -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="shipped model name or model path (with --kpm only together with "
                        "--from-model: that model instead of the store's, at the stored mu)")
    p.add_argument("--data", nargs="+", default=None,
                   help="ED store(s) (training-set layout) holding quench snapshots; for a "
                        "model trained on several stores, the same list")
    p.add_argument("--heldout", nargs="+", default=None, metavar="STORE",
                   help="ED-Langevin trajectory store(s) the model never saw (cdw quench "
                        "--model ed): forces at every frame in --steps, per filling")
    p.add_argument("--kpm", default=None, metavar="STORE",
                   help="ML trajectory store (any L) to check against KPM densities at the "
                        "model's own solved mu, frame by frame")
    p.add_argument("--steps", type=int, nargs=2, default=None,
                   help="step window (--heldout default 100 2000, t = 5..100; --kpm default "
                        "every frame after the hot start)")
    p.add_argument("--at", type=int, nargs="+", default=None, metavar="STEP",
                   help="with --kpm: exactly these steps (e.g. 2000 10000 20000 for t = 100, "
                        "500, 1000)")
    p.add_argument("--every", type=int, default=1, help="every N-th frame of the window")
    p.add_argument("--runs", type=int, nargs="+", default=None,
                   help="only these runs (default all written frames)")
    p.add_argument("--T", type=float, nargs="+", default=None, help="with --kpm: only these T")
    p.add_argument("--f", type=float, nargs="+", default=None, help="with --kpm: only these f")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="with --kpm: KPM tolerance on the densities (default 1e-3)")
    p.add_argument("--distance", type=int, default=None,
                   help="with --kpm: fixed KPM probing distance (default: a-posteriori search)")
    p.add_argument("--from-model", action="store_true",
                   help="with --kpm: re-evaluate the store's model (or MODEL) at the stored mu "
                        "instead of reading the stored densities")
    p.add_argument("--overwrite", action="store_true",
                   help="with --kpm --out: replace an existing report store")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="with --heldout: hidden-layer precision of a grand-canonical model")
    p.add_argument("--out", default=None,
                   help="folder for the report and PNGs (default: next to the model card); "
                        "with --kpm: zarr store for the report Dataset (default: print only)")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL",
                   help="second model (e.g. the energy variant) evaluated on the same snapshots")
    p.add_argument("--all-quench", action="store_true",
                   help="use every quench snapshot even if the store is the training set")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-plots", action="store_true", help="write only the JSON report")


def run(args) -> int:
    from cdwdata.errors import ParameterError

    if args.kpm:
        return _run_kpm(args)
    if args.model is None:
        raise ParameterError("give a MODEL (or --kpm STORE, whose model is named in the store)")
    if args.heldout:
        return _run_heldout(args)
    if not args.data:
        raise ParameterError("give --data (training-set stores) or --heldout (ED trajectories)")
    from cdwdata.ml.validate import validate

    rep = validate(args.model, args.data, out_dir=args.out, compare=args.compare,
                   all_quench=args.all_quench, device=args.device, plots=not args.no_plots)
    print(f"{rep['model']}: {rep['n_snapshots']} snapshots ({rep['selection']})")
    rows = [rep] + ([rep["compare"]] if "compare" in rep else [])
    for r in rows:
        print(f"  {r['model']:24s} {_line(r['force'])}")
        if r.get("force_late", {}).get("n_sites"):
            lo, hi = r["late_steps"]
            print(f"  {'':24s} steps {lo}..{hi}: {_line(r['force_late'])}")
        for part in r.get("by_store", []):
            if part.get("force"):
                print(f"  {'':24s} store {part['path']} (quenches driven by "
                      f"{part['quench_forcefield']}, {part['n_snapshots']} snapshots): "
                      f"{_line(part['force'])}")
    for key, path in rep["files"].items():
        print(f"wrote {key}: {path}")
    return 0


def _line(e: dict) -> str:
    return (f"force RMSE {e['rmse']:.4g}  MAE {e['mae']:.4g}  max {e['max_abs']:.4g}  "
            f"sigma_fit {e['sigma_fit']:.4g}  tails {100 * e['tail_fraction']:.2f}%")


def _run_heldout(args) -> int:
    import json
    from pathlib import Path

    from cdwdata.ml import heldout
    from cdwdata.ml.modelfile import atomic_write, now

    reports = []
    for path in args.heldout:
        steps = args.steps or [100, 2000]
        rep = heldout.evaluate(args.model, path, step_range=tuple(steps), every=args.every,
                               device=args.device, runs=args.runs, precision=args.precision,
                               keep_forces=not args.no_plots)
        reports.append(rep)
        print(f"{rep['model']} on {path}, steps {steps[0]}..{steps[1]}:")
        print("| f | frames | force RMSE | RMSE 0.05<n<0.95 | share of such sites | MAE | "
              "sigma_fit | worst site | sites with dn/dmu < 0 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for f, e in rep["by_f"].items():
            w = e["worst_site"]
            print(f"| {f} | {e['n_frames']} | {e['rmse']:.4f} | {e['rmse_fractional']:.4f} | "
                  f"{100 * e['fraction_fractional']:.2f}% | {e['mae']:.4f} | "
                  f"{e['sigma_fit']:.4f} | {w['error']:+.3f} (run {w['run']}, step "
                  f"{w['step']}, x {w['x']}, y {w['y']}) | "
                  f"{_pct(e.get('dn_dmu_negative_fraction'))} |")
    tag = "" if args.precision in (None, "float32") else f"-{args.precision}"
    out = Path(args.out or ".") / f"{Path(args.model).name}{tag}-heldout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"report": "held-out ED-Langevin quenches", "model": reports[0]["model"],
           "created": now(), "stores": [
               {k: v for k, v in r.items() if k not in ("frames", "forces")} for r in reports]}
    atomic_write(out, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"wrote {out}")
    if not args.no_plots:  # paper Fig. 2: parity plot and error histogram per filling
        from cdwdata.ml.validate import force_plots

        entries = [(f"f = {key}" + (f" ({Path(r['store']).name})" if len(reports) > 1 else ""),
                    F_ex, F_ml) for r in reports for key, (F_ex, F_ml) in r["forces"].items()]
        stem = out.with_suffix("")
        parity, hist = Path(f"{stem}-parity.png"), Path(f"{stem}-errors.png")
        force_plots(entries, parity, hist)
        print(f"wrote {parity} and {hist}")
    return 0


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def _run_kpm(args) -> int:
    import sys

    from cdwdata import store
    from cdwdata.ml import kpmcheck

    if args.out and store.exists(args.out) and not args.overwrite:
        from cdwdata.errors import StoreError

        raise StoreError(f"{args.out} already exists: pass --overwrite to replace it")
    res = kpmcheck.check_store(
        args.kpm, steps=args.at, window=tuple(args.steps) if args.steps else None,
        every=args.every, runs=args.runs, temperatures=args.T, fillings=args.f, tol=args.tol,
        distance=args.distance, source="model" if args.from_model else "store",
        model=args.model,
        device=None if args.device == "cpu" else args.device,
        backend="torch" if args.device != "cpu" else None,
        progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"ML ({res.attrs['model'] or 'model'}) vs KPM (tol {args.tol:g}) on {args.kpm}:")
    print(kpmcheck.table(res))
    print(kpmcheck.summary(res))
    if args.out:
        from cdwdata.commands import command_line

        res.attrs["command"] = command_line()
        store.save_dataset(res, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0
