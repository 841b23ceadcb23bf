"""``cdw quench``: ML-Langevin thermal-quench ensembles on Dask (CPU or GPU workers).

Every (T, f, run) is an independent Langevin run from a hot start, written frame by frame
into one preallocated zarr store with dims (T, f, run, step, x, y). ``--resume`` continues
every unfinished run from its last written frame (bit for bit the same as an uninterrupted
run) and reads every setting it is not given from the store; ``--resume --add-runs N`` (or a
larger ``--runs``) adds runs without touching the existing ones.
"""

from __future__ import annotations

from cdwdata.commands import add_store_mode, command_line
from cdwdata.ml.options import COMPUTE_DTYPES, PRECISIONS

#: Defaults of a new store (``--resume`` takes them from the store instead): a laptop-sized
#: job (a few minutes on 2 cores); the paper's 200x200, 20000-step runs are the pipeline's
#: ``full`` preset or explicit options.
DEFAULTS = {"L": 100, "T": [0.1], "f": [0.5], "runs": 2, "steps": 2000, "save_every": 50,
            "seed": 0, "model": "holstein-f{f}", "frame_vars": ["Q", "n"],
            "frame_dtype": "float32", "device": "cpu"}
_PARAMS = (("t", "hopping"), ("g", "electron-lattice coupling"), ("k", "spring constant"),
           ("kappa", "nearest-neighbour Q coupling"), ("mass", "oscillator mass"),
           ("gamma", "Langevin damping rate"), ("dt", "time step"))


def configure(p) -> None:
    d = DEFAULTS
    p.add_argument("--L", type=int, help=f"lattice size (even; default {d['L']})")
    p.add_argument("--T", type=float, nargs="+", help="bath temperature(s) (default 0.1)")
    p.add_argument("--f", type=float, nargs="+", help="filling fraction(s) (default 0.5)")
    p.add_argument("--runs", type=int, help=f"runs per (T, f) (default {d['runs']})")
    p.add_argument("--add-runs", type=int, default=0, metavar="N",
                   help="with --resume: add N runs per (T, f); existing runs are untouched")
    p.add_argument("--steps", type=int, help=f"Langevin steps (default {d['steps']})")
    p.add_argument("--save-every", type=int,
                   help=f"frame interval in steps (default {d['save_every']})")
    p.add_argument("--seed", type=int, help="base RNG seed (default 0); run r of (T, f) uses "
                   "a key derived from (seed, T, f, r)")
    p.add_argument("--model", help="force field: an ML model name or path ('{f}' is replaced "
                   "by the filling; default holstein-f{f}, the shipped model of each f), "
                   "'ed' (exact diagonalisation, small L only) or 'tdgl' (toy)")
    p.add_argument("--frame-vars", nargs="+", choices=["Q", "v", "n", "F"],
                   help="variables stored every frame (default: Q n)")
    p.add_argument("--frame-dtype", choices=COMPUTE_DTYPES,
                   help="storage dtype of frames (default float32; checkpoints are float64)")
    p.add_argument("--dtype", choices=COMPUTE_DTYPES,
                   help="compute dtype of the hot loop (default float32 for ML models, "
                   "float64 for ed/tdgl)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="hidden layers of the grand-canonical model in float32 (default) or "
                        "bf16 (the layers that see mu and the output stay float32)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="run a level model's network and Fermi sum as torch.compile'd kernels "
                        "(each worker compiles once, ~10 s; needs a C++ compiler on a CPU, "
                        "triton on a GPU; rounds differently, so a store resumes with the "
                        "setting it was made with)")
    p.add_argument("--device", help="torch device of the hot loop: cpu (default) or cuda "
                   "(one Dask worker per GPU, pinned with CUDA_VISIBLE_DEVICES)")
    p.add_argument("--out", default="runs/quench.zarr", help="output zarr store")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler (default: a local cluster on "
                   "127.0.0.1 sized to this machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="local workers (default: one per core, or one per GPU)")
    p.add_argument("--runs-per-task", type=int, default=None,
                   help="runs batched in one task (default 1 on CPU; on a GPU as many as "
                   "fit 2M sites)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_store_mode(p)
    g = p.add_argument_group("model parameters (default: HolsteinParams, or the store's)")
    for name, help_ in _PARAMS:
        g.add_argument(f"--{name}", type=float, default=None, help=help_)


def build_config(args):
    """QuenchConfig from the arguments; with --resume, unset options come from the store."""
    from cdwdata import store
    from cdwdata.errors import ParameterError
    from cdwdata.params import HolsteinParams
    from cdwdata.quench import BUILTIN_FORCEFIELDS, QuenchConfig

    if args.add_runs and not args.resume:
        raise ParameterError("--add-runs needs --resume (it grows an existing store)")
    if args.add_runs < 0:
        raise ParameterError(f"--add-runs={args.add_runs} must be >= 0")
    if args.add_runs and args.runs is not None:
        raise ParameterError("give either --runs (the new total) or --add-runs, not both")
    base = None
    if args.resume and not store.exists(args.out):
        from cdwdata.errors import StoreError

        raise StoreError(f"{args.out}: nothing to resume (no store there); drop --resume to "
                         "start a new ensemble")
    if args.resume:
        base = QuenchConfig.from_attrs(store.read_attrs(args.out))
    given = {
        "L": args.L, "temperatures": args.T, "fillings": args.f, "runs": args.runs,
        "steps": args.steps, "save_every": args.save_every, "seed": args.seed,
        "forcefield": args.model, "frame_vars": args.frame_vars,
        "frame_dtype": args.frame_dtype, "compute_dtype": args.dtype, "device": args.device,
        "precision": args.precision, "compile": args.compile,
    }
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()
             if v is not None}
    pgiven = {name: getattr(args, name) for name, _ in _PARAMS
              if getattr(args, name) is not None}
    if base is not None:
        params = HolsteinParams(**{**base.params.to_dict(), **pgiven})
        if args.add_runs:
            given["runs"] = base.runs + args.add_runs
        return base.replace(**given, params=params)
    d = DEFAULTS
    model = given.pop("forcefield", d["model"])
    dtype = given.pop("compute_dtype", "float64" if model in BUILTIN_FORCEFIELDS else "float32")
    kwargs = {"L": d["L"], "temperatures": tuple(d["T"]), "fillings": tuple(d["f"]),
              "runs": d["runs"], "steps": d["steps"], "save_every": d["save_every"],
              "seed": d["seed"], "frame_vars": tuple(d["frame_vars"]),
              "frame_dtype": d["frame_dtype"], "device": d["device"]}
    kwargs.update(given)
    return QuenchConfig(**kwargs, forcefield=model, compute_dtype=dtype,
                        params=HolsteinParams(**pgiven))


def run(args) -> int:
    from cdwdata import store
    from cdwdata.ensemble import run_ensemble

    config = build_config(args)
    path = run_ensemble(config, args.out, scheduler=args.scheduler, n_workers=args.workers,
                        resume=args.resume, overwrite=args.overwrite, command=command_line(),
                        progress=not args.no_progress, runs_per_task=args.runs_per_task)
    done = store.frames_done(path)
    complete = int((done >= config.n_frames).sum())
    print(f"wrote {path}: {complete}/{done.size} runs complete "
          f"(T={list(config.temperatures)}, f={list(config.fillings)}, {config.runs} runs, "
          f"{config.n_frames} frames of {config.L}x{config.L})")
    import shlex

    quoted = shlex.quote(str(path))
    nxt = (f"cdw analyze {quoted}" if complete == done.size
           else f"cdw quench --resume --out {quoted}")
    print(f"next: {nxt}")
    return 0
