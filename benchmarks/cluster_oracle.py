"""Open-cluster oracle: how much of n_i(mu, T) does exact diagonalisation of a small cluster
around site i explain?

For every site i of a snapshot, the Hamiltonian restricted to the sites within
``|r - r_i|^2 <= R2`` (open boundary: the hopping out of the cluster is cut) is diagonalised,
and ``n_i = sum_m |psi_m(i)|^2 f((eps_m - mu) / T)`` is taken at the snapshot's exact mu. No
training, no fitting: the force RMSE against the full ED says how much of the density a
cluster of that size holds, next to what the trained models reach on the same frames
(``benchmarks/README.md``).

Usage::

    python benchmarks/cluster_oracle.py --store data/ed-quench-heldout-L40.zarr \\
        --steps 100 200 --R2 1 2 5 8 13 --out benchmarks/results/cluster-oracle.json
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


def cluster_density(Q: np.ndarray, mu: float, T: float, params: HolsteinParams,
                    R2: float) -> np.ndarray:
    """``n_i`` (L, L) from the open cluster ``|r - r_i|^2 <= R2`` around every site."""
    L = Q.shape[-1]
    reach = int(np.floor(np.sqrt(R2)))
    offs = [(dx, dy) for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)
            if dx * dx + dy * dy <= R2]
    index = {o: k for k, o in enumerate(offs)}
    M = len(offs)
    H0 = np.zeros((M, M))
    for (dx, dy), k in index.items():
        for ex, ey in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            j = index.get((dx + ex, dy + ey))
            if j is not None:
                H0[k, j] = -params.t
    x, y = np.indices((L, L))
    H = np.repeat(H0[None], L * L, axis=0)
    for (dx, dy), k in index.items():
        H[:, k, k] = -params.g * Q[(x + dx) % L, (y + dy) % L].ravel()
    ev, V = np.linalg.eigh(H)
    centre = index[(0, 0)]
    return ((V[:, centre, :] ** 2) * expit((mu - ev) / T)).sum(1).reshape(L, L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/ed-quench-heldout-L40.zarr",
                    help="ED-Langevin trajectory store")
    ap.add_argument("--f", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--R2", type=float, nargs="+", default=[1, 2, 5, 8, 13])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "cluster-oracle.json"))
    args = ap.parse_args()
    ds = store.open_dataset(args.store)
    params = HolsteinParams.from_dict(ds.attrs)
    T = float(ds["T"].values[0])
    rows = []
    print("| f | t | " + " | ".join(f"r^2 <= {r:g}" for r in args.R2) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.R2) + " |")
    for f in args.f:
        for step in args.steps:
            Q = ds["Q"].sel(T=T, f=f, step=step).isel(run=args.run).values.astype(float)
            res = ed.solve(Q, T, f, params)
            row = {"f": f, "step": step, "time": step * params.dt, "mu": float(res.mu),
                   "force_rmse": {}}
            for R2 in args.R2:
                n = cluster_density(Q, float(res.mu), T, params, R2)
                row["force_rmse"][f"{R2:g}"] = float(np.sqrt(np.mean((params.g * (n - res.n))
                                                                     ** 2)))
            rows.append(row)
            print(f"| {f} | {row['time']:g} | "
                  + " | ".join(f"{row['force_rmse'][f'{r:g}']:.4f}" for r in args.R2) + " |",
                  flush=True)
    out = {"benchmark": "open-cluster oracle", "store": args.store, "run": args.run, "T": T,
           "rows": rows, "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
