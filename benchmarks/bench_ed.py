"""ED force benchmark: cdwdata.ed.forces vs a bare numpy.linalg.eigh of the same matrix.

Usage::

    python benchmarks/bench_ed.py [--L 40] [--repeat 5] [--gpu-batch 64]

Prints a markdown table and writes ``benchmarks/results/ed.json``. Both timings are taken
interleaved in one process, so the ratio is robust to machine load.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from cdwdata import ed
from cdwdata.params import HolsteinParams, Lattice


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--gpu-batch", type=int, default=64)
    args = ap.parse_args()
    p = HolsteinParams()
    rng = np.random.default_rng(0)
    Q = rng.normal(0, 1.0, (args.L, args.L))
    H = Lattice(args.L).hopping_matrix(p.t)
    H[np.diag_indices_from(H)] = -p.g * Q.ravel()
    ed.forces(Q, 0.1, 0.5)  # warm-up (caches the hopping matrix)
    t_ed, t_eigh = [], []
    for _ in range(args.repeat):
        t_eigh.append(_time(lambda: np.linalg.eigh(H)))
        t_ed.append(_time(lambda: ed.forces(Q, 0.1, 0.5)))
    res = {
        "L": args.L,
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "ed_forces_s": statistics.median(t_ed),
        "bare_eigh_s": statistics.median(t_eigh),
    }
    res["ratio"] = res["ed_forces_s"] / res["bare_eigh_s"]
    try:
        import torch

        res["torch_cpu_forces_s"] = statistics.median(
            [_time(lambda: ed.forces(Q, 0.1, 0.5, backend="torch")) for _ in range(args.repeat)])
        if torch.cuda.is_available():
            Qb = torch.as_tensor(rng.normal(0, 1.0, (args.gpu_batch, args.L, args.L)),
                                 device="cuda")
            ed.solve(Qb[:2], 0.1, 0.5)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            ed.solve(Qb, 0.1, 0.5)
            torch.cuda.synchronize()
            res["gpu"] = torch.cuda.get_device_name()
            res["gpu_per_config_ms"] = 1e3 * (time.perf_counter() - t0) / args.gpu_batch
    except ImportError:
        pass
    print("| quantity | value |\n| --- | --- |")
    for k, v in res.items():
        print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    out = Path(__file__).parent / "results" / "ed.json"
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
