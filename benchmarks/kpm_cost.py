"""Cost of KPM densities (cdwdata.kpm) against lattice size: O(N), and one 200x200 snapshot.

Usage::

    python benchmarks/kpm_cost.py [--L 40 100 200 400] [--steps 20] [--distance 12]
                                  [--backends scipy torch] [--threads 1] [--full 200]
                                  [--store data/ed-quench-heldout-L40.zarr] [--smoke]

Part 1 (scaling): for every L, ``--steps`` Chebyshev steps (fixed order, fixed probing distance,
so the same number of probe vectors wherever ``L`` allows) on a CDW configuration with noise;
reported as seconds per step and per site x probe vector, which O(N) keeps constant, both
wall and CPU time of the process (``time.process_time``: less sensitive to a loaded machine).

Part 2 (one real snapshot): the late (t = 100, f = 0.4) 40x40 ED quench snapshot tiled 5 x 5
into a 200x200 periodic lattice, at the ED chemical potential and T = 0.1, at the default
tolerance: wall time, order, probing distances. The tiled lattice's exact densities are the
40x40 ED densities tiled (up to the decay of the density matrix over 40 sites, 1e-15 for this
snapshot), so the error is measured too.

Prints markdown tables and writes ``benchmarks/results/kpm-cost.json`` with the load average.
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


def cdw_configuration(L: int, seed: int = 0):
    """Two CDW domains (walls along y) of amplitude 1.5 with Gaussian noise 0.3."""
    import numpy as np

    from cdwdata.params import Lattice

    rng = np.random.default_rng(seed)
    x = np.arange(L)[:, None] * np.ones((1, L))
    domains = np.where((x >= L // 4) & (x < 3 * L // 4), 1.0, -1.0)
    return 1.5 * Lattice(L).sign * domains + 0.3 * rng.standard_normal((L, L))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[40, 100, 200, 400])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--distance", type=int, default=12)
    ap.add_argument("--backends", nargs="+", default=["scipy", "torch"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", type=int, default=200, help="L of the full snapshot (0: skip)")
    ap.add_argument("--store", default=str(ROOT / "data" / "ed-quench-heldout-L40.zarr"),
                    help="held-out ED-Langevin quench store, 40x40 (opened read-only)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cdwdata import ed, kpm

    if args.smoke:
        args.L, args.steps, args.distance, args.full = [8, 16], 5, 4, 0
    load0 = os.getloadavg()
    rows = []
    print("| backend | L | N | probe vectors | wall s per step | CPU s per step | "
          "wall ns per site x vector x step | CPU ns per site x vector x step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend in args.backends:
        for L in args.L:
            Q = cdw_configuration(L)
            kpm.density(Q, 0.0, 0.1, order=4, distance=args.distance, backend=backend,
                        device="cpu")  # warm-up
            c0 = time.process_time()
            _, info = kpm.density(Q, 0.0, 0.1, order=args.steps, distance=args.distance,
                                  backend=backend, device="cpu", return_info=True)
            cpu = time.process_time() - c0
            per_step = info.seconds / info.order
            cpu_step = cpu / info.order
            ns = 1e9 * per_step / (L * L * info.n_colours)
            rows.append({"backend": backend, "L": L, "N": L * L, "n_colours": info.n_colours,
                         "steps": info.order, "seconds": info.seconds,
                         "seconds_per_step": per_step, "cpu_seconds_per_step": cpu_step,
                         "ns_per_site_vector_step": ns,
                         "cpu_ns_per_site_vector_step": 1e9 * cpu_step / (L * L * info.n_colours)})
            print(f"| {backend} | {L} | {L * L} | {info.n_colours} | {per_step:.4f} | "
                  f"{cpu_step:.4f} | {ns:.2f} | {rows[-1]['cpu_ns_per_site_vector_step']:.2f} |")
            sys.stdout.flush()

    full = None
    if args.full:
        import xarray as xr

        ds = xr.open_zarr(args.store, consolidated=False)  # read only
        T0 = float(ds["T"].values[0])
        cell = ds.sel(T=T0, f=0.4, run=0, step=2000)
        Q40 = cell["Q"].values.astype(float)
        mu = float(cell["mu"])
        reps = args.full // Q40.shape[-1]
        Q = np.tile(Q40, (reps, reps))
        exact = np.tile(ed.density_at(Q40, mu, T0), (reps, reps))
        full = []
        print(f"\nOne {Q.shape[-1]}x{Q.shape[-1]} snapshot (late ED quench tiled, T = {T0}, "
              f"mu = {mu:.4f}, default tol):\n")
        print("| backend | threads | order | distances | probe vectors | wall s | CPU s | "
              "max abs error |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for backend in args.backends[:1]:
            t0, c0 = time.perf_counter(), time.process_time()
            n, info = kpm.density(Q, mu, T0, backend=backend, device="cpu", return_info=True)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            err = float(np.abs(n - exact).max())
            full.append({"backend": backend, "threads": args.threads, "L": Q.shape[-1],
                         "order": info.order, "distances": list(info.distances),
                         "n_colours": info.n_colours, "seconds": wall, "cpu_seconds": cpu,
                         "max_abs_error_vs_tiled_ed": err, "mu": mu, "T": T0})
            print(f"| {backend} | {args.threads} | {info.order} | "
                  f"{','.join(map(str, info.distances))} | {info.n_colours} | {wall:.1f} | "
                  f"{cpu:.1f} | {err:.1e} |")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("kpm-cost-smoke.json" if args.smoke else "kpm-cost.json")
    doc = {"benchmark": "KPM cost vs lattice size", "threads": args.threads,
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_average_before": load0, "load_average_after": os.getloadavg(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "scaling": rows, "full_snapshot": full}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nload average before/after: {load0} / {doc['load_average_after']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
