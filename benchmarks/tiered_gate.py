"""Would a cheap network for the gapped sites and the accurate one only at the walls keep the
accuracy? The "tiered" idea for fast inference, measured before building it.

On held-out ED-Langevin frames (40x40, T = 0.1) at each frame's exact mu: the small network's
densities and exact slopes ``dn/dmu`` everywhere; sites with ``|dn/dmu|`` above a gate get the
large network's densities instead. Printed per filling and time band (early t = 5..10, mid
t < 50, late t >= 50): the force RMSE of that combination against the exact forces, of the
large network alone, and the share of sites the large network would still evaluate (which
sets the cost: small network + that share of the large one).

Usage::

    python benchmarks/tiered_gate.py --large data/models/gc-v9 --small data/models/gc-small-a \
        --heldout data/ed-quench-heldout-L40.zarr
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

GATES = (1e-2, 1e-3, 1e-4, 1e-5)


def band(step: int, dt: float) -> str:
    t = step * dt
    return "early" if t <= 10 else ("mid" if t < 50 else "late")


def measure(large: str, small: str, heldout: str, runs=(0, 1), every: int = 80,
            fillings=(0.5, 0.4, 0.3), T: float = 0.1, gates=GATES) -> list[dict]:
    from cdwdata import store
    from cdwdata.ml import load_model
    from cdwdata.ml.inference import DensityPlan

    ds = store.open_dataset(heldout)
    dt = float(ds.attrs.get("dt", 0.05))
    out = []
    for f in fillings:
        big, little = load_model(large, f=f, T=T), load_model(small, f=f, T=T)
        g = big.params.g
        pb, ps = DensityPlan(big.model, T), DensityPlan(little.model, T)
        acc: dict[tuple[str, float], np.ndarray] = {}
        steps = [int(s) for s in ds.step.values if 100 <= s][::max(1, every // 20)]
        for run in runs:
            for step in steps:
                cell = dict(T=T, f=f, run=run, step=step)
                Q = torch.as_tensor(ds.Q.sel(cell).values, dtype=torch.float32)[None]
                n_ex = ds.n.sel(cell).values
                mu = torch.tensor([float(ds.mu.sel(cell))])
                with torch.no_grad():
                    G = big.model.features(Q)
                    nb, _ = pb.bind(G).density_and_slope(mu)
                    ns, ss = ps.bind(G).density_and_slope(mu)
                nb, ns, ss = (t[0].numpy().astype(float) for t in (nb, ns, ss))
                for gate in gates:
                    use_big = np.abs(ss) > gate
                    nc = np.where(use_big, nb, ns)
                    a = acc.setdefault((band(step, dt), gate), np.zeros(4))
                    a += [((nc - n_ex) ** 2).sum(), ((nb - n_ex) ** 2).sum(), use_big.sum(),
                          use_big.size]
        for (b, gate), a in sorted(acc.items()):
            out.append({"f": f, "band": b, "gate": gate,
                        "rmse_tiered": g * float(np.sqrt(a[0] / a[3])),
                        "rmse_large": g * float(np.sqrt(a[1] / a[3])),
                        "large_share": float(a[2] / a[3])})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--large", required=True)
    p.add_argument("--small", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--runs", type=int, nargs="+", default=[0, 1])
    p.add_argument("--every", type=int, default=80, help="every N-th step (frames every 20)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file for the rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.large, args.small, args.heldout, tuple(args.runs), args.every)
    print("| f | t | gate | RMSE tiered | RMSE large alone | large network's share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['f']} | {r['band']} | {r['gate']:g} | {r['rmse_tiered']:.4f} | "
              f"{r['rmse_large']:.4f} | {r['large_share']:.3f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"large": args.large, "small": args.small, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
