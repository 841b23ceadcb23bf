"""``cdw ed-dataset``: ED training set (random + quench snapshots) on a Dask cluster."""

from __future__ import annotations

from cdwdata.commands import add_params, add_store_mode, command_line, params_from


def configure(p) -> None:
    p.add_argument("--L", type=int, default=40, help="lattice size (default 40, as the paper)")
    p.add_argument("--f", type=float, nargs="+", default=[0.5, 0.4, 0.3],
                   help="filling fractions (default 0.5 0.4 0.3)")
    p.add_argument("--T", type=float, default=0.1, help="temperature (default 0.1)")
    p.add_argument("--random", type=int, default=200, help="random samples per filling")
    p.add_argument("--quench-runs", type=int, default=8, help="ED quenches per filling")
    p.add_argument("--quench-steps", type=int, default=500, help="steps of each quench")
    p.add_argument("--quench-save-every", type=int, default=10, help="snapshot interval")
    p.add_argument("--quench-forcefield", default="ed",
                   help="what drives the quenches: 'ed' (default) or an ML model, e.g. "
                        "'holstein-f{f}' ({f} = the filling); ML-driven snapshots get ED labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/trainset.zarr", help="output zarr store")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    p.add_argument("--no-progress", action="store_true")
    add_store_mode(p)
    add_params(p)


def run(args) -> int:
    from cdwdata.trainset import TrainsetConfig, generate

    config = TrainsetConfig(L=args.L, fillings=tuple(args.f), T=args.T, n_random=args.random,
                            quench_runs=args.quench_runs, quench_steps=args.quench_steps,
                            quench_save_every=args.quench_save_every, seed=args.seed,
                            quench_forcefield=args.quench_forcefield,
                            params=params_from(args))
    # generate() checks or creates the stores before it starts (or connects to) the cluster
    path = generate(args.out, config, scheduler=args.scheduler, n_workers=args.workers,
                    resume=args.resume, overwrite=args.overwrite, command=command_line(),
                    progress=not args.no_progress)
    print(f"wrote {path}")
    return 0
