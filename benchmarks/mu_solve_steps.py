"""Network evaluations per Langevin step of the grand-canonical mu solve, the share of steps
that fall back to the bracketed solve, and the step-to-step change of mu, along one ML quench
from a hot start.

With ``--compare``, the same quench (same seed and noise) runs twice in one process, the two
advanced in turn step by step: with the Newton steps on the active sites only (the default,
``ACTIVE_SLOPE``) and with every site re-evaluated; the time ratio and the largest force
difference between the two runs' final frames are printed.

Usage::

    python benchmarks/mu_solve_steps.py --L 100 --steps 220 --f 0.5 --model holstein
    python benchmarks/mu_solve_steps.py --L 64 --steps 4000 --model holstein-gc-v5 --compare
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def quench(args, active_slopes: list[float]) -> list[dict]:
    """The same quench once per ``ACTIVE_SLOPE`` value, the runs advanced in turn step by step
    (so machine load affects them alike); per run, evaluations, fallbacks, |dmu| and time."""
    from cdwdata import dynamics
    from cdwdata.ml import forcefield
    from cdwdata.ml.forcefield import load_model
    from cdwdata.params import HolsteinParams

    p = HolsteinParams()
    runs = []
    for a in active_slopes:
        forcefield.ACTIVE_SLOPE = a
        ff = load_model(args.model, f=args.f, T=args.T, precision=args.precision)
        Q, v = dynamics.hot_start([1], args.L, p, dtype=torch.float32)
        runs.append({"ff": ff, "state": dynamics.init_state(ff, Q, v, [1]), "slope": a,
                     "evaluations": [], "bracketed": [], "mu": [], "wall": 0.0})
    for _ in range(args.steps):
        for r in runs:
            forcefield.ACTIVE_SLOPE = r["slope"]
            t0 = time.perf_counter()
            r["state"] = dynamics.step(r["state"], r["ff"], args.T, p)
            r["wall"] += time.perf_counter() - t0
            r["evaluations"].append(r["ff"].last_iterations)
            r["bracketed"].append(r["ff"].last_solve == "bracketed")
            r["mu"].append(float(r["state"].mu[0]))
    return [{"evaluations": np.array(r["evaluations"]), "bracketed": np.array(r["bracketed"]),
             "dmu": np.abs(np.diff(r["mu"])), "wall": r["wall"],
             "F": r["state"].F.numpy().copy()} for r in runs]


def report(name: str, r: dict, args) -> None:
    edges = [0, 20, 100, 200, 400, 1000, 4000, 20000]
    print(f"== {name}")
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= args.steps:
            e, b, d = r["evaluations"][lo:hi], r["bracketed"][lo:hi], r["dmu"][lo:hi - 1]
            print(f"steps {lo}-{hi}: evaluations/step {e.mean():.2f}, bracketed "
                  f"{100 * b.mean():.1f} %, |dmu| median {np.median(d):.2e}, max {d.max():.2e}")
    print(f"{args.L}x{args.L}: {args.L ** 2 * args.steps / r['wall']:.3g} site-steps/s "
          f"({args.threads} thread(s), dynamics.step without frame writes)")


def main() -> None:
    from cdwdata.ml import forcefield

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein")
    ap.add_argument("--L", type=int, default=100)
    ap.add_argument("--steps", type=int, default=220)
    ap.add_argument("--f", type=float, default=0.5)
    ap.add_argument("--T", type=float, default=0.1)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", action="store_true",
                    help="also run with every site re-evaluated in the Newton steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    default = forcefield.ACTIVE_SLOPE
    results = quench(args, [default, -1.0] if args.compare else [default])
    report(f"Newton steps on sites with |dn/dmu| > {default:g}", results[0], args)
    if args.compare:
        active, full = results
        report("Newton steps on every site", full, args)
        print(f"speed-up {full['wall'] / active['wall']:.2f}x (steps interleaved); final frames "
              f"differ by at most {np.abs(active['F'] - full['F']).max():.2e} in the force "
              "(chaotic divergence of two trajectories, not an error)")


if __name__ == "__main__":
    main()
