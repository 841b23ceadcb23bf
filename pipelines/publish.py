#!/usr/bin/env python
"""Ship the summaries of a finished reproduction run with the package and in its catalog.

    python pipelines/publish.py runs/reproduce-cpu cdwdata/results/paper-cpu

Copies the small results of a ``reproduce.py`` output folder, never its trajectories:

* ``<ensemble>/domain-size.zarr`` and ``<ensemble>/growth-exponents.zarr`` as they are;
* ``<ensemble>/structure-factor.zarr`` without the full ``S(k, t)`` grid: the radial
  ``S(q, t)`` per run, its ensemble mean and standard error, and the Porod slopes;
* ``figures/`` (PNG and the JSON of the numbers drawn), ``summary.md``, ``pipeline.json``
  and the stage markers (``.pipeline/``: config and time of every stage);

for both ensembles (``T-scan``, ``f-scan``). Then it rebuilds the shipped catalogs
(``catalogs/cdwdata.yaml`` and the package copy ``cdwdata/catalog_data/cdwdata.yaml``) from
the shipped models and every folder under ``cdwdata/results``, so
``cdwdata.catalog.search(kind="growth-exponents")`` finds them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENSEMBLES = ("T-scan", "f-scan")
#: The full S(k, t) grid is the one large variable of a structure-factor store.
DROP_FROM_STRUCTURE_FACTOR = ("S",)


def _copy_store(src: Path, dest: Path, drop: tuple[str, ...] = (),
                description: str | None = None) -> None:
    from cdwdata import store

    ds = store.open_dataset(src)
    ds = ds.drop_vars([v for v in drop if v in ds.variables])
    if drop:
        ds.attrs["published_without"] = list(drop)
    if description:
        ds.attrs["description"] = description
    store.write_dataset(ds.load(), dest, overwrite=True)  # atomic, checksummed


#: What the catalog says of each published summary store.
KIND_WORDS = {"domain-size": "domain size L(t)", "growth-exponents": "growth exponents alpha",
              "structure-factor": "structure factor S(q, t) and Porod slopes"}


def publish_analysis(analysis_dir: Path, dest: Path, ensemble: str, label: str) -> list[Path]:
    """Copy one ``cdw analyze`` output folder (e.g. of the finished cells of a paper-scale
    run that is still going) to ``dest/ensemble``, every store described as ``label``."""
    missing = [k for k in KIND_WORDS if not (analysis_dir / f"{k}.zarr").exists()]
    if missing:
        raise SystemExit(f"{analysis_dir} is not a cdw analyze output: missing "
                         f"{', '.join(k + '.zarr' for k in missing)}")
    out = dest / ensemble
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for kind, words in KIND_WORDS.items():
        _copy_store(analysis_dir / f"{kind}.zarr", out / f"{kind}.zarr",
                    DROP_FROM_STRUCTURE_FACTOR if kind == "structure-factor" else (),
                    description=f"{label}: {words}")
    return sorted(p for p in out.rglob("*") if p.is_file())


def publish(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the summaries of ``run_dir`` to ``dest`` (replaced); return the files written."""
    missing = [p for p in [run_dir / "summary.md", run_dir / "figures"]
               + [run_dir / "analysis" / e for e in ENSEMBLES] if not p.exists()]
    if missing:
        raise SystemExit(f"{run_dir} is not a finished reproduction run: missing "
                         f"{', '.join(str(m) for m in missing)}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for ens in ENSEMBLES:
        (dest / ens).mkdir()
        src = run_dir / "analysis" / ens
        for kind in ("domain-size", "growth-exponents"):
            _copy_store(src / f"{kind}.zarr", dest / ens / f"{kind}.zarr")
        _copy_store(src / "structure-factor.zarr", dest / ens / "structure-factor.zarr",
                    DROP_FROM_STRUCTURE_FACTOR)
    shutil.copytree(run_dir / "figures", dest / "figures")
    for name in ("summary.md", "pipeline.json"):
        shutil.copy2(run_dir / name, dest / name)
    if (run_dir / ".pipeline").is_dir():
        shutil.copytree(run_dir / ".pipeline", dest / "stages")
    return sorted(p for p in dest.rglob("*") if p.is_file())


def relabel(dest: Path, label: str) -> list[Path]:
    """Describe every published summary store under ``dest`` as ``label`` (e.g. to mark
    results as superseded); the data are untouched."""
    from cdwdata import store

    done = []
    for kind, words in KIND_WORDS.items():
        for path in sorted(dest.rglob(f"{kind}.zarr")):
            store.update_attrs(path, {"description": f"{label}: {words}"})
            done.append(path)
    if not done:
        raise SystemExit(f"{dest} holds no published summary store")
    return done


def draw_figures(analysis_dir: Path, traj: Path, dest: Path, ensemble: str,
                 T: Sequence[float] | None = None, f: Sequence[float] | None = None
                 ) -> list[Path]:
    """Paper Figs. 4-8 of one ``cdw analyze`` output folder and its trajectory store (only
    the cells ``T``, ``f`` given) into ``dest/figures``, named after the ensemble."""
    from cdwdata import figures

    out = dest / "figures"
    out.mkdir(parents=True, exist_ok=True)
    A = analysis_dir
    T0 = T[0] if T else None
    f0 = f[0] if f else None
    tag = ensemble.lower()
    return [
        figures.fig4_snapshots(A / "order-parameter.zarr", out / f"fig4-phi-snapshots-{tag}.png",
                               T=T0, f=f0),
        figures.fig5_structure_factor(A / "structure-factor.zarr",
                                      out / f"fig5-structure-factor-{tag}.png", T=T0, f=f0),
        figures.fig6_collapse(A / "structure-factor.zarr", A / "domain-size.zarr",
                              out / f"fig6-collapse-{tag}.png", temperatures=T, f=f0),
        figures.fig7_growth([A / "domain-size.zarr"], [A / "growth-exponents.zarr"],
                            out / f"fig7-growth-{tag}.png"),
        figures.fig8_density(traj, out / f"fig8-density-{tag}.png", T=T0, fillings=f),
    ]


def rebuild_catalogs() -> None:
    """The shipped catalogs: shipped models plus everything under cdwdata/results."""
    from cdwdata import catalog
    from cdwdata.ml.forcefield import MODELS_DIR

    sources = [MODELS_DIR]
    results = ROOT / "cdwdata" / "results"
    if results.is_dir():
        sources.append(results)
    for out in (ROOT / "catalogs" / "cdwdata.yaml",
                ROOT / "cdwdata" / "catalog_data" / "cdwdata.yaml"):
        cat = catalog.build(sources, out, name="cdwdata",
                            description="shipped cdwdata models and published results")
        print(f"{out.relative_to(ROOT)}: {len(cat.entries)} entries")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="output folder of pipelines/reproduce.py (with "
                   "--ensemble: one cdw analyze output folder)")
    p.add_argument("dest", type=Path, help="where to publish (e.g. cdwdata/results/NAME)")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=None,
                   help="publish only this ensemble from a cdw analyze output folder (the "
                        "finished cells of a run still going); needs --label")
    p.add_argument("--label", default=None,
                   help="with --ensemble: what the catalog says the results are (scale, cells, "
                        "runs, model)")
    p.add_argument("--figures", type=Path, default=None, metavar="TRAJ",
                   help="with --ensemble: also draw paper Figs. 4-8 of these cells, TRAJ the "
                        "trajectory store (Fig. 8 reads its frames)")
    p.add_argument("--T", type=float, nargs="+", default=None,
                   help="with --figures: the temperatures to draw (default all)")
    p.add_argument("--f", type=float, nargs="+", default=None,
                   help="with --figures: the fillings to draw (default all)")
    p.add_argument("--no-catalog", action="store_true",
                   help="do not rebuild the shipped catalogs")
    p.add_argument("--relabel", action="store_true",
                   help="only set the description of the stores already published in DEST "
                        "to --label (RUN_DIR is ignored)")
    args = p.parse_args(argv)
    if args.relabel:
        if not args.label:
            p.error("--relabel needs --label")
        stores = relabel(args.dest, args.label)
        print(f"relabelled {len(stores)} stores in {args.dest}")
        if not args.no_catalog:
            rebuild_catalogs()
        return 0
    if args.ensemble is not None:
        if not args.label:
            p.error("--ensemble needs --label")
        files = publish_analysis(args.run_dir, args.dest, args.ensemble, args.label)
        if args.figures is not None:
            files += draw_figures(args.run_dir, args.figures, args.dest, args.ensemble,
                                  args.T, args.f)
    else:
        files = publish(args.run_dir, args.dest)
    size = sum(f.stat().st_size for f in files)
    print(f"published {len(files)} files ({size / 1e6:.1f} MB) to {args.dest}")
    if not args.no_catalog:
        rebuild_catalogs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
