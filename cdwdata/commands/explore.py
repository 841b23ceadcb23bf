"""``cdw explore STORE``: serve the interactive coarsening explorer on 127.0.0.1."""

from __future__ import annotations


def configure(p) -> None:
    p.add_argument("store", help="trajectory store (zarr) to explore")
    p.add_argument("--port", type=int, default=5006, help="port on 127.0.0.1 (default 5006)")
    p.add_argument("--show", action="store_true", help="open it in a web browser")


def run(args) -> int:
    from pathlib import Path

    from cdwdata.errors import StoreError
    from cdwdata.explore import serve

    if not Path(args.store).exists():
        raise StoreError(f"{args.store} does not exist")
    serve(args.store, port=args.port, show=args.show)
    return 0
