"""The notebooks in ``notebooks/`` run top to bottom on tiny data, and are stored stripped.

Each notebook is executed with nbclient in a fresh kernel (per-cell timeout
``CELL_TIMEOUT``, whole-notebook budget ``NOTEBOOK_BUDGET``). The tiny ED quench they need is
made once here and passed in through ``CDW_DATA_DIR`` (the same variable points them at real
data); one extra run of ``01-catalog`` without it checks that a notebook makes its own data.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01-catalog.ipynb", "02-explorer.ipynb", "03-paper-figures.ipynb")
#: seconds one cell may take (a stuck cell fails instead of hanging CI)
CELL_TIMEOUT = 180
#: seconds a whole notebook may take, kernel start included (each aims at < 30 s when idle)
NOTEBOOK_BUDGET = 240
#: stored notebooks stay small (no outputs, no embedded data)
MAX_BYTES = 30_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from cdwdata.explore import demo_store

    root = tmp_path_factory.mktemp("notebook-data")
    demo_store(root / "demo-quench.zarr")
    return root


def _execute(path: Path, workdir: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    return elapsed


def test_the_three_notebooks_are_there():
    assert tuple(p.name for p in NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_small(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size < MAX_BYTES
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CDW_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CDW_FIG_DIR", str(tmp_path / "figures"))
    elapsed = _execute(path, tmp_path)
    assert elapsed < NOTEBOOK_BUDGET, f"{path.name} took {elapsed:.0f} s"
    if path.name.startswith("03"):
        figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
        assert figures == ["fig4-phi-snapshots.png", "fig5-structure-factor.png",
                           "fig6-collapse.png", "fig7-domain-growth.png"]


def test_notebook_makes_its_own_data(tmp_path, monkeypatch):
    monkeypatch.delenv("CDW_DATA_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # its temporary folders land here
    elapsed = _execute(NOTEBOOK_DIR / "01-catalog.ipynb", tmp_path)
    assert elapsed < NOTEBOOK_BUDGET
    assert list(tmp_path.glob("cdwdata-demo-*/demo-quench.zarr"))
