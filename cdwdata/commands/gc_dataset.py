"""``cdw gc-dataset``: grand-canonical training set, exact n_i at many (mu, T) per configuration."""

from __future__ import annotations

from cdwdata.commands import add_params, add_store_mode, command_line, params_from


def configure(p) -> None:
    p.add_argument("--L", type=int, default=40, help="lattice size (default 40)")
    p.add_argument("--random", type=int, default=0, help="random configurations (default 0)")
    p.add_argument("--frames", nargs="+", default=[], metavar="STORE",
                   help="trajectory stores (ED- or ML-driven quenches) whose frames are labelled")
    p.add_argument("--frame-f", type=float, nargs="+", default=[],
                   help="only frames of these fillings (default: all); only runs completely "
                        "written when the set is created are used")
    p.add_argument("--frame-runs", type=int, nargs="+", default=[],
                   help="only these runs of each store (default: every completely written run)")
    p.add_argument("--min-step", type=int, default=1,
                   help="use frames at step >= this (default 1: skip the hot start)")
    p.add_argument("--every", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--labels", type=int, default=16,
                   help="(mu, T) labels per configuration (default 16)")
    p.add_argument("--T", type=float, nargs="+", default=[0.1, 0.2, 0.3],
                   help="electron temperatures of the labels (default 0.1 0.2 0.3)")
    p.add_argument("--T-weights", type=float, nargs="+", default=None,
                   help="relative weights of --T (default 2 1 1 for three values, else equal)")
    p.add_argument("--f-range", type=float, nargs=2, default=[0.25, 0.55],
                   help="fillings whose exact mu the labels take (default 0.25 0.55)")
    p.add_argument("--p-near", type=float, default=0.5,
                   help="share of a frame's labels drawn near its own filling (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/gcset.zarr", help="output zarr store")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    p.add_argument("--no-progress", action="store_true")
    add_store_mode(p)
    add_params(p)


def run(args) -> int:
    from cdwdata.gcdata import GCSetConfig, generate

    weights = args.T_weights
    if weights is None:
        weights = [2.0, 1.0, 1.0] if len(args.T) == 3 else [1.0] * len(args.T)
    config = GCSetConfig(L=args.L, n_random=args.random, frames=tuple(args.frames),
                         min_step=args.min_step, every=args.every,
                         frame_fillings=tuple(args.frame_f),
                         frame_runs=tuple(args.frame_runs), n_labels=args.labels,
                         temperatures=tuple(args.T), T_weights=tuple(weights),
                         f_range=tuple(args.f_range), p_near=args.p_near, seed=args.seed,
                         params=params_from(args))
    path = generate(args.out, config, resume=args.resume, overwrite=args.overwrite,
                    command=command_line(), progress=not args.no_progress,
                    scheduler=args.scheduler, n_workers=args.workers)
    print(f"wrote {path}")
    return 0
