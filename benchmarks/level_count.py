"""How many levels per site does a level model need? An oracle from exact spectra.

A level model (:mod:`cdwdata.ml.levels`) writes n_i(mu, T) as a Fermi sum over K weighted
levels per site. The exact local density of states of a 40x40 snapshot has L^2 levels per
site; its K-point Gauss quadrature (Lanczos on the discrete measure
``{eps_m, |psi_m(i)|^2}``: nodes and weights that match its first 2K moments) is one K-level
representation that needs no training. Its force error at the snapshot's own canonical mu
shows what K alone allows, early in a quench (many sites with levels near mu) and late.

Usage::

    python benchmarks/level_count.py --store data/ed-quench-heldout-L40.zarr \\
        --steps 100 200 1000 --K 8 16 32 64 --out benchmarks/results/level-count.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from scipy.special import expit

from cdwdata import ed, store
from cdwdata.params import HolsteinParams


def gauss_levels(eps: np.ndarray, p: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """K-point Gauss quadrature ``(nodes, weights)`` (S, K) of the measures with atoms ``eps``
    (N,) and weights ``p`` (S, N), each row summing to 1 (Stieltjes/Lanczos recursion with
    full reorthogonalisation)."""
    S, _ = p.shape
    basis = [np.sqrt(p)]
    a = np.zeros((S, K))
    b = np.zeros((S, K))
    for k in range(K):
        q = basis[-1]
        z = eps[None] * q
        a[:, k] = (q * z).sum(1)
        for v in basis:  # full reorthogonalisation keeps the recursion exact
            z -= (v * z).sum(1, keepdims=True) * v
        b[:, k] = np.sqrt((z * z).sum(1))
        basis.append(z / np.maximum(b[:, k], 1e-300)[:, None])
    J = np.zeros((S, K, K))
    idx = np.arange(K)
    J[:, idx, idx] = a
    J[:, idx[:-1], idx[1:]] = b[:, :-1]
    J[:, idx[1:], idx[:-1]] = b[:, :-1]
    nodes, V = np.linalg.eigh(J)
    return nodes, V[:, 0, :] ** 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/ed-quench-heldout-L40.zarr",
                    help="ED-Langevin trajectory store")
    ap.add_argument("--f", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 1000])
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--K", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "level-count.json"))
    args = ap.parse_args()
    ds = store.open_dataset(args.store)
    params = HolsteinParams.from_dict(ds.attrs)
    T = float(ds["T"].values[0])
    rows = []
    print("| f | t | fractional sites | " + " | ".join(f"K = {k}" for k in args.K) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.K) + " |")
    for f in args.f:
        for step in args.steps:
            Q = ds["Q"].sel(T=T, f=f, step=step).isel(run=args.run).values.astype(float)
            mu = float(ed.solve(Q, T, f, params).mu)
            sp = ed.spectrum(Q[None], params)
            eps, W = sp.eps[0], sp.weights[0]
            n = (W * expit((mu - eps) / T)[None]).sum(1)
            row = {"f": f, "step": step, "time": step * params.dt, "mu": mu,
                   "fractional": float(np.mean((n > 0.05) & (n < 0.95))), "K": {}}
            for K in args.K:
                nodes, w = gauss_levels(eps, W, K)
                d = params.g * ((w * expit((mu - nodes) / T)).sum(1) - n)
                row["K"][str(K)] = {"force_rmse": float(np.sqrt(np.mean(d**2))),
                                    "force_max": float(np.abs(d).max())}
            rows.append(row)
            print(f"| {f} | {row['time']:g} | {100 * row['fractional']:.1f}% | "
                  + " | ".join(f"{row['K'][str(k)]['force_rmse']:.4f}" for k in args.K)
                  + " |", flush=True)
    out = {"benchmark": "levels per site: Gauss quadrature of the exact LDOS",
           "store": args.store, "run": args.run, "T": T, "rows": rows,
           "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
