"""Fixtures of the reliability suite (fault injection, kill/resume, bad input, security).

Every test in this folder carries ``@pytest.mark.reliability`` (added below), so
``pytest -m "not reliability"`` skips the suite and ``pytest tests/reliability`` runs it.
Bit-for-bit comparisons rely on one BLAS/torch thread in this process (tests/conftest.py) and
in the ``cdw`` subprocesses (:data:`soak.THREAD_ENV`), as in the Dask workers.

Fixtures
--------
tiny_store
    A finished ``cdw ed-quench`` store (L = 8, 1 run, 3 frames), made once per session; copy
    it before changing anything.
cdw
    ``cdw(*argv) -> (exit code, stdout, stderr)``: the CLI in this process (argparse exits
    become exit codes).

The kill/resume machinery lives in ``benchmarks/soak.py`` (importable here as ``soak``).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

HERE = Path(__file__).resolve().parent

#: Arguments of the tiny ed-quench store (everything but --out).
TINY_ARGS = ["--L", "8", "--runs", "1", "--steps", "4", "--save-every", "2", "--seed", "1",
             "--no-progress"]


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_report_{report.when}", report)


@pytest.fixture(autouse=True)
def _remove_tmp_path_of_passed_tests(request):
    """The stores of a passed test are not needed: delete them now (pytest would keep them
    and later spend seconds deleting thousands of chunk files at interpreter exit)."""
    yield
    report = getattr(request.node, "_report_call", None)
    path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if report is not None and report.passed and path is not None:
        shutil.rmtree(path, ignore_errors=True)


def tree_hash(path: Path) -> str:
    """sha256 over the relative names, modes and bytes of every file under ``path``."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(*argv: str) -> int:
    """``cdwdata.cli.main`` with argparse's SystemExit turned into an exit code."""
    from cdwdata.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def cdw(capsys):
    def call(*argv):
        capsys.readouterr()
        rc = run_cli(*argv)
        out, err = capsys.readouterr()
        return rc, out, err

    return call


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.zarr"
    assert run_cli("ed-quench", *TINY_ARGS, "--out", path) == 0
    return path
