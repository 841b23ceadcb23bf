"""``cdw info STORE``: what a store holds and how it was made."""

from __future__ import annotations


def configure(p) -> None:
    p.add_argument("store", help="path of a cdwdata zarr store")


def run(args) -> int:
    from cdwdata.store import describe

    print(describe(args.store))
    return 0
