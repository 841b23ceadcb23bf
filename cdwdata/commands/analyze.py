"""``cdw analyze STORE``: phi, S(k,t), S(q,t), L(t), Porod slopes and alpha, written to zarr.

The store is verified first (a damaged store is refused: exit 2, one line); the outputs appear
only once all of them are complete.
"""

from __future__ import annotations

from cdwdata.commands import command_line


def configure(p) -> None:
    from cdwdata.analysis import LARGE_Q, POROD_QL

    p.add_argument("store", help="trajectory store (cdw quench / cdw ed-quench output)")
    p.add_argument("--out", default=None,
                   help="output folder (default: STORE without .zarr plus '-analysis')")
    p.add_argument("--window", type=float, nargs=2, metavar=("T_MIN", "T_MAX"), default=None,
                   help="growth-exponent fit window in time units (default: the last decade "
                        "of the run, cdwdata.analysis.growth_window)")
    p.add_argument("--porod-qL", type=float, nargs=2, default=POROD_QL,
                   help="intermediate Porod window in units of qL (default %(default)s)")
    p.add_argument("--large-q", type=float, nargs=2, default=LARGE_Q,
                   help="large-q window in lattice units (default %(default)s)")
    p.add_argument("--boot", type=int, default=200, help="bootstrap resamples for alpha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (only once the new ones are complete)")


def run(args) -> int:
    from cdwdata.store import read_attrs
    from cdwdata.summaries import AnalysisSettings, analyze_store, frames_note, summary_table

    settings = AnalysisSettings(window=tuple(args.window) if args.window else None,
                                porod_qL=tuple(args.porod_qL), large_q=tuple(args.large_q),
                                n_boot=args.boot, seed=args.seed)
    written = analyze_store(args.store, args.out, settings, overwrite=args.overwrite,
                            command=command_line())
    for kind, path in written.items():
        print(f"{kind:18s} {path}")
    window = read_attrs(written["growth-exponents"]).get("window")
    if window:
        print(f"growth exponent fitted over t = {window[0]:g} .. {window[1]:g}"
              + ("" if args.window else " (the default window: the last decade of the run, "
                                        "or every frame after t = 0 of a short run)"))
    print(frames_note(written["growth-exponents"]))
    print(summary_table(written["growth-exponents"]))
    return 0
