"""Cost of one ML force evaluation at a given L, relative to a bare float32 paper-MLP forward.

All timings are taken interleaved in one process (same threads, same machine load), so the
ratios hold up better than the absolute times. Measured per model:

* ``cold``: ``forces(Q)`` with the mu solve started from the card's value (a single call);
* ``warm``: ``evaluate_with_mu(Q', mu_hint=mu(Q))`` on a configuration one Langevin step
  away (``Q' = Q + 0.01 xi``): what every step of a quench costs;
* the descriptor alone, and the number of network evaluations of each mu solve;
* for a level model, the parts of the warm call: the descriptor into the plan's workspace,
  the network (``bind``), the refined density and slope at the hint (the cluster selection,
  the clusters' diagonalisation and the Fermi sums), and the rest (Newton steps, forces).

The configuration is a coarsening-like state (+/- checkerboard domains of random shape with
walls, plus noise) or, with ``--state STORE[:STEP]``, a stored frame tiled to L x L
(``bench_scaling.stored_state``).

Usage::

    python benchmarks/bench_force_cost.py --model data/models/gc-v1 --L 200 --threads 2
    python benchmarks/bench_force_cost.py --model holstein-gc-v12 --precision float32 \
        --state runs/paper/quench/T-scan.zarr:20000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def coarsened_state(L: int, seed: int = 0, amplitude: float = 1.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.indices((L, L))
    field = np.zeros((L, L))
    for _ in range(6):
        kx, ky = rng.integers(1, 5, size=2)
        field += np.cos(2 * np.pi * (kx * x + ky * y) / L + rng.uniform(0, 2 * np.pi))
    stagger = np.where((x + y) % 2 == 0, 1.0, -1.0)
    return amplitude * stagger * np.tanh(2 * field) + 0.2 * rng.standard_normal((L, L))


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def warm_parts(ff, Q2t: torch.Tensor, mu, repeat: int, t_warm: float) -> dict:
    """Times of the parts of a level model's warm force call (seconds): descriptor, network,
    refined density and slope at the hint, each the difference of two cumulative stages
    timed best of ``repeat`` (the refinement overwrites the levels it refines, so it is
    timed after a fresh ``bind``); ``rest`` is the warm call's time less those."""
    plan = ff.plan()
    mu0 = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)

    def stage(k: int):
        def run():
            with torch.no_grad():
                G = ff.model.features(Q2t, plan.feature_buffer(Q2t.shape))
                if k > 1:
                    plan.bind(G)
                if k > 2:
                    plan.refined_density_and_slope(mu0)
        return run

    t = [best_of(stage(k), repeat) for k in (1, 2, 3)]
    parts = {"descriptor": t[0], "network": max(t[1] - t[0], 0.0),
             "refined_density_and_slope": max(t[2] - t[1], 0.0)}
    parts["rest"] = max(t_warm - t[2], 0.0)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True, help="model names or paths")
    ap.add_argument("--L", type=int, default=200)
    ap.add_argument("--f", type=float, default=0.5)
    ap.add_argument("--T", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--precision", nargs="+", default=["float32", "bf16"])
    ap.add_argument("--state", default=None, metavar="STORE[:STEP]",
                    help="time on this stored frame (run 0, first T and f), tiled to L")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "force-cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cdwdata.ml import load_model
    from cdwdata.ml.model import HIDDEN, MLP

    N = args.L * args.L
    paper = MLP([45, *HIDDEN, 1]).eval()
    X = torch.randn(N, 45)
    if args.state:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_scaling import stored_state

        Q = stored_state(args.state, args.L)
    else:
        Q = coarsened_state(args.L)
    Q2 = Q + 0.01 * np.random.default_rng(1).standard_normal(Q.shape)

    def bare():
        with torch.no_grad():
            paper(X)

    rows = []
    for name, precision in [(m, p) for m in args.model for p in args.precision]:
        ff = load_model(name, f=args.f, T=args.T, precision=precision)
        Qt = torch.as_tensor(Q, dtype=torch.float32)[None]
        Q2t = torch.as_tensor(Q2, dtype=torch.float32)[None]
        _, _, mu = ff.evaluate_with_mu(Qt)
        cold_iter = ff.last_iterations
        ff.evaluate_with_mu(Q2t, mu_hint=mu)
        warm_iter = ff.last_iterations

        def cold(ff=ff, Qt=Qt):
            ff.evaluate_with_mu(Qt)

        def warm(ff=ff, Q2t=Q2t, mu=mu):
            ff.evaluate_with_mu(Q2t, mu_hint=mu)

        def desc(ff=ff, Qt=Qt):
            with torch.no_grad():
                ff.model.features(Qt)

        t_bare = [best_of(bare, args.repeat)]
        t_cold = best_of(cold, args.repeat)
        t_bare.append(best_of(bare, args.repeat))
        t_warm = best_of(warm, args.repeat)
        t_desc = best_of(desc, args.repeat)
        t_bare.append(best_of(bare, args.repeat))
        tb = float(np.median(t_bare))
        row = {"model": name, "precision": precision,
               "layers": ff.card["architecture"]["layers"], "L": args.L,
               "bare_paper_mlp_s": tb, "cold_s": t_cold, "warm_s": t_warm,
               "descriptor_s": t_desc, "cold_ratio": t_cold / tb, "warm_ratio": t_warm / tb,
               "cold_evaluations": cold_iter, "warm_evaluations": warm_iter,
               "site_forces_per_s_warm": N / t_warm}
        if hasattr(ff.plan(), "refined_density_and_slope"):
            row["warm_parts_s"] = warm_parts(ff, Q2t, mu, args.repeat, t_warm)
        rows.append(row)
        print(f"{name} ({precision}): layers {row['layers']}, bare paper MLP {1e3 * tb:.1f} ms; cold "
              f"{1e3 * t_cold:.1f} ms ({row['cold_ratio']:.2f}x, {cold_iter:.3g} evaluations), "
              f"warm {1e3 * t_warm:.1f} ms ({row['warm_ratio']:.2f}x, {warm_iter:.3g} "
              f"evaluations), descriptor {1e3 * t_desc:.1f} ms", flush=True)
        if "warm_parts_s" in row:
            print("  warm call: " + ", ".join(f"{k} {1e3 * v:.1f} ms"
                                              for k, v in row["warm_parts_s"].items()),
                  flush=True)
    out = {"benchmark": "ML force cost vs bare float32 paper-MLP forward", "L": args.L,
           "threads": args.threads, "f": args.f, "T": args.T, "rows": rows,
           "torch": torch.__version__, "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
