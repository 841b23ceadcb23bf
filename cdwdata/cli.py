"""The ``cdw`` command line: a thin dispatcher over :mod:`cdwdata.commands`.

Each subcommand lives in ``cdwdata/commands/<name>.py`` with ``configure(parser)`` and
``run(args) -> int``; only the chosen one is imported, so ``cdw --help`` is fast. Errors that
cdwdata raises on purpose (:class:`cdwdata.errors.CdwError`) and operating-system errors (a
missing file, a full disk) print one line and exit with code 2 (``--debug`` shows the
traceback). Anything else, e.g. a bare ValueError from inside numpy, is a bug: it keeps its
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys

#: subcommand -> (module under cdwdata.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ed-quench": ("ed_quench", "ED-Langevin thermal quench runs stored in zarr"),
    "quench": ("quench", "ML-Langevin thermal-quench ensembles (Dask, CPU or GPU)"),
    "ed-dataset": ("ed_dataset", "generate an ED training set (random + quench snapshots)"),
    "gc-dataset": ("gc_dataset", "grand-canonical training set: exact n_i at many (mu, T)"),
    "train": ("train", "train an ML force field on an ED training set"),
    "validate": ("validate", "validation report of a model on held-out ED snapshots"),
    "refine": ("refine", "a level model with exact open-cluster levels near mu"),
    "analyze": ("analyze", "phi, S(k,t), S(q,t), L(t) and fits of a trajectory store"),
    "catalog": ("catalog", "build or list intake catalogs of stores"),
    "explore": ("explore", "serve the interactive coarsening explorer (panel)"),
    "info": ("info", "print what a store holds and how it was made"),
    "verify": ("verify", "find missing or corrupt chunks of a store"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(f"cdwdata.commands.{module}") is not None:
            out[name] = (module, help_)
    return out


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Parser with every subcommand listed; arguments only for ``command`` (lazy imports)."""
    parser = argparse.ArgumentParser(
        prog="cdw",
        description="cdwdata: ML-accelerated phase-ordering simulations of charge density waves",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(f"cdwdata.commands.{module}").configure(p)
    return parser


def error_message(err: BaseException, args: argparse.Namespace | None = None) -> str:
    """One line for ``err``; a full disk also says how to continue."""
    import errno

    from cdwdata.errors import CdwError

    if not isinstance(err, OSError) or isinstance(err, CdwError) or err.errno is None:
        return " ".join(str(err).split()) or type(err).__name__
    msg = err.strerror or str(err)
    if err.filename is not None:
        msg += f": {err.filename}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        from pathlib import Path

        out = getattr(args, "out", None)
        resumable = hasattr(args, "resume") and out is not None and Path(out).exists()
        again = "rerun with --resume to continue from the last complete frame" \
            if resumable else "rerun"
        msg += f"; free some disk space, then {again}"
    return msg


@contextlib.contextmanager
def _quiet_interrupt():
    """On Ctrl-C, silence logging (Dask's teardown reports every cancelled task and closing
    worker) so that the interrupted command prints one line; other handlers are left alone."""
    import logging
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def interrupted(signum, frame):
        logging.disable(logging.CRITICAL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: as usual
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging.disable(logging.NOTSET)


def _silence_stderr() -> None:
    """Send the rest of this process's stderr to /dev/null (after an interrupted command has
    said so: Dask's exit handlers would otherwise report the clusters they close)."""
    import os

    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives until the process exits


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.version:
        from cdwdata import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    from cdwdata.errors import CdwError

    module = importlib.import_module(f"cdwdata.commands.{COMMANDS[args.command][0]}")
    try:
        with _quiet_interrupt():
            return int(module.run(args) or 0)
    except (CdwError, OSError) as err:  # mistakes of input and environment, not bugs
        if args.debug:
            raise
        print(f"cdw {args.command}: error: {error_message(err, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cdw {args.command}: interrupted; rerun with --resume to continue",
              file=sys.stderr)
        if as_program:
            _silence_stderr()
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
