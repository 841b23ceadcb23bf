"""Exact open clusters where the network is unsure: held-out accuracy against cluster size and
site selection (``cdwdata.ml.cluster``).

For every (r2, window_T, weight) the level model is loaded with that cluster spec and judged
on the held-out ED-Langevin frames exactly as ``cdw validate MODEL --heldout STORE`` does
(force RMSE per filling over t = 5..100 and over t = 50..100), together with the share of
sites the cluster replaced (over all frames, and on the first and last frame).

Usage::

    python benchmarks/cluster_refine.py --model holstein-gc-v10 \\
        --store data/ed-quench-heldout-L40.zarr --runs 0 1 \\
        --specs 8:3:0.01 5:3:0.01 4:3:0.01 2:3:0.01 13:3:0.01 13:5:0.001 \\
        --out benchmarks/results/cluster-refine.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

LATE = (1000, 2000)  # t = 50..100 at dt = 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-gc-v10", help="level model (no cluster)")
    ap.add_argument("--store", default="data/ed-quench-heldout-L40.zarr")
    ap.add_argument("--runs", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--specs", nargs="+", default=["8:3:0.01"], metavar="R2:WINDOW_T:WEIGHT")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "cluster-refine.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cdwdata.ml.cluster import ClusterLevels

    # per refine call (one batch of frames), the sites selected in each frame
    calls: list[list[int]] = []
    refine = ClusterLevels.refine

    def counting_refine(self, G, w, e, mu, candidates=None):
        count = refine(self, G, w, e, mu, candidates)
        calls.append([int(r.numel()) for r in self.last_rows])
        return count

    ClusterLevels.refine = counting_refine
    try:
        rows = scan(args, calls)
    finally:
        ClusterLevels.refine = refine
    out = {"benchmark": "open-cluster refinement of a level model", "model": args.model,
           "store": args.store, "runs": args.runs, "rows": rows, "torch": torch.__version__,
           "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


def scan(args, calls: list[list[int]]) -> list[dict]:
    """One row per cluster spec of ``args.specs``; ``calls`` collects the selections."""
    from cdwdata import store
    from cdwdata.ml import load_model
    from cdwdata.ml.cluster import ClusterSpec
    from cdwdata.ml.heldout import evaluate

    grid = store.open_dataset(args.store).sizes
    lattice_sites = grid["x"] * grid["y"]
    rows = []
    print("| r^2 (sites) | window | weight | RMSE t = 5..100 (f = 0.5 / 0.4 / 0.3) | "
          "t = 50..100 | sites refined: mean (t = 5, t = 100) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for text in args.specs:
        r2, window, weight = (float(x) for x in text.split(":"))
        spec = ClusterSpec(r2=r2, window_T=window, weight=weight)
        calls.clear()

        def make(f, T, spec=spec):
            return load_model(args.model, f=f, T=T, cluster=spec)

        res = evaluate(make, args.store, runs=args.runs)
        fr = res["frames"]
        late = fr["rmse"].sel(step=(fr.step >= LATE[0]) & (fr.step <= LATE[1]))
        # evaluate solves the frames of a run in one batch (one refine call), then checks
        # monotonicity at fixed mu with two more calls: every third call is a solve
        sites = lattice_sites
        runs = [np.array(c) / sites for c in calls[0::3]]
        per_frame = np.concatenate(runs)
        first = float(np.mean([r[0] for r in runs]))
        last = float(np.mean([r[-1] for r in runs]))
        row = {"r2": r2, "sites": spec.sites, "window_T": window, "weight": weight,
               "rmse": {f: e["rmse"] for f, e in res["by_f"].items()},
               "rmse_late": {f"{f:g}": float(np.sqrt(np.nanmean(late.sel(f=f).values ** 2)))
                             for f in fr.f.values},
               "refined_mean": float(per_frame.mean()), "refined_first": float(first),
               "refined_last": float(last)}
        rows.append(row)
        print(f"| {r2:g} ({spec.sites}) | {window:g} T | {weight:g} | "
              + " / ".join(f"{v:.4f}" for v in row["rmse"].values()) + " | "
              + " / ".join(f"{v:.4f}" for v in row["rmse_late"].values()) + " | "
              f"{100 * row['refined_mean']:.1f}% ({100 * first:.1f}%, {100 * last:.2f}%) |",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
