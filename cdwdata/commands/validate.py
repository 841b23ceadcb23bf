"""``cdw validate``: error statistics, parity plot and error histogram of an ML model."""

from __future__ import annotations

from cdwdata.ml.options import PRECISIONS


def configure(p) -> None:
    p.add_argument("model", metavar="MODEL", help="shipped model name or model path")
    p.add_argument("--data", nargs="+", default=None,
                   help="ED store(s) (training-set layout) holding quench snapshots; for a "
                        "model trained on several stores, the same list")
    p.add_argument("--heldout", nargs="+", default=None, metavar="STORE",
                   help="ED-Langevin trajectory store(s) the model never saw (cdw quench "
                        "--model ed): forces at every frame in --steps, per filling")
    p.add_argument("--steps", type=int, nargs=2, default=[100, 2000],
                   help="with --heldout: step window (default 100 2000, t = 5..100)")
    p.add_argument("--every", type=int, default=1, help="with --heldout: every N-th frame")
    p.add_argument("--runs", type=int, nargs="+", default=None,
                   help="with --heldout: only these runs (default all written frames)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="with --heldout: hidden-layer precision of a grand-canonical model")
    p.add_argument("--out", default=None,
                   help="folder for the report and PNGs (default: next to the model card)")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL",
                   help="second model (e.g. the energy variant) evaluated on the same snapshots")
    p.add_argument("--all-quench", action="store_true",
                   help="use every quench snapshot even if the store is the training set")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-plots", action="store_true", help="write only the JSON report")


def run(args) -> int:
    if args.heldout:
        return _run_heldout(args)
    if not args.data:
        from cdwdata.errors import ParameterError

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
        rep = heldout.evaluate(args.model, path, step_range=tuple(args.steps), every=args.every,
                               device=args.device, runs=args.runs, precision=args.precision)
        reports.append(rep)
        print(f"{rep['model']} on {path}, steps {args.steps[0]}..{args.steps[1]}:")
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
               {k: v for k, v in r.items() if k != "frames"} for r in reports]}
    atomic_write(out, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 0


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"
