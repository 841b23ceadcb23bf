"""``cdw ed-quench``: ED-Langevin thermal quenches, frames written incrementally to zarr."""

from __future__ import annotations

from cdwdata.commands import add_params, add_store_mode, command_line, params_from


def configure(p) -> None:
    p.add_argument("--L", type=int, default=12, help="lattice size (even, >= 4; default 12)")
    p.add_argument("--T", type=float, nargs="+", default=[0.1],
                   help="bath temperature(s) (default 0.1)")
    p.add_argument("--f", type=float, nargs="+", default=[0.5],
                   help="filling fraction(s) (default 0.5)")
    p.add_argument("--runs", type=int, default=2, help="runs per (T, f) (default 2)")
    p.add_argument("--steps", type=int, default=200, help="Langevin steps (default 200)")
    p.add_argument("--save-every", type=int, default=10, help="frame interval (default 10)")
    p.add_argument("--seed", type=int, default=0, help="base RNG seed (default 0)")
    p.add_argument("--out", default="runs/ed-quench.zarr", help="output zarr store")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_store_mode(p)
    add_params(p)


def run(args) -> int:
    from cdwdata import store
    from cdwdata.errors import StoreError
    from cdwdata.quench import QuenchConfig, run_quench

    if args.resume and not store.exists(args.out):
        raise StoreError(f"{args.out}: nothing to resume (no store there); drop --resume to "
                         "start new runs")

    config = QuenchConfig(L=args.L, temperatures=tuple(args.T), fillings=tuple(args.f),
                          runs=args.runs, steps=args.steps, save_every=args.save_every,
                          seed=args.seed, params=params_from(args), forcefield="ed")
    path = run_quench(config, args.out, resume=args.resume, overwrite=args.overwrite,
                      command=command_line(), progress=not args.no_progress)
    print(f"wrote {path}")
    return 0
