"""ML-Langevin against ED-Langevin: the same hot starts and the same thermal noise.

Both stores are made by ``cdw quench`` with the same L, T, f, runs, steps and seed (run keys
derive from (seed, T, f, run), so run r of both stores starts from the same state and sees the
same noise). Per filling this compares, averaged over t in ``--window`` and then over runs:
the domain size L of eq. 15, <|phi_i|> (eq. 12), the mean density (electron conservation) and
the equal-time correlation C(r, t) of Q at t = 5, 15, 50, 100 (paper Fig. 3), with its
run-to-run standard error.

Usage::

    cdw quench --model ed --dtype float32 --L 40 --T 0.1 --f 0.5 0.4 0.3 --runs 4 \\
        --steps 2000 --save-every 20 --seed 1001 --out data/ed-quench-heldout-L40.zarr
    cdw quench --model holstein-f{f} --L 40 --T 0.1 --f 0.5 0.4 0.3 --runs 4 --steps 2000 \\
        --save-every 20 --seed 1001 --frame-vars Q n --out runs/ml-vs-ed-L40.zarr
    python benchmarks/ml_vs_ed_dynamics.py --ed data/ed-quench-heldout-L40.zarr \\
        --ml runs/ml-vs-ed-L40.zarr --out benchmarks/results/ml-vs-ed-dynamics.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from cdwdata import analysis, store

#: Times at which C(r, t) of Q is compared (paper Fig. 3 style).
C_TIMES = (5.0, 15.0, 50.0, 100.0)


def complete_runs(path) -> dict[str, set[int]]:
    """Runs whose every frame is written, per filling (key f"{f:g}")."""
    ds = store.open_dataset(path)
    done = ds.frames_done.values
    return {f"{f:g}": {r for r in range(ds.sizes["run"]) if done[0, jf, r] >= ds.sizes["step"]}
            for jf, f in enumerate(ds["f"].values)}


def summarise(path, window: tuple[float, float], runs_by_f: dict[str, set[int]]) -> dict:
    ds = store.open_dataset(path)
    n = ds["n"]
    t = ds["time"].values
    sel = (t >= window[0]) & (t <= window[1])
    out = {}
    for jf, f in enumerate(ds["f"].values):
        runs = sorted(runs_by_f.get(f"{f:g}", ()))
        if not runs:
            continue
        nf = n.isel(T=0, f=jf, run=runs).load()
        phi = analysis.order_parameter(nf)
        S = analysis.structure_factor(nf, f=float(f))
        Ld = analysis.domain_size(S)
        Qf = ds["Q"].isel(T=0, f=jf, run=runs)
        C = analysis.correlation_function(Qf.sel(step=[int(round(tc / float(ds.attrs["dt"])))
                                                       for tc in C_TIMES]).load())
        absphi = np.abs(phi).mean(("x", "y"))
        out[f"{f:g}"] = {
            "runs": runs,
            "L_mean": float(Ld.isel(step=sel).mean()),
            "L_by_run": Ld.isel(step=sel).mean("step").values.tolist(),
            "absphi_mean": float(absphi.isel(step=sel).mean()),
            "absphi_by_run": absphi.isel(step=sel).mean("step").values.tolist(),
            "density_drift_max": float(np.abs(nf.mean(("x", "y")) - f).max()),
            "C_r": C.mean("run").values.tolist(), "r": C["r"].values.tolist(),
            "C_r_sem": (C.std("run") / np.sqrt(max(len(runs) - 1, 1))).values.tolist(),
            "C_times": list(C_TIMES),
            "L_t": Ld.mean("run").values.tolist(), "time": t.tolist(),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ed", required=True, help="ED-Langevin trajectory store")
    ap.add_argument("--ml", required=True, help="ML-Langevin store with the same seeds")
    ap.add_argument("--window", type=float, nargs=2, default=[50.0, 100.0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "ml-vs-ed-dynamics.json"))
    args = ap.parse_args()
    a_ed, a_ml = store.read_attrs(args.ed), store.read_attrs(args.ml)
    for key in ("L", "seed", "steps", "save_every", "params_json"):
        if a_ed[key] != a_ml[key]:
            raise SystemExit(f"the stores differ in {key}: {a_ed[key]} vs {a_ml[key]}")
    a, b = complete_runs(args.ed), complete_runs(args.ml)
    both = {f: a[f] & b.get(f, set()) for f in a}
    ed = summarise(args.ed, tuple(args.window), both)
    ml = summarise(args.ml, tuple(args.window), both)
    rows = []
    print(f"window t = {args.window[0]:g}..{args.window[1]:g}, model {a_ml.get('model')}")
    print("| f | runs | L ED | L ML | L ML/ED - 1 | <abs phi> ED | <abs phi> ML | ratio - 1 | "
          "max density drift ML | C(r,t) max diff / C(0) (r <= 6) | C diff rms / s.e. |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for f in sorted(ed, reverse=True):
        e, m = ed[f], ml[f]
        ce, cm = np.asarray(e["C_r"]), np.asarray(m["C_r"])  # (times, r)
        se = np.hypot(np.asarray(e["C_r_sem"]), np.asarray(m["C_r_sem"]))
        r = np.asarray(e["r"])
        near = (r <= 6)
        # largest |C_ML - C_ED| over r <= 6 and the compared times, relative to C_ED(r = 0)
        cdiff = float(np.max(np.abs(cm[:, near] - ce[:, near]) / np.abs(ce[:, :1])))
        c_over_se = float(np.sqrt(np.mean(((cm[:, near] - ce[:, near]) /
                                           np.maximum(se[:, near], 1e-12)) ** 2)))
        row = {"f": float(f), "runs": len(e["runs"]), "L_ed": e["L_mean"], "L_ml": m["L_mean"],
               "L_rel": m["L_mean"] / e["L_mean"] - 1, "phi_ed": e["absphi_mean"],
               "phi_ml": m["absphi_mean"], "phi_rel": m["absphi_mean"] / e["absphi_mean"] - 1,
               "drift_ml": m["density_drift_max"], "drift_ed": e["density_drift_max"],
               "C_rel_max": cdiff, "C_rms_over_sem": c_over_se}
        rows.append(row)
        print(f"| {f} | {row['runs']} | {row['L_ed']:.3f} | {row['L_ml']:.3f} | "
              f"{100 * row['L_rel']:+.1f}% | {row['phi_ed']:.4f} | {row['phi_ml']:.4f} | "
              f"{100 * row['phi_rel']:+.1f}% | {row['drift_ml']:.1e} | {100 * cdiff:.1f}% | "
              f"{c_over_se:.2f} |")
    out = {"benchmark": "ML-Langevin vs ED-Langevin, same hot starts and noise",
           "ed": args.ed, "ml": args.ml, "model": a_ml.get("model"),
           "window": args.window, "rows": rows, "ed_detail": ed, "ml_detail": ml,
           "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
