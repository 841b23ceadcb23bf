"""Subcommands of ``cdw``: one module each with ``configure(parser)`` and ``run(args)``."""

from __future__ import annotations

import shlex
import sys


def command_line() -> str:
    """The command line that invoked us, for the ``command`` attr of stores."""
    return "cdw " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_store_mode(parser) -> None:
    """``--resume`` / ``--overwrite``, mutually exclusive."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an existing store from its last complete frames")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing store (default: refuse)")


def add_params(parser) -> None:
    """Hamiltonian / dynamics parameters as options (defaults from HolsteinParams)."""
    from cdwdata.params import HolsteinParams

    d = HolsteinParams()
    g = parser.add_argument_group("model parameters")
    for name, help_ in (("t", "hopping"), ("g", "electron-lattice coupling"),
                        ("k", "spring constant"), ("kappa", "nearest-neighbour Q coupling"),
                        ("mass", "oscillator mass"), ("gamma", "Langevin damping rate"),
                        ("dt", "time step")):
        g.add_argument(f"--{name}", type=float, default=getattr(d, name),
                       help=f"{help_} (default {getattr(d, name)})")


def params_from(args):
    from cdwdata.params import HolsteinParams

    return HolsteinParams(t=args.t, g=args.g, k=args.k, kappa=args.kappa, mass=args.mass,
                          gamma=args.gamma, dt=args.dt)




