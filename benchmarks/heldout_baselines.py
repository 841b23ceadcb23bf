"""Held-out errors of the earlier canonical per-filling models (benchmarks/baselines), on the
same ED-Langevin frames as ``cdw validate MODEL --heldout STORE``.

Usage::

    python benchmarks/heldout_baselines.py --store data/ed-quench-heldout-L40.zarr \\
        --out benchmarks/results/heldout-canonical.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    from cdwdata.ml import heldout, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--steps", type=int, nargs=2, default=[100, 2000])
    ap.add_argument("--runs", type=int, nargs="+", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "heldout-canonical.json"))
    args = ap.parse_args()
    rep = heldout.evaluate(
        lambda f, T: load_model(HERE / "baselines" / f"canonical-f{f:g}", f=f), args.store,
        step_range=tuple(args.steps), runs=args.runs)
    for f, e in rep["by_f"].items():
        print(f"f={f}: RMSE {e['rmse']:.4f}, fractional-site RMSE {e['rmse_fractional']:.4f}, "
              f"MAE {e['mae']:.4f}, sigma_fit {e['sigma_fit']:.4f}")
    rep.pop("frames")
    Path(args.out).write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()
