"""Inference precision of the shipped model: float64, float32 and bf16 hidden layers compared
on held-out ED-Langevin frames (forces and solved mu), and each against the exact forces.

Usage::

    python benchmarks/precision.py --store data/ed-quench-heldout-L40.zarr --runs 0 1 \\
        --out benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

VARIANTS = {"float64": (torch.float64, "float32"), "float32": (torch.float32, "float32"),
            "bf16": (torch.float32, "bf16")}


def main() -> None:
    from cdwdata import HolsteinParams, store
    from cdwdata.ed import elastic_force
    from cdwdata.ml import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein")
    ap.add_argument("--store", required=True)
    ap.add_argument("--runs", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, nargs=2, default=[100, 2000])
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = store.open_dataset(args.store)
    p = HolsteinParams.from_dict(ds.attrs)
    steps = ds.step.values
    frames = np.flatnonzero((steps >= args.steps[0]) & (steps <= args.steps[1]))[::args.every]
    rows = []
    for jf, f in enumerate(ds.f.values):
        Q = ds.Q.values[0, jf][args.runs][:, frames].reshape(-1, ds.sizes["x"], ds.sizes["y"])
        n_ex = ds.n.values[0, jf][args.runs][:, frames].reshape(Q.shape)
        F_ex = p.g * (n_ex - 0.5) + elastic_force(Q, p)
        F, mu = {}, {}
        for name, (dtype, prec) in VARIANTS.items():
            ff = load_model(args.model, f=float(f), T=0.1, dtype=dtype, precision=prec)
            F[name] = ff.forces(Q)
            mu[name] = np.asarray(ff.last_mu, float)
        for name in VARIANTS:
            d64 = F[name] - F["float64"]
            rows.append({"f": float(f), "precision": name, "frames": int(len(Q)),
                         "max_dF_vs_float64": float(np.abs(d64).max()),
                         "rms_dF_vs_float64": float(np.sqrt((d64 ** 2).mean())),
                         "max_dmu_vs_float64": float(np.abs(mu[name] - mu["float64"]).max()),
                         "rmse_vs_ed": float(np.sqrt(((F[name] - F_ex) ** 2).mean()))})
            r = rows[-1]
            print(f"f={f:g} {name:8s} vs float64: max |dF| {r['max_dF_vs_float64']:.2e}, rms "
                  f"{r['rms_dF_vs_float64']:.2e}, max |dmu| {r['max_dmu_vs_float64']:.2e}; "
                  f"RMSE vs ED {r['rmse_vs_ed']:.4f}", flush=True)
    Path(args.out).write_text(json.dumps({"benchmark": "inference precision", "model":
                                          args.model, "store": args.store, "runs": args.runs,
                                          "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
