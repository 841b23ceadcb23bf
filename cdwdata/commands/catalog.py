"""``cdw catalog``: build an intake catalog of stores and models, or list/search one.

    cdw catalog build [PATHS...] [--out catalog.yaml] [--force-shipped]
    cdw catalog list [--catalog PATH] [--kind KIND] [--T T ...] [--f F ...] [--L L] [--model M]

``build`` never writes the shipped catalogs (``catalogs/cdwdata.yaml`` of the source tree) or
anything inside the installed package unless ``--force-shipped`` is given.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUT = "catalog.yaml"


def _default_sources() -> list[str]:
    """``data/`` (if present) and the shipped model cards (if any)."""
    import cdwdata

    out = []
    if Path("data").is_dir():
        out.append("data")
    models = Path(cdwdata.__file__).resolve().parent / "ml" / "models"
    if models.is_dir() and any(models.glob("*.json")):
        out.append(str(models))
    return out


def configure(p) -> None:
    from cdwdata.catalog import KINDS

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="scan stores (*.zarr) and model cards, write a catalog YAML",
                       description="Scan stores (*.zarr, searched recursively) and model cards "
                       "(*.json) and write an intake 2 catalog whose paths are relative to it. "
                       "Entries are named after their path relative to the folder scanned.")
    b.add_argument("paths", nargs="*",
                   help="stores, model cards or folders (default: data/ and the shipped models)")
    b.add_argument("--out", default=DEFAULT_OUT,
                   help=f"catalog file to write (default {DEFAULT_OUT}); use it with "
                   "`cdw catalog list --catalog FILE` or $CDW_CATALOG")
    b.add_argument("--force-shipped", action="store_true",
                   help="allow --out to be a shipped catalog (catalogs/cdwdata.yaml or a file "
                   "inside the package), which is otherwise refused")
    b.add_argument("--name", default="cdwdata", help="catalog name (default cdwdata)")
    b.add_argument("--description", default=None, help="catalog description")

    ls = sub.add_parser("list", help="list (and filter) the entries of a catalog",
                        description="List the entries of a catalog, optionally only those whose "
                        "metadata match every filter (a list-valued T, f or model matches if it "
                        "holds the value; several values mean any of them).")
    ls.add_argument("--catalog", default=None,
                    help="catalog YAML (default: $CDW_CATALOG, else catalogs/cdwdata.yaml)")
    ls.add_argument("--kind", nargs="+", choices=KINDS, help="kind(s) of artifact")
    ls.add_argument("--T", type=float, nargs="+", help="temperature(s)")
    ls.add_argument("--f", type=float, nargs="+", help="filling(s)")
    ls.add_argument("--L", type=int, nargs="+", help="lattice size(s)")
    ls.add_argument("--model", nargs="+",
                    help="model name(s), e.g. holstein-f0.5 ('' for ED runs)")
    ls.add_argument("--names", action="store_true", help="print entry names only")
    ls.add_argument("--long", action="store_true", help="also print each entry's description")


def run(args) -> int:
    from cdwdata import catalog

    if args.action == "build":
        if catalog.is_shipped(args.out) and not args.force_shipped:
            raise catalog.CatalogError(
                f"refusing to overwrite the shipped catalog {args.out}: pass --out FILE for a "
                "catalog of your own, or --force-shipped to rebuild the shipped one")
        paths = args.paths or _default_sources()
        if not paths:
            raise catalog.CatalogError(
                "nothing to catalog: no data/ folder and no shipped models; pass PATHS")
        cat = catalog.build(paths, args.out, name=args.name, description=args.description)
        print(f"wrote {args.out} ({len(cat.entries)} entries)")
        return 0

    cat = catalog.open(args.catalog)
    query = {key: getattr(args, key) for key in ("kind", "T", "f", "L", "model")
             if getattr(args, key) is not None}
    hits = catalog.search(cat, **query)
    if args.names:
        for name in hits:
            print(name)
        return 0
    if not hits:
        print("no matching entries")
        return 0
    print(catalog.table(hits))
    if args.long:
        print()
        for name in hits:
            print(f"{name}: {catalog.metadata(hits, name).get('description', '')}")
    return 0
