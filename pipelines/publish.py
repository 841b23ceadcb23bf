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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENSEMBLES = ("T-scan", "f-scan")
#: The full S(k, t) grid is the one large variable of a structure-factor store.
DROP_FROM_STRUCTURE_FACTOR = ("S",)


def _copy_store(src: Path, dest: Path, drop: tuple[str, ...] = ()) -> None:
    from cdwdata import store

    ds = store.open_dataset(src)
    ds = ds.drop_vars([v for v in drop if v in ds.variables])
    if drop:
        ds.attrs["published_without"] = list(drop)
    store.write_dataset(ds.load(), dest, overwrite=True)  # atomic, checksummed


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
    p.add_argument("run_dir", type=Path, help="output folder of pipelines/reproduce.py")
    p.add_argument("dest", type=Path, help="where to publish (e.g. cdwdata/results/NAME)")
    p.add_argument("--no-catalog", action="store_true",
                   help="do not rebuild the shipped catalogs")
    args = p.parse_args(argv)
    files = publish(args.run_dir, args.dest)
    size = sum(f.stat().st_size for f in files)
    print(f"published {len(files)} files ({size / 1e6:.1f} MB) to {args.dest}")
    if not args.no_catalog:
        rebuild_catalogs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
