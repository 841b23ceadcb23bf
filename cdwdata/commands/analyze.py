"""``cdw analyze STORE``: phi, S(k,t), S(q,t), L(t), Porod slopes and alpha, written to zarr.

It prints the late-time window (the growth window) and, over it: alpha with its bootstrap and
window-sensitivity errors, the collapse quality of S/L^2 vs qL, and the Porod slopes with the
q windows chosen from the data. The store is verified first (a damaged store is refused:
exit 2, one line); the outputs appear only once all of them are complete.
"""

from __future__ import annotations

from cdwdata.commands import command_line


def configure(p) -> None:
    from cdwdata.analysis import LARGE_Q, POROD_QL, POROD_SPAN, POROD_START

    p.add_argument("store", help="trajectory store (cdw quench / cdw ed-quench output)")
    p.add_argument("--out", default=None,
                   help="output folder (default: STORE without .zarr plus '-analysis')")
    p.add_argument("--window", type=float, nargs=2, metavar=("T_MIN", "T_MAX"), default=None,
                   help="growth-exponent fit window in time units, also the late-time window "
                        "of the collapse quality and the pooled Porod slopes (default: the "
                        "last decade of the run, cdwdata.analysis.growth_window)")
    p.add_argument("--porod-qL", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="fix the intermediate Porod window in units of qL(t), e.g. "
                        f"{POROD_QL[0]:g} {POROD_QL[1]:g} (default: chosen from the data per "
                        f"step, q = {POROD_START:g} to {POROD_START * POROD_SPAN:g} times "
                        "2 pi rho, rho the measured wall density, below the large-q window; "
                        "cdwdata.analysis.porod_window)")
    p.add_argument("--large-q", type=float, nargs=2, default=LARGE_Q, metavar=("LO", "HI"),
                   help="large-q window in lattice units (default pi/2 .. pi: wavelengths of "
                        "2 to 4 lattice spacings, complete shells around Q)")
    p.add_argument("--T", type=float, nargs="+", default=None,
                   help="only these temperatures of the store (default: all)")
    p.add_argument("--f", type=float, nargs="+", default=None,
                   help="only these fillings of the store (default: all)")
    p.add_argument("--runs", type=int, nargs="+", default=None,
                   help="only these runs (default: all; e.g. the finished runs of a store "
                        "still being written)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples for alpha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (only once the new ones are complete)")


def run(args) -> int:
    from cdwdata.store import read_attrs
    from cdwdata.summaries import (
        AnalysisSettings,
        analyze_store,
        frames_note,
        late_time_table,
        summary_table,
        wall_table,
    )

    settings = AnalysisSettings(window=tuple(args.window) if args.window else None,
                                porod_qL=tuple(args.porod_qL) if args.porod_qL else None,
                                large_q=tuple(args.large_q), n_boot=args.boot, seed=args.seed)
    written = analyze_store(args.store, args.out, settings, overwrite=args.overwrite,
                            command=command_line(), temperatures=args.T, fillings=args.f,
                            runs=args.runs)
    for kind, path in written.items():
        print(f"{kind:18s} {path}")
    window = read_attrs(written["growth-exponents"]).get("window")
    if window:
        print(f"growth exponent fitted over t = {window[0]:g} .. {window[1]:g}"
              + ("" if args.window else " (the default window: the last decade of the run, "
                                        "or every frame after t = 0 of a short run)"))
    growth = read_attrs(written["growth-exponents"])
    alts = growth.get("alt_windows", [])
    if alts:
        print("window sensitivity: alpha also fitted over "
              + " and ".join(f"t = {lo:g} .. {hi:g}" for lo, hi in alts)
              + "; alpha_window_err = largest |alpha_alt - alpha| (n/a where a window holds too "
                "few frames)")
    print(frames_note(written["growth-exponents"]))
    print(summary_table(written["growth-exponents"]))
    sf = read_attrs(written["structure-factor"])
    print()
    print(f"late-time window t = {window[0]:g} .. {window[1]:g} (the growth window): collapse "
          "spread of S(q,t)/L^2 vs qL (mean squared spread of log S/L^2, smaller is better) "
          "and Porod slopes of the ensemble-mean S(q), one slope pooled over the window")
    print(f"intermediate q window: {sf.get('porod_window_rule', '?')}")
    lq = sf.get("large_q_window")
    if lq:
        print(f"large-q window: q = {lq[0]:.4g} .. {lq[1]:.4g}")
    print(late_time_table(written["structure-factor"]))
    print()
    print("domain walls at the last frame (mean ± spread over runs): anisotropy of the wall "
          "normals (+1 along the axes, -1 along the diagonals, 0 isotropic) and the electron "
          "density on the walls minus the mean (< 0: hole-rich walls)")
    print(wall_table(written["domain-size"]))
    return 0
