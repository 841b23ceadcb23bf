"""KPM densities (cdwdata.kpm) against exact diagonalisation on 40x40 snapshots.

Usage::

    python benchmarks/kpm_accuracy.py [--store data/ed-quench-heldout-L40.zarr]
                                      [--T 0.1 0.2 0.3] [--tols 1e-2 1e-3 1e-4 1e-5 1e-6]
                                      [--threads 1] [--smoke]

Snapshots, one per filling f = 0.5, 0.4, 0.3:

* ``random``: the first random training configuration of that filling
  (:func:`cdwdata.trainset.random_configuration`, L = 40): weakly to strongly disordered,
  with or without CDW domains; the slowest spatial decay of the density matrix;
* ``early``: run 0 of the held-out ED-Langevin quench store at step 100 (t = 5);
* ``late``: the same run at step 2000 (t = 100).

At each bath temperature T, the chemical potential is the ED one of the snapshot at its
filling (the store's ``mu`` at the store's T, otherwise :func:`cdwdata.ed.solve`), and the
reference is :func:`cdwdata.ed.density_at` at that mu. Part 1 runs KPM at the default
tolerance (1e-3) on every (snapshot, T); part 2 sweeps the tolerance on the early and late
snapshots of f = 0.4 at the lowest T (order, probing distances, error, time).

Prints markdown tables and writes ``benchmarks/results/kpm-accuracy.json``. ``--smoke``: a
16x16 stand-in (random configurations only, no store needed) for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def snapshots(store: str | None, L: int, fillings) -> list[dict]:
    """``[{kind, f, Q, mu_T (dict T -> stored mu) }]``."""
    from cdwdata.trainset import TrainsetConfig, random_configuration

    out = [{"kind": "random", "f": f, "Q": random_configuration(TrainsetConfig(L=L), f, 0),
            "mu": {}} for f in fillings]
    if store is None:
        return out
    import xarray as xr

    ds = xr.open_zarr(store, consolidated=False)  # read only
    Ts = [float(t) for t in ds["T"].values]
    for kind, step in (("early", 100), ("late", 2000)):
        for f in fillings:
            cell = ds.sel(f=f, run=0, step=step)
            out.append({"kind": kind, "f": f, "step": step,
                        "Q": cell["Q"].sel(T=Ts[0]).values.astype(float),
                        "mu": {Ts[0]: float(cell["mu"].sel(T=Ts[0]))}})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(ROOT / "data" / "ed-quench-heldout-L40.zarr"),
                    help="held-out ED-Langevin quench store, 40x40 (opened read-only)")
    ap.add_argument("--T", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--f", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cdwdata import ed, kpm

    store = None if args.smoke else args.store
    L = 16 if args.smoke else 40
    snaps = snapshots(store, L, args.f)
    rows = []
    print("| snapshot | f | T | mu | order | distances | colours | max abs error | "
          "probing estimate | expansion bound | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in snaps:
        spec = ed.spectrum(s["Q"])
        s["spectrum"], s["mu_used"] = spec, {}
        for T in args.T:
            mu = s["mu"].get(T)
            if mu is None:
                mu = float(ed.solve(s["Q"], T, s["f"]).mu)
            s["mu_used"][T] = mu
            exact = spec.density(np.array([mu]), np.array([T]))[0, 0]
            n, info = kpm.density(s["Q"], mu, T, return_info=True)
            err = float(np.abs(n - exact).max())
            row = {"snapshot": s["kind"], "f": s["f"], "T": T, "mu": mu, "tol": kpm.DEFAULT_TOL,
                   "order": info.order, "distances": list(info.distances),
                   "n_colours": info.n_colours, "max_abs_error": err,
                   "sum_rule_error": float(abs(n.sum() - exact.sum())),
                   "probing_estimate": info.probing_estimate,
                   "expansion_bound": info.expansion_error, "seconds": info.seconds}
            rows.append(row)
            print(f"| {s['kind']} | {s['f']} | {T} | {mu:.4f} | {info.order} | "
                  f"{','.join(map(str, info.distances))} | {info.n_colours} | {err:.2e} | "
                  f"{info.probing_estimate:.1e} | {info.expansion_error:.1e} | "
                  f"{info.seconds:.1f} |")
            sys.stdout.flush()

    sweep = []
    T0 = min(args.T)
    chosen = [s for s in snaps if s["kind"] in ("early", "late") and s["f"] == 0.4] or snaps[:1]
    print(f"\nTolerance sweep at T = {T0}:\n")
    print("| snapshot | f | tol | order | distances | colours | max abs error | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in chosen:
        mu = s["mu_used"][T0]
        exact = s["spectrum"].density(np.array([mu]), np.array([T0]))[0, 0]
        for tol in args.tols:
            n, info = kpm.density(s["Q"], mu, T0, tol=tol, return_info=True)
            err = float(np.abs(n - exact).max())
            sweep.append({"snapshot": s["kind"], "f": s["f"], "T": T0, "mu": mu, "tol": tol,
                          "order": info.order, "distances": list(info.distances),
                          "n_colours": info.n_colours, "max_abs_error": err,
                          "seconds": info.seconds})
            print(f"| {s['kind']} | {s['f']} | {tol:.0e} | {info.order} | "
                  f"{','.join(map(str, info.distances))} | {info.n_colours} | {err:.2e} | "
                  f"{info.seconds:.1f} |")
            sys.stdout.flush()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("kpm-accuracy-smoke.json" if args.smoke else "kpm-accuracy.json")
    doc = {"benchmark": "KPM vs ED local densities at the ED chemical potential", "L": L,
           "store": store, "threads": args.threads, "machine": platform.processor() or
           platform.machine(), "load_average": os.getloadavg(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "default_tol": rows, "tolerance_sweep": sweep,
           "worst_default_error": max(r["max_abs_error"] for r in rows)}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nworst error at the default tolerance: {doc['worst_default_error']:.2e}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
