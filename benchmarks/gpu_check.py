"""One prepared accelerator check: ML-Langevin throughput from hot starts (eager, and with the
model's torch.compile'd kernels), batched ED, eager against torch.compile for the descriptor
and the Fermi sum, (time permitting) the paper-scale quench ensembles, and then the
throughput again from the last frames of the first ensemble (late in a quench, tiled to each
size), written as JSON (and npz summaries) to ``--out``.

Runs on CPU with tiny sizes too (``--smoke``), which the test suite does, so the script cannot
rot while no GPU is at hand. Needs only torch, numpy, scipy and safetensors (no zarr or Dask):
the paper-scale part computes L(t) (eq. 15), <|phi|> and S(q, t) on the fly instead of storing
trajectories.

Usage (see benchmarks/gpu_check.sh for the device command)::

    python benchmarks/gpu_check.py --out results/ --budget 420
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-smoke     # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def langevin_throughput(model: str, L: int, runs: int, steps: int, device, precision: str,
                        f: float = 0.5, T: float = 0.1, start=None, compile: bool = False
                        ) -> dict:
    """Site-steps per second of batched ML-Langevin steps (a hot start, or ``start``: late
    configurations (R, l, l) tiled to L x L with thermal velocities; then ``steps`` timed);
    ``compile``: the model's torch.compile'd kernels (compiled in the untimed first call,
    whose time is ``init_s``)."""
    from cdwdata import HolsteinParams, dynamics, noise
    from cdwdata.ml import load_model

    p = HolsteinParams()
    ff = load_model(model, f=f, T=T, device=device, precision=precision, compile=compile)
    keys = [noise.run_key(7, T, f, r) for r in range(runs)]
    Q, v = dynamics.hot_start(keys, L, p, device, torch.float32,
                              **({} if start is None else {"T_init": T}))
    if start is not None:
        reps = -(-L // start.shape[-1])
        tiled = start.to(device=device, dtype=torch.float32).repeat(1, reps, reps)[:, :L, :L]
        Q = tiled[torch.arange(runs, device=device) % tiled.shape[0]].contiguous()
    with torch.no_grad():
        t_init = time.perf_counter()
        state = dynamics.init_state(ff, Q, v, keys)
        sync(device)
        t_init = time.perf_counter() - t_init
        for _ in range(3):  # warm-up (and leave the hot start behind)
            state = dynamics.step(state, ff, T, p)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            state = dynamics.step(state, ff, T, p)
        sync(device)
        dt = time.perf_counter() - t0
    total = state.n.double().sum((-2, -1))
    drift = float((total - f * L * L).abs().max() / (f * L * L))
    return {"L": L, "runs": runs, "steps": steps, "precision": precision, "compile": compile,
            "init_s": t_init,
            "start": "hot start" if start is None else f"late frames ({start.shape[-1]}^2, "
                                                         "tiled)",
            "seconds": dt, "site_steps_per_s": runs * L * L * steps / dt,
            "filling_rel_error": drift, "mu_evaluations_last_step": ff.last_iterations}


def batched_ed(L: int, batch: int, device, repeat: int = 3) -> dict:
    from cdwdata import ed

    rng = np.random.default_rng(0)
    Q = torch.as_tensor(rng.normal(0, 1.5, (batch, L, L)), dtype=torch.float64, device=device)
    ed.solve(Q[:2], 0.1, 0.5)
    sync(device)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        ed.solve(Q, 0.1, 0.5)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return {"L": L, "batch": batch, "seconds": best, "seconds_per_config": best / batch}


def compile_parts(L: int, device, compile_: bool = True) -> dict:
    """Eager against torch.compile for the descriptor and the Fermi sum
    (``bench_compile.py``); a failure to compile is reported, not raised."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_compile import measure

    try:
        return measure(L, blocks=5, compile_=compile_, device=device)
    except Exception as err:  # noqa: BLE001 - the check goes on with its other parts
        return {"L": L, "device": device, "error": f"{type(err).__name__}: {err}"[:2000]}


def paper_ensembles(model: str, L: int, runs: int, steps: int, every: int, cells, device,
                    precision: str, out: Path, deadline: float, finals: dict | None = None
                    ) -> list[dict]:
    """Quench ensembles from hot starts; per saved step: L(t), <|phi|>, S(q,t) (run mean).
    ``finals``: receives the last configurations of every completed cell, by (T, f)."""
    from cdwdata import HolsteinParams, dynamics, noise
    from cdwdata.ml import load_model

    p = HolsteinParams()
    done = []
    x = torch.arange(L, device=device)
    k = 2 * math.pi * torch.fft.fftfreq(L, d=1.0, device=device)
    kx, ky = torch.meshgrid(k, k, indexing="ij")
    wrap = lambda a: (a + math.pi) % (2 * math.pi) - math.pi  # noqa: E731
    qabs = torch.sqrt(wrap(kx - math.pi) ** 2 + wrap(ky - math.pi) ** 2)
    stagger = (-1.0) ** (x[:, None] + x[None, :]).double()
    for T, f in cells:
        if time.perf_counter() > deadline:
            break
        ff = load_model(model, f=f, T=T, device=device, precision=precision)
        keys = [noise.run_key(1000, T, f, r) for r in range(runs)]
        Q, v = dynamics.hot_start(keys, L, p, device, torch.float32)
        rec_t, rec_L, rec_phi, rec_S = [], [], [], []
        with torch.no_grad():
            state = dynamics.init_state(ff, Q, v, keys)
            t0 = time.perf_counter()
            for s in range(steps + 1):
                if s % every == 0:
                    n = state.n.double()
                    nb = sum(torch.roll(n, sh, d) for sh in (1, -1) for d in (-2, -1))
                    phi = (n - 0.25 * nb) * stagger
                    S = torch.fft.fft2(n - f).abs() ** 2 / (L * L) ** 2
                    Ld = S.sum((-2, -1)) / (S * qabs).sum((-2, -1))
                    rec_t.append(s * p.dt)
                    rec_L.append(Ld.cpu().numpy())
                    rec_phi.append(phi.abs().mean((-2, -1)).cpu().numpy())
                    rec_S.append(S.mean(0).cpu().numpy().astype(np.float32))
                if s == steps or time.perf_counter() > deadline:
                    break
                state = dynamics.step(state, ff, T, p)
            sync(device)
            wall = time.perf_counter() - t0
        name = f"paper-T{T:g}-f{f:g}"
        np.savez_compressed(out / f"{name}.npz", time=np.asarray(rec_t), L=np.asarray(rec_L),
                            absphi=np.asarray(rec_phi), S_mean=np.asarray(rec_S))
        done.append({"T": T, "f": f, "L": L, "runs": runs, "steps_done": int(s),
                     "wall_s": wall, "site_steps_per_s": runs * L * L * s / max(wall, 1e-9),
                     "file": f"{name}.npz"})
        if finals is not None and s == steps:
            finals[(T, f)] = state.Q.detach().clone()
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-f0.5")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.budget
    sizes = [(16, 2, 5)] if args.smoke else [(200, 16, 50), (500, 4, 30), (1000, 1, 20)]
    report = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(0)
              if device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "model": args.model, "langevin": [], "ed": [],
              "compile": [], "paper": []}
    name = out / "gpu-check.json"

    def save():
        report["elapsed_s"] = time.perf_counter() - start
        name.write_text(json.dumps(report, indent=1) + "\n")

    for precision in ("float32", "bf16"):
        for L, runs, steps in sizes:
            if time.perf_counter() > deadline:
                break
            row = langevin_throughput(args.model, L, runs, steps, device, precision)
            print(json.dumps(row), flush=True)
            report["langevin"].append(row)
            save()
    # the compiled network and Fermi sum (cdwdata.ml.compiled), at the largest and smallest
    # size; a failure to compile is reported, not raised
    for L, runs, steps in [sizes[-1], sizes[0]] if not args.smoke else sizes:
        if time.perf_counter() > deadline - 240:
            break
        try:
            row = langevin_throughput(args.model, L, runs, steps, device, "float32",
                                      compile=True)
        except Exception as err:  # noqa: BLE001 - reported with the other numbers
            row = {"L": L, "runs": runs, "precision": "float32", "compile": True,
                   "error": f"{type(err).__name__}: {err}"[:2000]}
        print(json.dumps(row), flush=True)
        report["langevin"].append(row)
        save()
    for batch in ([2] if args.smoke else [64, 256]):
        if time.perf_counter() > deadline:
            break
        row = batched_ed(8 if args.smoke else 40, batch, device)
        print(json.dumps(row), flush=True)
        report["ed"].append(row)
        save()
    if time.perf_counter() < deadline - 120:  # torch.compile of the descriptor and Fermi sum
        report["compile"].append(compile_parts(16 if args.smoke else 1000, device,
                                               compile_=not args.smoke))
        print(json.dumps(report["compile"][-1]), flush=True)
        save()
    cells = [(0.1, 0.5), (0.2, 0.5), (0.3, 0.5), (0.1, 0.4), (0.1, 0.3)]
    finals: dict = {}
    late = 60 if args.smoke else 45  # seconds kept for the late-quench rows
    if args.smoke:
        report["paper"] = paper_ensembles(args.model, 16, 2, 10, 5, cells[:2], device,
                                          "float32", out, deadline - late, finals)
    else:
        report["paper"] = paper_ensembles(args.model, 200, 16, 20000, 100, cells, device,
                                          "float32", out, deadline - late, finals)
    save()
    if (0.1, 0.5) in finals:  # late in a quench: the last frames of the first cell, tiled
        size = finals[(0.1, 0.5)].shape[-1]
        for L, runs, steps in sizes:
            if L % size:  # tiled without a seam only
                continue
            row = langevin_throughput(args.model, L, runs, steps, device, "float32",
                                      start=finals[(0.1, 0.5)])
            print(json.dumps(row), flush=True)
            report["langevin"].append(row)
            save()
    print(f"wrote {name}", flush=True)


if __name__ == "__main__":
    main()
