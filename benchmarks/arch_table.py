"""Accuracy versus cost of grand-canonical models: architectures crossed with precisions.

For every model and precision:

* **accuracy**: force RMSE on held-out ED-Langevin frames (``cdwdata.ml.heldout.evaluate``,
  the numbers of ``cdw validate MODEL --heldout STORE``) per filling, over t = 5..100 and over
  the late window t = 50..100;
* **cost**: one warm-started force evaluation (descriptor, mu solve and forces, as in every
  Langevin step) at L x L, divided by a bare float32 forward of the paper's MLP
  45x512x256x64x16x1 on the same number of sites, timed interleaved in the same process.

Usage::

    python benchmarks/arch_table.py --models data/models/gc-small data/models/gc-v4 \\
        --heldout data/ed-quench-heldout-L40.zarr --runs 0 1 --threads 1 \\
        --out benchmarks/results/arch-table.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_force_cost import best_of, coarsened_state  # noqa: E402

#: Step windows of the accuracy columns (dt = 0.05: t = 5..100 and t = 50..100).
WINDOWS = {"t5-100": (100, 2000), "t50-100": (1000, 2000)}


def cost(ff, L: int, repeat: int, paper, Q: np.ndarray | None = None) -> dict:
    """Warm force time / bare paper-MLP forward time, interleaved; on ``Q`` (default: a
    synthetic coarsened state of L x L)."""
    if Q is None:
        Q = coarsened_state(L)
    N = Q.size
    X = torch.randn(N, 45)
    Q2 = Q + 0.01 * np.random.default_rng(1).standard_normal(Q.shape)
    Qt = torch.as_tensor(Q, dtype=torch.float32)[None]
    Q2t = torch.as_tensor(Q2, dtype=torch.float32)[None]
    _, _, mu = ff.evaluate_with_mu(Qt)

    def bare():
        with torch.no_grad():
            paper(X)

    def warm():
        ff.evaluate_with_mu(Q2t, mu_hint=mu)

    t_bare, t_warm = [], []
    for _ in range(3):
        t_bare.append(best_of(bare, repeat))
        t_warm.append(best_of(warm, repeat))
    tb, tw = float(np.median(t_bare)), float(np.median(t_warm))
    out = {"bare_paper_mlp_s": tb, "warm_s": tw, "cost_ratio": tw / tb,
           "warm_evaluations": round(float(ff.last_iterations), 3)}
    plan = ff.plan()
    if getattr(plan, "cluster", None) is not None:
        out["cluster_sites"] = plan.cluster.last_count / N
    return out


def frames(spec: str, steps) -> dict:
    """``{step: Q}`` of run 0 at the first T and f of the trajectory store ``spec``."""
    from cdwdata import store

    ds = store.open_dataset(spec)
    cell = ds["Q"].isel(T=0, f=0, run=0)
    return {int(s): cell.sel(step=int(s)).values.astype(np.float64) for s in steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--precision", nargs="+", default=["float32", "bf16"])
    ap.add_argument("--heldout", default=None, help="ED-Langevin trajectory store")
    ap.add_argument("--runs", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--L", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cost-only", action="store_true",
                    help="skip the held-out accuracy (e.g. for an architecture not trained "
                         "to convergence)")
    ap.add_argument("--state", default=None, metavar="STORE",
                    help="time the force on frames of this trajectory store (run 0, first T "
                         "and f) instead of the synthetic coarsened state")
    ap.add_argument("--state-steps", type=int, nargs="+", default=[100, 400, 2000, 20000],
                    help="with --state: the frames (default t = 5, 20, 100, 1000)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "arch-table.json"))
    args = ap.parse_args()
    if not args.cost_only and not args.heldout:
        ap.error("--heldout STORE is needed unless --cost-only")
    torch.set_num_threads(args.threads)
    from cdwdata.errors import ModelError
    from cdwdata.ml import load_model
    from cdwdata.ml.heldout import evaluate
    from cdwdata.ml.model import HIDDEN, MLP

    paper = MLP([45, *HIDDEN, 1]).eval()
    states = frames(args.state, args.state_steps) if args.state else {None: None}
    rows = []
    for model in args.models:
        for precision in args.precision:
            try:
                ff = load_model(model, f=0.5, T=0.1, precision=precision)
                ff.plan()
            except ModelError as err:  # a precision this model does not offer
                print(f"{model} {precision}: skipped ({err})", flush=True)
                continue
            row = {"model": model, "name": ff.name, "precision": precision,
                   "layers": ff.card["architecture"]["layers"],
                   "card_sha256": getattr(ff, "card_sha256", None)}
            for step, Q in states.items():
                c = cost(ff, args.L, args.repeat, paper, Q)
                if step is None:
                    row.update(c)
                    continue
                row.setdefault("by_step", {})[str(step)] = c
                extra = (f", cluster at {100 * c['cluster_sites']:.2f}% of the sites"
                         if "cluster_sites" in c else "")
                print(f"{model} {precision} step {step}: cost {c['cost_ratio']:.3f}{extra}",
                      flush=True)
            if args.cost_only:
                rows.append(row)
                if "cost_ratio" in row:
                    print(f"{model} {precision} {row['layers']}: cost {row['cost_ratio']:.3f}",
                          flush=True)
                continue
            res = evaluate(model, args.heldout, step_range=WINDOWS["t5-100"],
                           every=args.every, runs=args.runs, precision=precision)
            row["t5-100"] = {f: {"rmse": e["rmse"], "rmse_fractional": e["rmse_fractional"],
                                 "mae": e["mae"], "sigma_fit": e.get("sigma_fit")}
                             for f, e in res["by_f"].items()}
            # late window from the per-frame RMSE (every frame has the same number of sites)
            fr = res["frames"]
            lo, hi = WINDOWS["t50-100"]
            late = fr["rmse"].sel(step=(fr.step >= lo) & (fr.step <= hi))
            row["t50-100"] = {f"{f:g}": {"rmse": float(np.sqrt(np.nanmean(
                late.sel(f=f).values ** 2)))} for f in fr.f.values if f"{f:g}" in row["t5-100"]}
            rows.append(row)
            acc = " ".join(f"{f}: {e['rmse']:.4f}" for f, e in row["t5-100"].items())
            late = " ".join(f"{f}: {e['rmse']:.4f}" for f, e in row["t50-100"].items())
            print(f"{model} {precision} {row['layers']}: RMSE t=5..100 {acc}; "
                  f"t=50..100 {late}", flush=True)
    out = {"benchmark": "accuracy vs cost of grand-canonical models", "L": args.L,
           "state": args.state, "state_steps": args.state_steps if args.state else None,
           "threads": args.threads, "heldout": args.heldout, "runs": args.runs,
           "windows": WINDOWS, "rows": rows, "torch": torch.__version__,
           "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
