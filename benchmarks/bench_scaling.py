"""ML-Langevin cost per site-step vs lattice size, against the bare MLP forward pass.

Usage::

    python benchmarks/bench_scaling.py [--L 40 100 200 400] [--model NAME_OR_PATH]
                                       [--device cpu|cuda] [--threads 1] [--repeat 3]
                                       [--runs 1] [--state STORE[:STEP] ...] [--out JSON]
                                       [--interleaved]

For every L, in a fresh process (so that peak memory belongs to that L alone):

* ``step``: one full Langevin step of one run, batched on the device: descriptor + MLP
  (the force field), velocity Verlet, Ornstein-Uhlenbeck thermostat with counter-based noise,
  in place as the quench loop takes it (``dynamics.step(..., inplace=True)``);
* ``force``: the force-field evaluation alone;
* ``floor``: a bare float32 forward pass of the paper's MLP (45 x 512 x 256 x 64 x 16 x 1)
  on L*L rows of random features: the compute floor of any implementation;
* ``ratio = step / floor``; ``write``: writing one frame (Q, n float32 + the float64
  checkpoint) to a zarr store, to be amortised over ``--save-every`` steps;
* peak memory: ``resource.getrusage`` max RSS of the process (CPU) or
  ``torch.cuda.max_memory_allocated`` (GPU), and its growth over the process after warm-up
  on an 8 x 8 lattice.

All timings are per site and step, medians of ``--repeat`` interleaved blocks. Without
``--model`` the shipped ``holstein-f0.5`` is used when present, otherwise a stand-in: a
randomly initialised model of the paper's architecture (same descriptor and MLP, so the same
cost), saved and loaded through :func:`cdwdata.ml.load_model` like a real one.

Prints a markdown table and writes ``benchmarks/results/scaling-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAPER_MLP = (45, 512, 256, 64, 16, 1)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _standin_model(folder: Path, f: float) -> str:
    import torch

    from cdwdata import HolsteinParams
    from cdwdata.ml import modelfile
    from cdwdata.ml.model import ForceModel

    torch.manual_seed(0)
    model = ForceModel().float().eval()
    path = folder / f"standin-f{f:g}"
    modelfile.save(model, path, {"params": HolsteinParams().to_dict(), "filling": f,
                                 "electron_T": 0.1, "note": "random weights: benchmark only"})
    return str(path)


def _paper_mlp(device: str):
    import torch

    layers = []
    for a, b in zip(PAPER_MLP[:-1], PAPER_MLP[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(device=device, dtype=torch.float32).eval()


def stored_state(spec: str, L: int):
    """A stored frame as an L x L configuration: ``STORE[:STEP]`` (run 0, first T and f;
    default the last frame), tiled periodically to L when L is a multiple of its size,
    else tiled and cropped (one seam of walls at the crop)."""
    import numpy as np

    from cdwdata import store

    path, _, step = spec.partition(":")
    ds = store.open_dataset(path)
    cell = ds["Q"].isel(T=0, f=0, run=0)
    Q = (cell.sel(step=int(step)) if step else cell.isel(step=-1)).values.astype(np.float64)
    reps = -(-L // Q.shape[0])
    return np.tile(Q, (reps, reps))[:L, :L]


def frame_size(spec: str) -> int:
    """The lattice size of the store in a ``STORE[:STEP]`` spec."""
    from cdwdata import store

    return int(store.open_dataset(spec.partition(":")[0]).sizes["x"])


def state_for_size(specs: list[str], L: int) -> str:
    """Of the stored frames ``specs``, the one to start an L x L lattice from: the largest
    whose size divides L (tiled without a seam), else the first (tiled and cropped: one
    seam of walls at the crop, which costs more at the walls' sites)."""
    fits = [(frame_size(s), s) for s in specs if L % frame_size(s) == 0]
    return max(fits)[1] if fits else specs[0]


def start_state(ff, n: int, state: str | None, device: str, runs: int = 1):
    """``runs`` copies of the stored frame ``state`` tiled to n x n with thermal velocities
    at the bath temperature, or (without ``state``, or for a tiny n) hot starts."""
    import torch

    from cdwdata import HolsteinParams, dynamics

    params, dtype = HolsteinParams(), torch.float32
    seeds = list(range(1, runs + 1))
    if state is not None and n > 8:
        _, v = dynamics.hot_start(seeds, n, params, device, dtype, T_init=0.1)
        Q = torch.as_tensor(stored_state(state, n), dtype=dtype, device=device)
        Q = Q.expand(runs, n, n).contiguous()
    else:
        Q, v = dynamics.hot_start(seeds, n, params, device, dtype)
    return dynamics.init_state(ff, Q, v, seeds)


def interleaved(sizes: list[int], model: str, device: str, repeat: int,
                states: list[str] | None, warmup: int = 20, budget_s: float = 0.25) -> dict:
    """Per-site cost of whole steps at every L of ``sizes`` in this one process, in
    interleaved blocks (one block of each L per round, about ``budget_s`` each, at least one
    step), after ``warmup`` steps at each L. The machine's drift then affects every L alike:
    ``ratio`` is the median over rounds of a block's per-site cost over the same round's at
    the largest L."""
    import torch

    from cdwdata import HolsteinParams, dynamics, ml

    params = HolsteinParams()
    runs = {}
    with torch.no_grad():
        for L in sizes:
            ff = ml.load_model(model, params=params, device=device, dtype=torch.float32)
            st = start_state(ff, L, state_for_size(states, L) if states else None, device)
            xi = torch.empty_like(st.Q)
            t0 = time.perf_counter()
            for _ in range(warmup):
                st = dynamics.step(st, ff, 0.1, params, inplace=True, noise_buffer=xi)
            per_step = (time.perf_counter() - t0) / warmup
            runs[L] = {"ff": ff, "state": st, "xi": xi,
                       "steps": max(1, round(budget_s / per_step)), "ns": []}
        for _ in range(repeat):
            for L in sizes:
                r = runs[L]

                def block(r=r):
                    for _ in range(r["steps"]):
                        r["state"] = dynamics.step(r["state"], r["ff"], 0.1, params,
                                                   inplace=True, noise_buffer=r["xi"])
                r["ns"].append(1e9 * _timed(block, device) / (r["steps"] * L * L))
    ref = runs[max(sizes)]["ns"]
    rows = [{"L": L, "steps_per_block": runs[L]["steps"],
             "step_per_site_ns_median": statistics.median(runs[L]["ns"]),
             "step_per_site_ns_min": min(runs[L]["ns"]),
             "ratio_to_largest": statistics.median(
                 a / b for a, b in zip(runs[L]["ns"], ref, strict=True)),
             "blocks_ns": runs[L]["ns"]} for L in sizes]
    return {"rows": rows, "rounds": repeat, "warmup_steps": warmup}


def measure(L: int, model: str, device: str, repeat: int, steps: int | None,
            state: str | None = None, runs: int = 1) -> dict:
    """All measurements for one L in this process; from the hot start, or from a stored
    frame (``state``, see :func:`stored_state`) with thermal velocities; ``runs`` runs
    batched in one tensor (the GPU's way; a CPU quench evaluates the force run by run),
    costs per site of all runs."""
    import torch

    from cdwdata import HolsteinParams, dynamics, ml, store
    from cdwdata.quench import QuenchConfig, _state_arrays, prepare_store

    params = HolsteinParams()
    ff = ml.load_model(model, params=params, device=device, dtype=torch.float32)
    mlp = _paper_mlp(device)

    def state_for(n: int, r: int = 1):
        return start_state(ff, n, state, device, r)

    with torch.no_grad():  # warm-up on a tiny lattice: baseline memory of the process
        s = state_for(8)
        dynamics.step(s, ff, 0.1, params)
        mlp(torch.randn(64, 45, device=device))
    base_rss = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    N = L * L * runs
    n_steps = steps or max(1, min(100, int(2e5 // N)))
    G = torch.randn(N, 45, device=device, dtype=torch.float32)
    with torch.no_grad():
        state = state_for(L, runs)
        xi = torch.empty_like(state.Q)  # as the quench loop: Q, v and the noise in place
        state = dynamics.step(state, ff, 0.1, params, inplace=True, noise_buffer=xi)  # warm-up
        mlp(G)
        t_step, t_force, t_floor = [], [], []
        for _ in range(repeat):
            t_floor.append(_timed(lambda: [mlp(G) for _ in range(n_steps)], device) / n_steps)

            def run_steps():
                nonlocal state
                for _ in range(n_steps):
                    state = dynamics.step(state, ff, 0.1, params, inplace=True,
                                          noise_buffer=xi)
            t_step.append(_timed(run_steps, device) / n_steps)
            t_force.append(_timed(lambda: [ff.evaluate(state.Q) for _ in range(n_steps)],
                                  device) / n_steps)
    out = {
        "L": L, "runs": runs, "sites": N, "steps_per_block": n_steps,
        "step_s": statistics.median(t_step), "force_s": statistics.median(t_force),
        "floor_s": statistics.median(t_floor),
    }
    out["step_per_site_ns"] = 1e9 * out["step_s"] / N
    out["force_per_site_ns"] = 1e9 * out["force_s"] / N
    out["floor_per_site_ns"] = 1e9 * out["floor_s"] / N
    out["ratio"] = out["step_s"] / out["floor_s"]
    out["finite"] = bool(torch.isfinite(state.Q).all())
    out["peak_rss_MB"] = _rss_mb()  # before the store imports (xarray, zarr) below
    out["rss_growth_MB"] = out["peak_rss_MB"] - base_rss
    if device.startswith("cuda"):
        out["gpu_peak_MB"] = torch.cuda.max_memory_allocated() / 2**20
    # one frame write (Q, n in float32 + the float64 checkpoint) through the store writer
    with tempfile.TemporaryDirectory() as tmp:
        cfg = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.5,), runs=runs, steps=2,
                           save_every=1, forcefield=model, frame_vars=("Q", "n"),
                           frame_dtype="float32", compute_dtype="float32")
        path = Path(tmp) / "w.zarr"
        prepare_store(path, cfg, command="bench_scaling")
        writer = store.TrajectoryWriter(path)
        arrays = _state_arrays(state)
        t_write = [_timed(lambda k=k: writer.write_frame(0, 0, list(range(runs)), k, arrays),
                          "cpu")
                   for k in range(3 if cfg.n_frames >= 3 else cfg.n_frames)]
        out["frame_write_s"] = statistics.median(t_write)
        out["frame_bytes_on_disk"] = sum(p.stat().st_size for p in path.rglob("*")
                                         if p.is_file() and p.name != "zarr.json") // 3
    return out


def _child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    try:
        from cdwdata.ensemble import blas_threads

        blas_threads(args.threads)
    except ImportError:  # pragma: no cover
        pass
    state = args.state[0] if args.state else None
    print("RESULT " + json.dumps(measure(args.child, args.model, args.device, args.repeat,
                                         args.steps, state, args.runs)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=None,
                    help="lattice sizes (default 40 100 200 400; up to 1000 on a GPU)")
    ap.add_argument("--model", default=None, help="ML model name or path (default: "
                    "holstein-f0.5 when shipped, else a stand-in of the paper's architecture)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: one Dask worker per core)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="steps per timed block")
    ap.add_argument("--state", default=None, nargs="+", metavar="STORE[:STEP]",
                    help="start from a stored frame (run 0, first T and f; default the last "
                         "frame), tiled to each L, instead of the hot start: late-quench "
                         "cost. With several, each L starts from the largest frame whose "
                         "size divides it (no seam)")
    ap.add_argument("--runs", type=int, default=1,
                    help="runs batched in one tensor at every L (cdw quench --runs-per-task); "
                         "costs are per site of all runs (default 1)")
    ap.add_argument("--out", default=None,
                    help="JSON to write (default benchmarks/results/scaling-<device>.json)")
    ap.add_argument("--interleaved", action="store_true",
                    help="every L in this one process, in interleaved blocks of whole steps "
                         "(--repeat rounds): the flatness of the per-site cost, robust to a "
                         "machine whose speed drifts; no floor, write or memory columns")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child is not None:
        _child(args)
        return
    sizes = args.L or ([40, 100, 200, 400, 1000] if args.device.startswith("cuda")
                       else [40, 100, 200, 400])
    from cdwdata import ml

    if args.interleaved:
        torch.set_num_threads(args.threads)
        res = interleaved(sizes, args.model or "holstein-f0.5", args.device, args.repeat,
                          args.state)
        res.update({"device": args.device, "torch": torch.__version__,
                    "threads": args.threads, "model": args.model or "holstein-f0.5",
                    "state": " ".join(args.state) if args.state else "hot start"})
        print(f"| L | steps per block | step (ns/site), median | min | ratio to L = "
              f"{max(sizes)} |\n| --- | --- | --- | --- | --- |")
        for r in res["rows"]:
            print(f"| {r['L']} | {r['steps_per_block']} | {r['step_per_site_ns_median']:.0f} | "
                  f"{r['step_per_site_ns_min']:.0f} | {r['ratio_to_largest']:.2f} |")
        out = Path(args.out) if args.out else RESULTS / "scaling-interleaved.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {out}")
        return
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    standin = False
    if model is None:
        if "holstein-f0.5" in ml.list_models():
            model = "holstein-f0.5"
        else:
            model, standin = _standin_model(Path(tmp.name), 0.5), True
    rows = []
    for L in sizes:
        cmd = [sys.executable, __file__, "--child", str(L), "--model", model, "--device",
               args.device, "--threads", str(args.threads), "--repeat", str(args.repeat),
               "--runs", str(args.runs)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        state = state_for_size(args.state, L) if args.state else None
        if state:
            cmd += ["--state", state]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(f"L={L} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            break
        row = json.loads(line[len("RESULT "):])
        row["wall_s"] = time.perf_counter() - t0
        row["state"] = state or "hot start"
        rows.append(row)
        print(f"L={L}: {row['step_per_site_ns']:.0f} ns/site-step, ratio {row['ratio']:.2f} "
              f"({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    info = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": args.device if not args.device.startswith("cuda")
        else torch.cuda.get_device_name(),
        "torch": torch.__version__, "threads": args.threads,
        "model": "stand-in (random weights, paper architecture)" if standin else model,
        "compute_dtype": "float32", "runs_per_batch": args.runs,
        "state": " ".join(args.state) if args.state else "hot start",
        "rows": rows,
    }
    mem = "GPU peak (MB)" if args.device.startswith("cuda") else "RSS growth (MB)"
    print(f"\n{info['device']}, {info['machine']}, torch {info['torch']}, "
          f"{args.threads} thread(s), model: {info['model']}, {args.runs} run(s) per "
          f"batch\n")
    print(f"| L | sites | step (ns/site) | force (ns/site) | MLP floor (ns/site) | ratio | "
          f"frame write (ms) | {mem} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        m = r.get("gpu_peak_MB", r["rss_growth_MB"])
        print(f"| {r['L']} | {r['sites']} | {r['step_per_site_ns']:.0f} | "
              f"{r['force_per_site_ns']:.0f} | {r['floor_per_site_ns']:.0f} | "
              f"{r['ratio']:.2f} | {1e3 * r['frame_write_s']:.1f} | {m:.0f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else \
        RESULTS / f"scaling-{'cuda' if args.device.startswith('cuda') else 'cpu'}.json"
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"\nwrote {out}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
