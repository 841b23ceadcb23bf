"""Force cost over a whole quench: every force call of a Langevin run from the hot start,
against a bare float32 forward of the paper's MLP timed in the same process.

A single frame says what one force call costs at one moment; the cost of a level model with
exact clusters changes along a quench (many refined sites while walls are dense, few once the
domains have grown). This script runs the quench itself (``cdwdata.dynamics`` from
``hot_start``, as ``cdw quench`` does, one run) and times

* every force call (descriptor, mu solve from the previous step's mu, clusters, forces), with
  the number of sites refined by an exact cluster;
* every whole step (drift, force, kick, thermostat);
* the bare paper-MLP forward on the same number of sites, ``--bare-repeat`` times every
  ``--bare-every`` steps, interleaved with the steps.

It reports, per window of time and over the whole run: the mean force time over the mean
bare time (the cost ratio), the share of sites refined, and whole-step site-steps per second.

Usage (the paper's lattice and length, 2 threads as the cost target is stated)::

    python benchmarks/quench_cost.py --model holstein-gc-v12 --L 200 --steps 20000 \\
        --threads 2 --out benchmarks/results/quench-cost-v12.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

#: Default window edges in units of time (dt = 0.05): t = 0-5, 5-20, 20-100, 100-1000.
WINDOWS_T = (0.0, 5.0, 20.0, 100.0, 1000.0)


class TimedForceField:
    """A force field proxy that times every ``evaluate_with_mu`` call and records the sites
    refined by its exact clusters (0 for a model without them)."""

    accepts_mu_hint = True

    def __init__(self, ff) -> None:
        self.ff = ff
        self.seconds: list[float] = []
        self.refined: list[int] = []

    def evaluate_with_mu(self, Q, mu_hint=None):
        t0 = time.perf_counter()
        out = self.ff.evaluate_with_mu(Q, mu_hint=mu_hint)
        self.seconds.append(time.perf_counter() - t0)
        cluster = getattr(self.ff.plan(), "cluster", None)
        self.refined.append(0 if cluster is None else int(cluster.last_count))
        return out


def paper_mlp():
    """The paper's canonical MLP 45x512x256x64x16x1 (random weights: only its cost matters)."""
    from cdwdata.ml.model import HIDDEN, MLP

    return MLP([45, *HIDDEN, 1]).eval()


def measure(model: str, L: int, steps: int, T: float = 0.1, f: float = 0.5, seed: int = 0,
            bare_every: int = 200, bare_repeat: int = 3, windows=WINDOWS_T,
            progress: bool = False, return_state: bool = False, compile: bool = False):
    """Run one quench of ``steps`` steps at L x L and return the cost report (see the module
    docstring; with ``return_state``, ``(report, final LangevinState)``); ``windows`` are
    edges in units of time; ``compile``: the model's torch.compile'd kernels, compiled
    before the timed steps)."""
    from cdwdata import dynamics, noise
    from cdwdata.ml import load_model
    from cdwdata.params import HolsteinParams

    params = HolsteinParams()
    # float32 state and model: what `cdw quench` runs for an ML model (its default dtype)
    ff = TimedForceField(load_model(model, f=f, T=T, dtype=torch.float32, compile=compile))
    N = L * L
    mlp = paper_mlp()
    X = torch.randn(N, 45, generator=torch.Generator().manual_seed(seed))

    def bare() -> float:
        best = float("inf")
        with torch.no_grad():
            for _ in range(bare_repeat):
                t0 = time.perf_counter()
                mlp(X)
                best = min(best, time.perf_counter() - t0)
        return best

    keys = [noise.run_key(seed, T, f, 0)]  # the key `cdw quench --seed` gives run 0
    Q, v = dynamics.hot_start(keys, L, params, dtype=torch.float32)
    bare()  # warm the paper MLP's kernels
    t0 = time.perf_counter()
    state = dynamics.init_state(ff, Q, v, keys)
    cold_s = time.perf_counter() - t0
    buf = torch.empty_like(state.Q)
    ff.seconds.clear()
    ff.refined.clear()
    step_s = np.empty(steps)
    bare_at, bare_s = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", desc=f"{model} L={L}")
    with torch.no_grad():
        for s in range(steps):
            if s % bare_every == 0:
                bare_at.append(s)
                bare_s.append(bare())
            t1 = time.perf_counter()
            state = dynamics.step(state, ff, T, params, inplace=True, noise_buffer=buf)
            step_s[s] = time.perf_counter() - t1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    force_s = np.asarray(ff.seconds)
    refined = np.asarray(ff.refined) / N
    bare_at, bare_s = np.asarray(bare_at), np.asarray(bare_s)
    t_end = (np.arange(steps) + 1) * params.dt  # time reached by each step

    def summary(sel: np.ndarray, bare_sel: np.ndarray) -> dict:
        tb = float(bare_s[bare_sel].mean())
        return {"steps": int(sel.sum()), "force_mean_s": float(force_s[sel].mean()),
                "bare_paper_mlp_s": tb, "cost_ratio": float(force_s[sel].mean()) / tb,
                "refined_share": float(refined[sel].mean()),
                "step_mean_s": float(step_s[sel].mean()),
                "site_steps_per_s": N / float(step_s[sel].mean())}

    rows = []
    for lo, hi in zip(windows[:-1], windows[1:], strict=True):
        sel = (t_end > lo) & (t_end <= hi)
        if not sel.any():
            continue
        bare_sel = (bare_at * params.dt >= lo) & (bare_at * params.dt < hi)
        if not bare_sel.any():  # a window shorter than --bare-every: the nearest sample
            dist = np.abs(bare_at * params.dt - lo)
            bare_sel = dist == dist.min()
        rows.append({"t": [lo, hi], **summary(sel, bare_sel)})
    whole = summary(np.ones(steps, bool), np.ones(bare_s.size, bool))
    report = {"benchmark": "force cost over a whole quench", "model": model,
              "card_sha256": getattr(ff.ff, "card_sha256", None), "compile": compile,
              "L": L, "steps": steps,
              "T": T, "f": f, "seed": seed, "threads": torch.get_num_threads(),
              "cold_first_solve_s": cold_s, "windows": rows, "whole_quench": whole,
              "bare_every": bare_every, "bare_repeat": bare_repeat,
              "torch": torch.__version__, "machine": platform.platform()}
    return (report, state) if return_state else report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-gc-v12")
    ap.add_argument("--L", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--T", type=float, default=0.1)
    ap.add_argument("--f", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bare-every", type=int, default=200,
                    help="steps between timings of the bare paper MLP")
    ap.add_argument("--bare-repeat", type=int, default=3)
    ap.add_argument("--windows", type=float, nargs="+", default=list(WINDOWS_T),
                    help="window edges in units of time")
    ap.add_argument("--compile", action="store_true",
                    help="the model's torch.compile'd kernels (cdwdata.ml.compiled)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "quench-cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rep = measure(args.model, args.L, args.steps, args.T, args.f, args.seed, args.bare_every,
                  args.bare_repeat, tuple(args.windows), progress=True, compile=args.compile)
    for row in [*rep["windows"], {"t": "all", **rep["whole_quench"]}]:
        print(f"t {row['t']}: {row['steps']} steps, force {1e3 * row['force_mean_s']:.1f} ms, "
              f"cost ratio {row['cost_ratio']:.3f}, refined {100 * row['refined_share']:.2f}%, "
              f"{row['site_steps_per_s']:.3g} site-steps/s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()
