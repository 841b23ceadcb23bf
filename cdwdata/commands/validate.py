"""``cdw validate``: error statistics, parity plot and error histogram of an ML model."""

from __future__ import annotations


def configure(p) -> None:
    p.add_argument("model", metavar="MODEL", help="shipped model name or model path")
    p.add_argument("--data", required=True, nargs="+",
                   help="ED store(s) (training-set layout) holding quench snapshots; for a "
                        "model trained on several stores, the same list")
    p.add_argument("--out", default=None,
                   help="folder for the report and PNGs (default: next to the model card)")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL",
                   help="second model (e.g. the energy variant) evaluated on the same snapshots")
    p.add_argument("--all-quench", action="store_true",
                   help="use every quench snapshot even if the store is the training set")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-plots", action="store_true", help="write only the JSON report")


def run(args) -> int:
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
