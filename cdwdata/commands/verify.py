"""``cdw verify STORE``: find missing or corrupt chunks of a store.

Exit code 0 when the store is sound, 2 when it is damaged (one line per damaged chunk, then a
summary). ``cdw analyze`` and every ``--resume`` run the same check.
"""

from __future__ import annotations


def configure(p) -> None:
    p.add_argument("store", help="path of a cdwdata zarr store")
    p.add_argument("--quick", action="store_true",
                   help="only look for missing chunks (reads no data)")
    p.add_argument("--max-lines", type=int, default=50,
                   help="damaged chunks listed at most (default 50)")


def run(args) -> int:
    import sys

    from cdwdata.store import verify

    report = verify(args.store, read=not args.quick)
    if report.ok:
        how = "present" if args.quick else "present and readable"
        print(f"{args.store}: sound ({report.chunks} chunks checked, all {how})")
        return 0
    for item in report.damage[:args.max_lines]:
        print(f"{args.store}: {item}")
    if len(report.damage) > args.max_lines:
        print(f"... and {len(report.damage) - args.max_lines} more")
    runs = {d.cell for d in report.damage if d.cell is not None}
    what = f" in {len(runs)} run(s)" if runs else ""
    print(f"cdw verify: {args.store} is damaged: {len(report.damage)} chunk(s){what}; "
          + ("`--resume` of the command that made it recomputes the damaged runs"
             if runs and len(runs) == len({d.cell for d in report.damage}) else
             "replace it (--overwrite)"), file=sys.stderr)
    return 2
