"""``cdw train``: train an ML force field on an ED training set and write model + card.

``--kind density`` trains the grand-canonical model (local densities at a given mu and T, one
model for every filling and temperature of its training range) on ``cdw gc-dataset`` stores;
``--kind levels`` the grand-canonical model of learned local levels (mu and T only in the
Fermi functions, :mod:`cdwdata.ml.levels`) on the same stores.
"""

from __future__ import annotations

from cdwdata.commands import command_line


def configure(p) -> None:
    from cdwdata.ml.options import GC_KINDS, KINDS, SCHEDULES, TARGETS

    p.add_argument("--data", required=True, nargs="+",
                   help="ED training store(s) (cdw ed-dataset output); several are joined, "
                        "each split into train/val/test on its own")
    p.add_argument("--f", type=float, default=None,
                   help="filling fraction to train on (canonical kinds force/energy only)")
    p.add_argument("--out", required=True,
                   help="output model: a path (writes PATH.safetensors + PATH.json) or a bare "
                        "name (written to the shipped-models folder cdwdata/ml/models)")
    p.add_argument("--kind", choices=(*KINDS, *GC_KINDS), default="force",
                   help="direct force model (paper, default), Behler-Parrinello energy model, "
                        "or a grand-canonical model (n_i at given mu and T; needs cdw "
                        "gc-dataset stores): density (mu, T as inputs) or levels (learned "
                        "local levels in a Fermi sum)")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="hidden layer widths (default: 512 256 64 16, the paper's, for "
                        "force/energy; 256 128 64 for density)")
    p.add_argument("--arch", default=None, choices=sorted(_architectures()),
                   help="density kind: named hidden widths instead of --hidden ("
                        + ", ".join(f"{k} = {'x'.join(map(str, v))}"
                                    for k, v in _architectures().items()) + ")")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="grand-canonical kinds: start from this saved model (fine-tuning); a "
                        "density model of the same depth with narrower layers starts a wider "
                        "network as the same function (net2net widening); a level model with "
                        "the same hidden layers and K / m levels starts with each level split "
                        "in m copies")
    p.add_argument("--components", type=int, default=None,
                   help="levels kind: levels per site (default 16)")
    p.add_argument("--pairs", action="store_true",
                   help="levels kind: the levels come in two-level blocks (an avoided crossing "
                        "is smooth in the network's outputs); --init a plain level model with "
                        "half the levels starts each block from one of its levels")
    p.add_argument("--samples-per-epoch", type=int, default=None,
                   help="density kind: (configuration, label, site) samples per epoch "
                        "(default: all of the training split)")
    p.add_argument("--target", choices=TARGETS, default="total",
                   help="what the network learns: the total force (paper, default) or only "
                        "the electronic force g(n - 1/2), the exact elastic force being added")
    p.add_argument("--epochs", type=int, default=500, help="maximum epochs (default 500)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="sites per minibatch (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--schedule", choices=SCHEDULES, default="plateau",
                   help="learning-rate schedule (default plateau)")
    p.add_argument("--patience", type=int, default=30,
                   help="early stopping: epochs without a better validation RMSE")
    p.add_argument("--loss", choices=("mse", "huber", "bce"), default=None,
                   help="mse (paper) or huber: quadratic up to --huber-delta, linear beyond, "
                        "so that sites whose force is set by the global mu do not dominate; "
                        "huber keeps the epoch with the smallest validation MAE; bce (density "
                        "kind only, its default): cross-entropy of the density")
    p.add_argument("--huber-delta", type=float, default=0.05,
                   help="Huber threshold in force units (default 0.05)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="fraction of quench snapshots held out for the final report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest on a "
                        "loaded machine)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    p.add_argument("--no-progress", action="store_true")


def _architectures() -> dict:
    from cdwdata.ml.gcmodel import ARCHITECTURES

    return ARCHITECTURES


def run(args) -> int:
    from cdwdata.ml.options import GC_KINDS

    if args.kind in GC_KINDS:
        return _run_density(args)
    if args.f is None:
        from cdwdata.errors import ParameterError

        raise ParameterError(f"--f is required for --kind {args.kind}")
    from cdwdata.ml.train import train

    if args.loss is None:
        args.loss = "mse"
    res = train(args.data, f=args.f, out=args.out, kind=args.kind, target=args.target,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                schedule=args.schedule, patience=args.patience, seed=args.seed,
                val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                device=args.device, loss=args.loss, huber_delta=args.huber_delta,
                progress=not args.no_progress, overwrite=args.overwrite, threads=args.threads,
                command=command_line(),
                **({"hidden": tuple(args.hidden)} if args.hidden else {}))
    m = res["metrics"]
    print(f"wrote {res['path']}.safetensors and {res['path']}.json")
    print(f"epochs: {res['epochs_run']} (best {res['best_epoch']}), "
          f"{res['time_per_epoch_s']:.3g} s/epoch, {res['sites_per_s']:.4g} sites/s")
    for split in ("train", "val", "test"):
        if m[split].get("n_sites"):
            print(f"{split:5s} RMSE {m[split]['rmse']:.4g}  MAE {m[split]['mae']:.4g}  "
                  f"max {m[split]['max_abs']:.4g}  ({m[split]['n_snapshots']} snapshots)")
    return 0


def _run_density(args) -> int:
    from cdwdata.errors import ParameterError
    from cdwdata.ml import gctrain

    if args.arch and args.hidden:
        raise ParameterError("give --arch or --hidden, not both")
    hidden = _architectures()[args.arch] if args.arch else tuple(args.hidden or gctrain.HIDDEN)
    card = gctrain.train(args.data, args.out, hidden=hidden,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         loss=args.loss or "bce", huber_delta=args.huber_delta, seed=args.seed,
                         val_fraction=args.val_fraction, threads=args.threads,
                         overwrite=args.overwrite, command=command_line(),
                         progress=not args.no_progress,
                         samples_per_epoch=args.samples_per_epoch, init=args.init,
                         kind=args.kind, components=args.components, pairs=args.pairs)
    v = card["metrics"]["validation"]
    t = card["training"]
    print(f"wrote {card['name']} ({card['weights_file']}): layers {card['architecture']['layers']}")
    print(f"best epoch {t['best_epoch']} of {t['epochs']}, {t['wall_seconds']:.0f} s; validation "
          f"force RMSE {v['force_rmse']:.4g} (fractional sites {v['force_rmse_fractional']:.4g})"
          f", MAE {v['force_mae']:.4g}")
    print(f"trained range: f {card['filling_range']}, T {card['temperature_range']}, "
          f"mu {card['mu_range']}")
    return 0
