"""torch.compile against eager on the two elementwise-heavy parts of an ML force call.

Usage::

    python benchmarks/bench_compile.py [--L 200] [--threads 1] [--blocks 15] [--out JSON]
                                       [--state STORE[:STEP]] [--eager-only]

Parts, at one lattice size in this process:

* ``descriptor``: the IR coefficients and frame codes of every site
  (:func:`cdwdata.descriptor._ir_parts` and the fast frame codes) on fresh tensors, eager and
  compiled; the workspace path of the force field (:func:`~cdwdata.descriptor._features_into`,
  which also applies the frame) for reference;
* ``fermi``: ``n`` and ``dn/dmu`` of every site's levels at the solved mu, the level plan's
  chunked eager sum against one compiled function of the whole (sites, levels) arrays;
* on a GPU also the descriptor compiled with ``mode="reduce-overhead"`` (CUDA graphs).

Timings are medians (and minima) of ``--blocks`` interleaved blocks of 5 calls. The JSON also
records whether the compiled descriptor gives the same bits and the largest difference of the
compiled Fermi sum. Without ``--state`` the configuration is a seeded random one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _configuration(L: int, state: str | None):
    import numpy as np

    if state:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_scaling import stored_state

        return stored_state(state, L)
    return np.random.default_rng(0).normal(0.0, 1.0, (L, L))


def _blocks(fns: dict, blocks: int, device: str = "cpu") -> dict:
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            sync()
            times[k].append((time.perf_counter() - t0) / 5 * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


def measure(L: int, blocks: int = 15, state: str | None = None, compile_: bool = True,
            model: str = "holstein-gc-v12", device: str = "cpu") -> dict:
    import torch

    from cdwdata import descriptor as D
    from cdwdata import ml

    Q = torch.as_tensor(_configuration(L, state), dtype=torch.float32, device=device)[None]
    tab = D._tables_for(Q)
    ws = D.Workspace(Q.shape, device=device)

    def parts(Q):
        f1, ex, ey = D._ir_parts(Q)
        code, tie = D._fast_codes(D._wsum(list(ex), tab.dipole, range(11)),
                                  D._wsum(list(ey), tab.dipole, range(11)))
        return f1, ex, ey, code, tie

    ff = ml.load_model(model, f=0.5, T=0.1, device=device)
    ff.evaluate_with_mu(Q)
    plan = ff.plan()
    K = plan.w.shape[-1]
    w, e = plan.w.view(-1, K), plan.e.view(-1, K)
    mu = ff.last_mu.reshape(-1).to(torch.float32)[0]
    inv_T = 1.0 / plan.T
    n_eager, dn_eager = (torch.empty(e.shape[0], device=device) for _ in range(2))

    def fermi(e, w, mu, inv_T: float):
        s = torch.sigmoid((mu - e) * inv_T)
        t = w * s
        return t.sum(-1).clamp(0.0, 1.0), (t * (1.0 - s)).sum(-1) * inv_T

    out = {"L": L, "sites": L * L, "levels": K, "model": model, "device": device}
    with torch.no_grad():
        fns = {"descriptor_workspace": lambda: D._features_into(Q, tab, ws),
               "descriptor_eager": lambda: parts(Q),
               "fermi_eager_chunked": lambda: plan._fermi_rows(e, w, mu, n_eager, dn_eager)}
        if compile_:
            t0 = time.perf_counter()
            parts_c = torch.compile(parts, dynamic=False)
            same = all(torch.equal(a, b) for a, b in zip(parts(Q), parts_c(Q), strict=True))
            fermi_c = torch.compile(fermi, dynamic=True)
            n_c, dn_c = fermi_c(e, w, mu, inv_T)
            out["compile_s"] = time.perf_counter() - t0
            plan._fermi_rows(e, w, mu, n_eager, dn_eager)
            out["descriptor_compiled_same_bits"] = bool(same)
            out["fermi_compiled_max_abs_diff_n"] = float((n_c - n_eager).abs().max())
            fns["descriptor_compiled"] = lambda: parts_c(Q)
            fns["fermi_compiled"] = lambda: fermi_c(e, w, mu, inv_T)
            if device.startswith("cuda"):  # CUDA graphs on top: one launch per call
                try:
                    parts_g = torch.compile(parts, mode="reduce-overhead", dynamic=False)
                    for _ in range(3):  # warm-up, then recorded
                        parts_g(Q)
                    fns["descriptor_compiled_cudagraphs"] = lambda: parts_g(Q)
                except Exception as err:  # noqa: BLE001 - reported with the other numbers
                    out["cudagraphs_error"] = f"{type(err).__name__}: {err}"[:2000]
        out["times"] = _blocks(fns, blocks, device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--state", default=None, metavar="STORE[:STEP]")
    ap.add_argument("--model", default="holstein-gc-v12")
    ap.add_argument("--eager-only", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=None,
                    help="JSON to write (default benchmarks/results/compile-cpu.json)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    row = measure(args.L, args.blocks, args.state, not args.eager_only, args.model)
    row.update({"threads": args.threads, "torch": torch.__version__,
                "state": args.state or "random (seed 0)"})
    print("| part | median (ms) | min (ms) |\n| --- | --- | --- |")
    for k, v in row["times"].items():
        print(f"| {k} | {v['median_ms']:.2f} | {v['min_ms']:.2f} |")
    out = Path(args.out) if args.out else RESULTS / "compile-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
