"""``cdw refine MODEL --out PATH``: a level model with exact open-cluster levels.

Writes a copy of a level model (same weights) whose card adds an ``inference.cluster`` entry
(:mod:`cdwdata.ml.cluster`): at the sites where the network puts more than ``--weight`` of
the site's spectral weight within ``--window-T`` electron temperatures of mu, the levels are
those of the open cluster ``|r - r_i|^2 <= --r2`` around the site, diagonalised exactly.
``load_model(..., cluster=False)`` still gives the network alone.
"""

from __future__ import annotations


def configure(p) -> None:
    from cdwdata.ml.cluster import ClusterSpec

    d = ClusterSpec()
    p.add_argument("model", metavar="MODEL", help="level model: shipped name or path")
    p.add_argument("--out", required=True, help="path of the new model (card + weights)")
    p.add_argument("--r2", type=float, default=d.r2,
                   help=f"cluster radius squared, 1..13 (default {d.r2:g}: 25 sites)")
    p.add_argument("--window-T", type=float, default=d.window_T,
                   help=f"selection window around mu in units of T (default {d.window_T:g})")
    p.add_argument("--weight", type=float, default=d.weight,
                   help=f"spectral weight inside the window that selects a site "
                        f"(default {d.weight:g})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")


def run(args) -> int:
    from cdwdata.ml.cluster import ClusterSpec, with_cluster

    card = with_cluster(args.model, args.out,
                        ClusterSpec(r2=args.r2, window_T=args.window_T, weight=args.weight),
                        overwrite=args.overwrite)
    spec = card["inference"]["cluster"]
    print(f"wrote {args.out}: {card['derived_from']['name']} with a {spec['sites']}-site "
          f"open cluster (r^2 <= {spec['r2']:g}) at sites with more than {spec['weight']:g} "
          f"of their weight within {spec['window_T']:g} T of mu")
    return 0
