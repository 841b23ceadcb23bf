"""Network evaluations per Langevin step of the grand-canonical mu solve, and the size of the
step-to-step change of mu, along one ML quench from a hot start.

Usage::

    python benchmarks/mu_solve_steps.py --L 100 --steps 220 --f 0.5 --model holstein
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from cdwdata import dynamics
    from cdwdata.ml.forcefield import load_model
    from cdwdata.params import HolsteinParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein")
    ap.add_argument("--L", type=int, default=100)
    ap.add_argument("--steps", type=int, default=220)
    ap.add_argument("--f", type=float, default=0.5)
    ap.add_argument("--T", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = HolsteinParams()
    ff = load_model(args.model, f=args.f, T=args.T)
    Q, v = dynamics.hot_start([1], args.L, p, dtype=torch.float32)
    state = dynamics.init_state(ff, Q, v, [1])
    evaluations, mus = [], []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state = dynamics.step(state, ff, args.T, p)
        evaluations.append(ff.last_iterations)
        mus.append(float(state.mu[0]))
    wall = time.perf_counter() - t0
    evaluations, dmu = np.array(evaluations), np.abs(np.diff(mus))
    edges = [0, 20, 100, 200, 400, 1000, 4000, 20000]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= args.steps:
            print(f"steps {lo}-{hi}: evaluations/step {evaluations[lo:hi].mean():.2f}, |dmu| "
                  f"median {np.median(dmu[lo:hi - 1]):.2e}, max {dmu[lo:hi - 1].max():.2e}")
    print(f"{args.L}x{args.L}: {args.L ** 2 * args.steps / wall:.3g} site-steps/s "
          f"({args.threads} thread(s), dynamics.step without frame writes)")


if __name__ == "__main__":
    main()
