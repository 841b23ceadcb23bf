"""How local are the exact forces? A splice test on ED-Langevin quench snapshots.

For a site ``i`` of snapshot ``A`` (run ``a``, step ``s``) the configuration ``C`` keeps
``A`` inside the descriptor's neighbourhood (``|r - r_i|^2 <= r_c^2``) and takes the
exterior from snapshot ``B`` (another run at the same step: a statistically equivalent
environment). Any model that sees only the neighbourhood predicts the same force for ``A``
and ``C``, so the best it can do is the conditional mean: its RMSE is at least about
``rms(F_A - F_C) / sqrt(2)``. The chemical potential is solved for each configuration, so the
test includes the one genuinely global ingredient, mu, whose shift ``|mu_A - mu_C|`` is
reported too.

Sites are drawn at random (``--pick random``), or among the sites whose exact density is
fractional, ``0.05 < n_i < 0.95`` (``--pick partial``): late in a quench these are the sites
on domain walls with levels near mu, the ones whose occupation the global chemical potential
decides. The table then also gives the fraction of such sites and the floor they put on the
RMSE over all sites, ``sqrt(fraction) * floor``.

Usage::

    python benchmarks/locality.py --store data/trainset-L40-quench.zarr [--sites 12]
    python benchmarks/locality.py --store data/trainset-L40-late-quench.zarr \
        --steps 600 1500 3000 --pick partial --out benchmarks/results/locality-late.json
    python benchmarks/locality.py --store data/ed-quench-heldout-L40.zarr --f 0.3 \
        --steps 1000 2000 --r2 13 --pick partial --fixed-mu \
        --out benchmarks/results/locality-fixed-mu-f0.3.json

Writes ``benchmarks/results/locality.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from cdwdata import ed, store
from cdwdata.params import HolsteinParams


def splice_test(qa: np.ndarray, qb: np.ndarray, T: float, f: float, params: HolsteinParams,
                r2: float, sites: np.ndarray, fixed_mu: bool = False) -> dict:
    """Force and mu changes at ``sites`` when the exterior of each site is taken from qb.

    With ``fixed_mu`` the spliced configuration is also evaluated at snapshot A's own chemical
    potential (same diagonalisation): the grand-canonical locality of docs/conventions.md.
    """
    L = qa.shape[-1]
    x, y = np.indices((L, L))
    ra = ed.solve(qa, T, f, params)
    dF, dmu, dn_fixed = [], [], []
    for i, j in sites:
        dx = (x - i + L // 2) % L - L // 2
        dy = (y - j + L // 2) % L - L // 2
        c = np.where(dx * dx + dy * dy <= r2, qa, qb)
        sp = ed.spectrum(c, params)
        mu_c = sp.chemical_potential(np.full((1, 1), T), np.full((1, 1), f))
        n_c = sp.density(mu_c, np.full((1, 1), T))[0, 0]
        dF.append(float(params.g * (ra.n[i, j] - n_c[i, j])))  # same Q inside: elastic equal
        dmu.append(float(abs(ra.mu - mu_c[0, 0])))
        if fixed_mu:
            n_f = sp.density(np.full((1, 1), float(ra.mu)), np.full((1, 1), T))[0, 0]
            dn_fixed.append(float(ra.n[i, j] - n_f[i, j]))
    dF = np.asarray(dF)
    out = {"rms_dF": float(np.sqrt(np.mean(dF**2))), "max_dF": float(np.abs(dF).max()),
           "max_dn": float(np.abs(dF).max() / params.g),
           "rmse_floor": float(np.sqrt(np.mean(dF**2) / 2)),
           "mean_dmu": float(np.mean(dmu)), "n_sites": len(dF)}
    if fixed_mu:
        out["max_dn_fixed_mu"] = float(np.abs(dn_fixed).max())
        out["rms_dn_fixed_mu"] = float(np.sqrt(np.mean(np.square(dn_fixed))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="data/trainset-L40-quench.zarr",
                    help="ED-Langevin trajectory store (e.g. a training set's quenches)")
    ap.add_argument("--f", type=float, default=0.5)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 30, 60, 100, 150, 200, 300])
    ap.add_argument("--r2", type=float, nargs="+", default=[13.0, 25.0],
                    help="squared radii of the kept neighbourhood (13: the descriptor's)")
    ap.add_argument("--sites", type=int, default=12, help="sites per (step, radius)")
    ap.add_argument("--runs", type=int, nargs=2, default=[0, 1], help="runs A and B")
    ap.add_argument("--pick", choices=("random", "partial"), default="random",
                    help="random sites, or sites with fractional density 0.05 < n < 0.95")
    ap.add_argument("--fixed-mu", action="store_true",
                    help="also evaluate each spliced configuration at snapshot A's own mu "
                         "(grand-canonical locality; same diagonalisation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "locality.json"))
    args = ap.parse_args()
    ds = store.open_dataset(args.store)
    params = HolsteinParams.from_dict(ds.attrs)
    T = float(ds["T"].values[0])
    cell = ds.sel(T=T, f=args.f)
    L = ds.sizes["x"]
    rng = np.random.default_rng(args.seed)
    rows = []
    print("| step | t | r_c^2 | rms dF | max dF | max dn (fixed f) | max dn (fixed mu) | "
          "mean dmu | partial sites | floor over all sites |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for step in args.steps:
        qa = cell["Q"].sel(step=step).isel(run=args.runs[0]).values.astype(float)
        qb = cell["Q"].sel(step=step).isel(run=args.runs[1]).values.astype(float)
        n = ed.solve(qa, T, args.f, params).n
        partial = np.argwhere((n > 0.05) & (n < 0.95))
        frac = len(partial) / n.size
        if args.pick == "partial" and len(partial):
            sites = partial[rng.permutation(len(partial))[:args.sites]]
        else:
            sites = rng.integers(0, L, (args.sites, 2))
        for r2 in args.r2:
            res = splice_test(qa, qb, T, args.f, params, r2, sites, args.fixed_mu)
            res.update(step=step, time=step * params.dt, r2=r2, pick=args.pick,
                       partial_fraction=frac)
            all_sites = (np.sqrt(frac) * res["rmse_floor"] if args.pick == "partial"
                         else res["rmse_floor"])
            res["rmse_floor_all_sites"] = float(all_sites)
            rows.append(res)
            fixed = f"{res['max_dn_fixed_mu']:.1e}" if args.fixed_mu else "-"
            print(f"| {step} | {step * params.dt:g} | {r2:g} | {res['rms_dF']:.4f} | "
                  f"{res['max_dF']:.4f} | {res['max_dn']:.3g} | {fixed} | "
                  f"{res['mean_dmu']:.2e} | {100 * frac:.2f}% | {all_sites:.4f} |", flush=True)
    out = {"benchmark": "locality splice test", "store": args.store, "f": args.f, "T": T,
           "L": L, "runs": args.runs, "pick": args.pick, "fixed_mu": args.fixed_mu,
           "quench_forcefield": ds.attrs.get("forcefield", "ed"), "rows": rows, "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
