"""Intake catalogs of cdwdata artifacts: build, reopen, search, lazy read, relocation, errors,
stable entry names, resolved model names, the shipped catalogs and the documented examples."""

from __future__ import annotations

import doctest
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cdwdata import catalog
from cdwdata.errors import CatalogError
from cdwdata.ml.forcefield import aliases

#: The default shipped model (the holstein aliases point at it).
DEFAULT = "holstein-gc-v12"

# entries are named after the store's path relative to the scanned folder (data/)
TRAJ_A, A_FILE = "runs-quench-a", "quench-a.zarr"  # T = 0.1, f = 0.5, a real (tiny) ED run
TRAJ_B, B_FILE = "runs-quench-b", "quench-b.zarr"  # T = 0.2, 0.3, f = 0.4, preallocated only
TRAIN = "trainset"  # training set at T = 0.1, f = 0.5, 0.3 (preallocated)
MODEL = "holstein-test"  # a model card


def _write_card(path: Path) -> None:
    card = {"format": "cdwdata-model/1", "name": MODEL, "kind": "force",
            "architecture": {"hidden": [8]}, "params": {}, "filling": 0.5,
            "electron_T": 0.1, "weights_sha256": "0" * 64,
            "description": "test model card", "trainset": {"L": 8, "n_samples": 3},
            "metrics": {"test": {"rmse": 0.01}}}
    path.write_text(json.dumps(card))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A folder with two trajectory stores, a training set and a model card."""
    from cdwdata.quench import QuenchConfig, prepare_store, run_quench
    from cdwdata.store import create_trainset
    from cdwdata.trainset import TrainsetConfig

    root = tmp_path_factory.mktemp("catalog") / "project"
    runs = root / "data" / "runs"
    runs.mkdir(parents=True)
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=10,
                            save_every=5), runs / A_FILE, progress=False,
               command="test")
    prepare_store(runs / B_FILE,
                  QuenchConfig(L=8, temperatures=(0.2, 0.3), fillings=(0.4,), runs=2, steps=20,
                               save_every=10), command="test")
    tc = TrainsetConfig(L=8, fillings=(0.5, 0.3), T=0.1, n_random=2, quench_runs=1,
                        quench_steps=10, quench_save_every=5)
    sources, rr, ss = tc.plan()
    create_trainset(root / "data" / f"{TRAIN}.zarr", tc.L, tc.fillings, sources, rr, ss, tc.T,
                    tc.attrs("test"))
    models = root / "models"
    models.mkdir()
    _write_card(models / f"{MODEL}.json")
    (models / "notes.json").write_text(json.dumps({"not": "a card"}))
    hidden = root / "data" / ".cache" / "skip.zarr"  # hidden folders are not searched
    hidden.mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def cat_path(data_dir) -> Path:
    out = data_dir / "catalogs" / "cdwdata.yaml"
    catalog.build([data_dir / "data", data_dir / "models"], out, name="test")
    return out


def test_build_writes_relocatable_entries(cat_path):
    text = cat_path.read_text()
    assert "{CATALOG_DIR}/../data/runs/quench-a.zarr" in text
    assert str(cat_path.parent.parent) not in text  # no absolute paths
    cat = catalog.open(cat_path)
    assert catalog.entries(cat) == sorted([TRAJ_A, TRAJ_B, TRAIN, MODEL])
    assert list(cat) == catalog.entries(cat) and len(cat) == 4 and TRAJ_A in cat
    assert cat.metadata["name"] == "test"
    for name in catalog.entries(cat):
        meta = catalog.metadata(cat, name)
        assert set(catalog.REQUIRED_METADATA) <= set(meta), name
        assert meta["kind"] in catalog.KINDS


def test_metadata_from_store_attrs(cat_path):
    cat = catalog.open(cat_path)
    a = catalog.metadata(cat, TRAJ_A)
    assert (a["kind"], a["T"], a["f"], a["L"], a["runs"], a["steps"], a["model"]) == \
        ("trajectory", [0.1], [0.5], 8, 1, 10, "")
    assert a["complete"] is True
    assert catalog.metadata(cat, TRAJ_B)["complete"] is False
    assert catalog.metadata(cat, TRAJ_B)["T"] == [0.2, 0.3]
    t = catalog.metadata(cat, TRAIN)
    assert (t["kind"], t["T"], t["f"], t["L"], t["samples"]) == \
        ("training-set", [0.1], [0.3, 0.5], 8, 4)
    m = catalog.metadata(cat, MODEL)
    assert (m["kind"], m["T"], m["f"], m["L"], m["model"]) == ("model", [0.1], [0.5], 8, MODEL)
    assert m["description"] == "test model card"


def test_search_by_kind_T_f(cat_path):
    cat = catalog.open(cat_path)
    assert list(catalog.search(cat, kind="trajectory")) == [TRAJ_A, TRAJ_B]
    assert list(catalog.search(cat, T=0.1)) == [MODEL, TRAJ_A, TRAIN]
    assert list(catalog.search(cat, T=0.3)) == [TRAJ_B]  # membership in T = [0.2, 0.3]
    assert list(catalog.search(cat, kind="trajectory", f=0.5)) == [TRAJ_A]
    assert list(catalog.search(cat, f=[0.3, 0.4])) == [TRAJ_B, TRAIN]  # any of
    assert list(catalog.search(cat, kind="training-set", L=8, T=0.1)) == [TRAIN]
    assert list(catalog.search(cat, kind="model")) == [MODEL]
    assert list(catalog.search(cat, T=0.7)) == []
    assert not catalog.search(cat, no_such_key=1)
    assert list(catalog.search(cat, runs=lambda r: r is not None and r > 1)) == [TRAJ_B]


def test_read_is_lazy_and_matches_store(cat_path, data_dir):
    import dask.array as da

    from cdwdata.store import open_dataset

    cat = catalog.open(cat_path)
    ds = catalog.read(cat, TRAJ_A)
    assert isinstance(ds["Q"].data, da.Array)
    assert not any(str(v).startswith("ckpt_") for v in ds.variables)
    ref = open_dataset(data_dir / "data" / "runs" / A_FILE)
    np.testing.assert_array_equal(ds["Q"].values, ref["Q"].values)
    assert ds.attrs["kind"] == "trajectory"
    # plain intake gives the same lazy dataset
    direct = cat[TRAJ_A].read()
    assert isinstance(direct["n"].data, da.Array)
    np.testing.assert_array_equal(direct["n"].values, ref["n"].values)
    card = catalog.read(cat, MODEL)
    assert card["name"] == MODEL
    assert catalog.path_of(cat, MODEL) == (data_dir / "models" / f"{MODEL}.json").resolve()


def test_relocated_catalog_reads_the_copy(cat_path, data_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(data_dir, moved)
    cat = catalog.open(moved / "catalogs" / "cdwdata.yaml")
    assert catalog.path_of(cat, TRAJ_A) == (moved / "data" / "runs" / A_FILE).resolve()
    shutil.rmtree(moved / "data" / "runs" / B_FILE)  # the copy, not the original
    ds = catalog.read(cat, TRAJ_A)
    assert ds.sizes["step"] == 3
    with pytest.raises(CatalogError, match=TRAJ_B):
        catalog.read(cat, TRAJ_B)
    assert catalog.read(cat_path, TRAJ_B).sizes["T"] == 2  # the original is untouched


def test_missing_store_raises_catalog_error_on_read(data_dir, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(data_dir / "data", project / "data")
    out = catalog.build(project / "data", project / "cat.yaml")
    assert TRAJ_A in out.entries
    shutil.rmtree(project / "data" / "runs" / A_FILE)
    cat = catalog.open(project / "cat.yaml")  # opening still works
    with pytest.raises(CatalogError) as info:
        catalog.read(cat, TRAJ_A)
    msg = str(info.value)
    assert "\n" not in msg and TRAJ_A in msg and "cat.yaml" in msg and "does not exist" in msg
    with pytest.raises(CatalogError, match="no entry 'nope'"):
        catalog.read(cat, "nope")


MALFORMED = {
    "syntax": "entries: {a: [1, 2\nversion: 2\n",
    "tabs": "version: 2\nentries:\n\t- a\n",
    "python-tag": "!!python/object/apply:os.system ['echo hi']\n",
    "not-a-mapping": "- 1\n- 2\n",
    "empty": "",
    "version-1": "version: 1\nsources: {}\n",
    "entries-list": ("version: 2\nentries: [a]\ndata: {}\nuser_parameters: {}\naliases: {}\n"
                     "metadata: {}\n"),
    "entry-without-reader": ("version: 2\nentries: {a: {kwargs: {}}}\ndata: {}\n"
                             "user_parameters: {}\naliases: {}\nmetadata: {}\n"),
    # intake imports the classes a catalog names: only the few cdwdata uses are accepted
    "foreign-reader": ("version: 2\nentries:\n  a:\n    reader: os:system\n    kwargs: {}\n"
                       "    metadata: {}\n    user_parameters: {}\n    output_instance: null\n"
                       "data: {}\nuser_parameters: {}\naliases: {}\nmetadata: {}\n"),
    "foreign-datatype": ("version: 2\nentries: {}\ndata:\n  d:\n    datatype: os:system\n"
                         "    kwargs: {}\nuser_parameters: {}\naliases: {}\nmetadata: {}\n"),
    "foreign-cls": ("version: 2\nentries: {}\ndata: {}\nuser_parameters:\n  p:\n"
                    "    cls: argparse:Namespace\naliases: {}\nmetadata: {}\n"),
    "dangling-data": ("version: 2\nentries:\n  a:\n    reader: intake.readers.readers:"
                      "XArrayDatasetReader\n    kwargs: {args: ['{data(abc)}']}\n"
                      "data: {}\nuser_parameters: {}\naliases: {}\nmetadata: {}\n"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_yaml_raises_catalog_error(case, tmp_path):
    path = tmp_path / f"{case}.yaml"
    path.write_text(MALFORMED[case])
    with pytest.raises(CatalogError) as info:
        catalog.open(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg


def test_open_default_and_missing(cat_path, monkeypatch, tmp_path):
    monkeypatch.setenv(catalog.ENV_VAR, str(cat_path))
    assert catalog.default_path() == cat_path
    assert TRAJ_A in catalog.entries()  # open() with no path
    monkeypatch.setattr(catalog, "default_locations", lambda: [tmp_path / "none.yaml"])
    with pytest.raises(CatalogError, match="no cdwdata catalog found"):
        catalog.open()
    with pytest.raises(CatalogError, match="does not exist"):
        catalog.open(tmp_path / "missing.yaml")


def test_build_errors(tmp_path):
    with pytest.raises(CatalogError, match="no such file"):
        catalog.build([tmp_path / "nope"], tmp_path / "c.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no stores"):
        catalog.build([tmp_path / "empty"], tmp_path / "c.yaml")
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(CatalogError, match="junk.zarr"):
        catalog.build([tmp_path / "junk.zarr"], tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml").exists()


def test_find_artifacts_skips_store_insides_and_hidden(data_dir):
    stores, cards = catalog.find_artifacts(data_dir)
    assert sorted(p.name for p in stores) == sorted([A_FILE, B_FILE, f"{TRAIN}.zarr"])
    assert [p.name for p in cards] == [f"{MODEL}.json"]


def test_analysis_stores_are_classified(tmp_path):
    import xarray as xr

    base = {"temperatures": [0.1], "fillings": [0.5], "L": 8, "runs": 2, "steps": 10,
            "forcefield": "ed", "model": ""}
    L = xr.DataArray(np.ones((1, 1, 2, 3)), dims=("T", "f", "run", "step"),
                     coords={"T": [0.1], "f": [0.5], "step": [0, 5, 10]})
    alpha = xr.DataArray(np.full((1, 1), 0.5), dims=("T", "f"),
                         coords={"T": [0.1], "f": [0.5]})
    stores = {
        "L.zarr": xr.Dataset({"L": L}, attrs={**base, "kind": "domain-size"}),
        "alpha.zarr": xr.Dataset({"alpha": alpha}, attrs=base),  # kind inferred
        "phi.zarr": xr.Dataset({"phi": L}, attrs={**base, "kind": "order-parameter"}),
    }
    for name, ds in stores.items():
        ds.to_zarr(tmp_path / name, zarr_format=3, consolidated=False)
    cat = catalog.build(tmp_path, tmp_path / "c.yaml")
    kinds = {n: catalog.metadata(cat, n)["kind"] for n in catalog.entries(cat)}
    assert kinds == {"L": "domain-size", "alpha": "growth-exponents", "phi": "order-parameter"}
    meta = catalog.metadata(cat, "L")
    assert (meta["T"], meta["f"], meta["L"], meta["runs"]) == ([0.1], [0.5], 8, 2)
    assert "domain sizes" in meta["description"]
    assert catalog.read(cat, "alpha")["alpha"].values.item() == 0.5


def _write_alpha(path: Path, T: list[float] | None = None, **attrs) -> None:
    """A tiny growth-exponents store at ``path`` (attrs: the usual ones, then ``attrs``)."""
    import xarray as xr

    T = T or [0.1]
    alpha = xr.DataArray(np.full((len(T), 1), 0.5), dims=("T", "f"),
                         coords={"T": T, "f": [0.5]})
    base = {"temperatures": T, "fillings": [0.5], "L": 8, "runs": 2, "steps": 10,
            "forcefield": "ed", "model": "", "kind": "growth-exponents"}
    xr.Dataset({"alpha": alpha}, attrs={**base, **attrs}).to_zarr(
        path, zarr_format=3, consolidated=False)


def test_entry_names_are_paths_relative_to_the_scanned_folder(tmp_path):
    """Two ensembles' analyses (T-scan/, f-scan/) both have growth-exponents.zarr: each entry
    is named after its path below the scanned folder, whatever else is there."""
    for folder, T in (("T-scan", [0.1, 0.2]), ("f-scan", [0.1])):
        _write_alpha(tmp_path / folder / "growth-exponents.zarr", T)
    _write_alpha(tmp_path / "f-scan" / "other.zarr")
    cat = catalog.build(tmp_path, tmp_path / "c.yaml")
    assert catalog.entries(cat) == ["T-scan-growth-exponents", "f-scan-growth-exponents",
                                    "f-scan-other"]
    assert catalog.metadata(cat, "T-scan-growth-exponents")["T"] == [0.1, 0.2]


def test_adding_a_folder_does_not_rename_entries(tmp_path):
    root = tmp_path / "quench-analysis"
    _write_alpha(root / "growth-exponents.zarr")
    _write_alpha(root / "T-scan" / "domain-size.zarr", kind="domain-size")
    first = catalog.build(root, tmp_path / "c.yaml")
    assert catalog.entries(first) == ["T-scan-domain-size", "growth-exponents"]
    path = catalog.path_of(first, "growth-exponents")
    _write_alpha(root / "T-scan" / "growth-exponents.zarr")  # same file name, new folder
    _write_alpha(root / "growth-exponents-2.zarr")  # the name a numbered duplicate would take
    second = catalog.build(root, tmp_path / "c.yaml")
    assert catalog.entries(second) == ["T-scan-domain-size", "T-scan-growth-exponents",
                                       "growth-exponents", "growth-exponents-2"]
    assert catalog.path_of(second, "growth-exponents") == path
    # a store is named relative to the first given path holding it (a store given directly:
    # after itself); a clash between two scanned folders leaves the first name alone and
    # prefixes the later one with its folder's name
    other = tmp_path / "other"
    _write_alpha(other / "growth-exponents.zarr")
    both = catalog.build([root / "T-scan" / "domain-size.zarr", root, other],
                         tmp_path / "d.yaml")
    assert catalog.entries(both) == ["T-scan-growth-exponents", "domain-size",
                                     "growth-exponents", "growth-exponents-2",
                                     "other-growth-exponents"]
    assert catalog.path_of(both, "other-growth-exponents") == \
        (other / "growth-exponents.zarr").resolve()


def test_cli_build_and_list(data_dir, tmp_path, capsys):
    from cdwdata.cli import main

    out = tmp_path / "cli.yaml"
    assert main(["catalog", "build", str(data_dir / "data"), "--out", str(out)]) == 0
    assert "3 entries" in capsys.readouterr().out
    assert main(["catalog", "list", "--catalog", str(out), "--kind", "trajectory",
                 "--names"]) == 0
    assert capsys.readouterr().out.split() == [TRAJ_A, TRAJ_B]
    assert main(["catalog", "list", "--catalog", str(out), "--T", "0.3"]) == 0
    table = capsys.readouterr().out
    assert TRAJ_B in table and TRAJ_A not in table and "0.2,0.3" in table
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [2\n")
    assert main(["catalog", "list", "--catalog", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


# --- search returns an intake Catalog; model cards read as dicts ------------------------------
def test_search_returns_an_intake_catalog_whose_entries_read(cat_path, data_dir):
    import dask.array as da
    from intake.readers.entry import Catalog

    cat = catalog.open(cat_path)
    hits = catalog.search(cat, T=0.1)
    assert isinstance(hits, Catalog)
    assert list(hits) == [MODEL, TRAJ_A, TRAIN] and len(hits) == 3
    assert TRAJ_A in hits and TRAJ_B not in hits
    ds = hits[TRAJ_A].read()  # the intake way: no catalog.read needed
    assert isinstance(ds["Q"].data, da.Array) and ds.sizes["step"] == 3
    assert hits[TRAJ_A].metadata["kind"] == "trajectory"
    assert isinstance(hits[MODEL].read(), dict)
    # the module's functions take a search result as the catalog
    assert catalog.metadata(hits, TRAJ_A)["T"] == [0.1]
    assert catalog.read(hits, TRAJ_A).sizes == ds.sizes
    assert list(catalog.search(hits, kind="trajectory")) == [TRAJ_A]
    assert catalog.table(hits).splitlines()[1].split()[0] == MODEL
    with pytest.raises(CatalogError, match="no entry"):
        catalog.read(hits, TRAJ_B)  # not part of the result
    # a search result keeps working on its own, e.g. after the catalog it came from is gone
    del cat
    assert hits[TRAJ_A].read().sizes["step"] == 3


def test_plain_intake_lists_and_reads_a_built_catalog(cat_path):
    import intake

    plain = intake.from_yaml_file(str(cat_path))
    assert sorted(plain) == sorted([TRAJ_A, TRAJ_B, TRAIN, MODEL])  # aliases are written
    card = plain[MODEL].read()
    assert isinstance(card, dict) and card["name"] == MODEL
    assert plain[TRAJ_A].read().sizes["step"] == 3


def test_model_cards_read_as_dicts_also_from_older_catalogs(cat_path, tmp_path):
    cat = catalog.open(cat_path)
    assert cat[MODEL].read()["name"] == MODEL
    assert catalog.search(cat, kind="model")[MODEL].read()["name"] == MODEL
    # a catalog written before ModelCardReader (a FileTextReader entry, no aliases)
    doc = yaml.safe_load(cat_path.read_text())
    doc["entries"][MODEL]["reader"] = "intake.readers.readers:FileTextReader"
    doc["entries"][MODEL]["output_instance"] = "builtins:str"
    doc["aliases"] = {}
    old = cat_path.parent / "old.yaml"
    old.write_text(yaml.safe_dump(doc))
    cat = catalog.open(old)
    assert list(cat) == sorted([TRAJ_A, TRAJ_B, TRAIN, MODEL])
    assert cat[MODEL].read()["name"] == MODEL
    assert catalog.read(cat, MODEL)["name"] == MODEL


@pytest.fixture
def shipped_catalog(monkeypatch) -> Path:
    """The catalog of the source tree, which catalog.open() uses by default."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    path = catalog.shipped_paths()[0]
    if not path.is_file():
        pytest.skip("no catalogs/cdwdata.yaml (not a source checkout)")
    assert catalog.default_path() == path
    return path


def test_shipped_catalogs_open_search_and_read(shipped_catalog):
    for path in catalog.shipped_paths():
        cat = catalog.open(path)
        assert list(cat) == catalog.entries(cat) and len(cat) > 0
        for kind in ("domain-size", "growth-exponents", "structure-factor", "model"):
            hits = catalog.search(cat, kind=kind)
            assert len(hits) > 0, (path, kind)
        hits = catalog.search(cat, kind="growth-exponents", T=0.2, L=64)  # reduced scale
        (name,) = hits
        assert hits[name].read()["alpha"].dims == ("T", "f")
        assert hits[name].metadata["model"] == "holstein-f0.5"  # no {f} template
        (big,) = catalog.search(cat, kind="growth-exponents", T=0.2, L=200)  # paper scale
        assert catalog.metadata(cat, big)["steps"] == 20000
        # five shipped models, all grand canonical: the default (behind the holstein
        # aliases), the most accurate one and its network alone, the density network they
        # replaced, and the one the paper-scale preset names; each card is what its entry
        # describes
        models = catalog.search(cat, kind="model")
        assert sorted(models) == sorted(["holstein-gc-v5", "holstein-gc-v9", "holstein-gc-v10",
                                         "holstein-gc-v11", DEFAULT]), path
        assert aliases()["holstein"] == DEFAULT
        for name in models:
            meta = catalog.metadata(cat, name)
            card = models[name].read()
            assert isinstance(card, dict) and card["name"] == meta["model"] == name
            assert meta["model_kind"] == card["kind"] and meta["grand_canonical"] is True
            levels = name in (DEFAULT, "holstein-gc-v10", "holstein-gc-v11")
            assert meta["model_kind"] == ("levels" if levels else "density")
            assert ("cluster" in card["inference"]) == (name in (DEFAULT, "holstein-gc-v11"))
            assert meta["f"] == meta["f_range"] == card["filling_range"]
            assert meta["T"] == meta["T_range"] == card["temperature_range"]
            assert meta["validation_force_rmse"] == card["metrics"]["validation"]["force_rmse"]
            assert catalog.path_of(cat, name) == \
                (Path(catalog.__file__).resolve().parent / "ml" / "models" / f"{name}.json")
        # they run at every filling the results were made at (holstein-f0.3 ... are names for
        # the default at a filling), and at no filling outside their range
        for f in (0.3, 0.4, 0.5):
            assert sorted(catalog.search(cat, kind="model", f=f, T=0.1)) == sorted(models)
        assert not catalog.search(cat, kind="model", f=0.6)
        assert not catalog.search(cat, kind="model", T=0.5)
        # the f-scan results were made with the earlier canonical model of each filling,
        # which is not in the catalog: each name finds those results and no model entry
        for f in (0.3, 0.4, 0.5):
            found = catalog.search(cat, model=f"holstein-f{f:g}")
            kinds = sorted(catalog.metadata(found, n)["kind"] for n in found)
            assert kinds.count("domain-size") >= 1 and "model" not in kinds, (f, kinds)
        rows = catalog.table(models, columns=("model_kind", "f", "T")).splitlines()[1:]
        assert sorted(r.split()[0] for r in rows) == sorted(models)
        assert all(r.split()[2:] == ["0.25..0.55", "0.1..0.3"] for r in rows)


def test_grand_canonical_model_cards_cover_ranges(cat_path, tmp_path):
    card = {"format": "cdwdata-model/1", "name": "gc-test", "kind": "density",
            "grand_canonical": True, "filling": 0.5, "params": {},
            "filling_range": [0.2499999850988388, 0.55], "temperature_range": [0.1, 0.3],
            "mu_range": [-2.0, 1.0], "training": {"configurations": 12},
            "metrics": {"validation": {"force_rmse": 0.04, "force_mae": 0.01}},
            "weights_sha256": "0" * 64}
    models = tmp_path / "models"
    models.mkdir()
    (models / "gc-test.json").write_text(json.dumps(card))
    shutil.copy(cat_path.parent.parent / "models" / f"{MODEL}.json", models)
    cat = catalog.build(models, tmp_path / "c.yaml")
    m = catalog.metadata(cat, "gc-test")
    assert (m["kind"], m["model"], m["model_kind"], m["grand_canonical"]) == \
        ("model", "gc-test", "density", True)
    assert m["f"] == m["f_range"] == [0.2499999850988388, 0.55]  # the ends of the range
    assert m["T"] == m["T_range"] == [0.1, 0.3] and m["mu_range"] == [-2.0, 1.0]
    assert (m["validation_force_rmse"], m["validation_force_mae"], m["samples"]) == \
        (0.04, 0.01, 12)
    assert "test_rmse" not in m and m["L"] is None
    assert set(catalog.REQUIRED_METADATA) <= set(m)
    # a canonical card keeps what it had
    c = catalog.metadata(cat, MODEL)
    assert (c["f"], c["T"], c["L"], c["samples"], c["test_rmse"]) == ([0.5], [0.1], 8, 3, 0.01)
    assert (c["model_kind"], c["architecture"], c["grand_canonical"]) == ("force", "force", False)
    assert "f_range" not in c and "validation_force_rmse" not in c
    # search: a number matches a range if it lies in it (ends included, to 1e-9)
    assert list(catalog.search(cat, kind="model")) == ["gc-test", MODEL]
    assert list(catalog.search(cat, f=0.4)) == ["gc-test"]
    assert list(catalog.search(cat, f=0.25, T=0.3)) == ["gc-test"]
    assert list(catalog.search(cat, f=0.5, T=0.1)) == ["gc-test", MODEL]
    assert list(catalog.search(cat, f=[0.6, 0.3])) == ["gc-test"]  # any of
    assert list(catalog.search(cat, f=0.56)) == [] and list(catalog.search(cat, T=0.05)) == []
    assert list(catalog.search(cat, f=lambda fs: max(fs) > 0.5)) == ["gc-test"]
    assert list(catalog.search(cat, model_kind="density")) == ["gc-test"]
    # the table and the generated description show ranges as lo..hi
    table = catalog.table(cat, columns=("f", "T", "validation_force_rmse")).splitlines()
    assert table[1].split() == ["gc-test", "0.25..0.55", "0.1..0.3", "0.04"]
    assert table[2].split() == [MODEL, "0.5", "0.1"]
    assert "T=0.1..0.3" in m["description"] and "f=0.25..0.55" in m["description"]


DOCUMENTED = {
    "module docstring": None,
    "docs/catalog.md": Path(__file__).resolve().parent.parent / "docs" / "catalog.md",
}


@pytest.mark.parametrize("where", sorted(DOCUMENTED))
def test_documented_examples_run(where, shipped_catalog):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    if DOCUMENTED[where] is None:
        tests = [t for t in doctest.DocTestFinder().find(catalog) if t.name == catalog.__name__]
    else:
        text = DOCUMENTED[where].read_text()
        tests = [doctest.DocTestParser().get_doctest(text, {}, where, str(DOCUMENTED[where]), 0)]
    runner = doctest.DocTestRunner(optionflags=flags)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5 and result.failed == 0


# --- resolved model names ------------------------------------------------------------------------
def test_model_metadata_holds_resolved_model_names(tmp_path, capsys):
    from cdwdata.cli import main
    from cdwdata.ml.forcefield import MODELS_DIR
    from cdwdata.quench import QuenchConfig, prepare_store

    runs = tmp_path / "runs"
    small = {"L": 8, "temperatures": (0.1,), "runs": 1, "steps": 10, "save_every": 5}
    prepare_store(runs / "template.zarr", QuenchConfig(
        fillings=(0.5, 0.4), forcefield="holstein-f{f}", **small), command="test")
    model_file = (MODELS_DIR / "holstein-f0.5.json").resolve()
    prepare_store(runs / "by-path.zarr", QuenchConfig(
        fillings=(0.5,), forcefield=str(model_file), **small), command="test")
    prepare_store(runs / "ed.zarr", QuenchConfig(fillings=(0.5,), **small), command="test")
    _write_alpha(runs / "legacy.zarr", model="holstein-f{f}", forcefield="holstein-f{f}")
    out = tmp_path / "c.yaml"
    cat = catalog.build(runs, out)
    model = {n: catalog.metadata(cat, n)["model"] for n in cat}
    assert model == {"template": ["holstein-f0.4", "holstein-f0.5"],  # in the order of f
                     "by-path": "holstein-f0.5", "ed": "", "legacy": "holstein-f0.5"}
    assert catalog.metadata(cat, "template")["models"] == {"0.5": "holstein-f0.5",
                                                           "0.4": "holstein-f0.4"}
    assert "{f}" not in catalog.metadata(cat, "template")["description"]
    assert str(MODELS_DIR) not in out.read_text()  # no absolute model path in the catalog
    assert main(["catalog", "list", "--catalog", str(out), "--model", "holstein-f0.5",
                 "--names"]) == 0
    assert capsys.readouterr().out.split() == ["by-path", "legacy", "template"]
    assert main(["catalog", "list", "--catalog", str(out), "--model", "holstein-f0.4"]) == 0
    table = capsys.readouterr().out
    assert "template" in table and "by-path" not in table
    assert "holstein-f0.4,holstein-f0.5" in table
    assert main(["catalog", "list", "--catalog", str(out), "--model", "", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["ed"]
    # a catalog written before names were resolved holds the template: resolved on opening
    doc = yaml.safe_load(out.read_text())
    doc["entries"]["template"]["metadata"]["model"] = "holstein-f{f}"
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(doc))
    assert catalog.metadata(old, "template")["model"] == ["holstein-f0.4", "holstein-f0.5"]
    assert "template" in catalog.search(old, model="holstein-f0.4")


# --- the shipped catalogs are not overwritten by accident ----------------------------------------
def test_shipped_catalogs_and_package_files_are_protected():
    package = Path(catalog.__file__).resolve().parent
    for path in catalog.shipped_paths():
        assert catalog.is_shipped(path)
    assert catalog.shipped_paths()[0] == package.parent / "catalogs" / "cdwdata.yaml"
    assert catalog.is_shipped(package / "catalog_data" / "other.yaml")
    assert catalog.is_shipped(package / "results" / "x" / "c.yaml")
    assert not catalog.is_shipped(package.parent / "catalogs" / "mine.yaml")
    assert not catalog.is_shipped(Path("/tmp/somewhere/cdwdata.yaml"))


def test_cli_build_refuses_the_shipped_catalog(data_dir, tmp_path, monkeypatch, capsys):
    from cdwdata.cli import main

    # the real shipped catalog: refused before anything is scanned (the missing source would
    # make a build fail too, so this check never writes the file even if it regressed)
    real = catalog.shipped_paths()[0]
    before = real.read_bytes() if real.exists() else None
    assert main(["catalog", "build", str(tmp_path / "missing"), "--out", str(real)]) == 2
    err = capsys.readouterr().err
    assert "shipped" in err and "--force-shipped" in err and err.count("\n") == 1
    assert (real.read_bytes() if real.exists() else None) == before
    inside = Path(catalog.__file__).resolve().parent / "catalog_data" / "new.yaml"
    assert main(["catalog", "build", str(tmp_path / "missing"), "--out", str(inside)]) == 2
    assert "shipped" in capsys.readouterr().err and not inside.exists()
    # a stand-in for the shipped catalog: refused, then written with --force-shipped
    shipped = tmp_path / "catalogs" / "cdwdata.yaml"
    monkeypatch.setattr(catalog, "shipped_paths", lambda: [shipped])
    assert main(["catalog", "build", str(data_dir / "data"), "--out", str(shipped)]) == 2
    assert not shipped.exists()
    assert main(["catalog", "build", str(data_dir / "data"), "--out", str(shipped),
                 "--force-shipped"]) == 0
    assert TRAJ_A in catalog.entries(shipped)
    # without --out: catalog.yaml in the working directory
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["catalog", "build", str(data_dir / "data")]) == 0
    assert "catalog.yaml (3 entries)" in capsys.readouterr().out
    assert catalog.entries(tmp_path / "catalog.yaml") == sorted([TRAJ_A, TRAJ_B, TRAIN])


# --- property: search returns exactly the entries whose metadata match ---------------------------
TS, FS, LS = (0.05, 0.1, 0.2), (0.3, 0.4, 0.5), (8, 12, 16)
entry_meta = st.fixed_dictionaries({
    "kind": st.sampled_from(catalog.KINDS),
    "T": st.lists(st.sampled_from(TS), min_size=1, max_size=3, unique=True).map(sorted),
    "f": st.lists(st.sampled_from(FS), min_size=1, max_size=3, unique=True).map(sorted),
    "L": st.sampled_from(LS),
    "model": st.sampled_from(["", "holstein-f0.5"]),
})
query_value = {
    "kind": st.sampled_from(catalog.KINDS),
    "T": st.one_of(st.sampled_from(TS), st.lists(st.sampled_from(TS), min_size=1, max_size=2)),
    "f": st.one_of(st.sampled_from(FS), st.lists(st.sampled_from(FS), min_size=1, max_size=2)),
    "L": st.sampled_from(LS),
    "model": st.sampled_from(["", "holstein-f0.5"]),
}
queries = st.sets(st.sampled_from(sorted(query_value)), max_size=3).flatmap(
    lambda keys: st.fixed_dictionaries({k: query_value[k] for k in keys}))


def _oracle(meta: dict, query: dict) -> bool:
    for key, want in query.items():
        wants = list(want) if isinstance(want, list) else [want]
        value = meta[key]
        have = value if isinstance(value, list) else [value]
        if not any(w in have for w in wants):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(metas=st.lists(entry_meta, max_size=8), query=queries)
def test_search_returns_exactly_the_matching_entries(metas, query):
    import intake
    from intake.readers.datatypes import Zarr
    from intake.readers.readers import XArrayDatasetReader

    cat = intake.entry.Catalog(metadata={"name": "prop"})
    for i, meta in enumerate(metas):
        cat[f"e{i}"] = XArrayDatasetReader(Zarr(url=f"{{CATALOG_DIR}}/e{i}.zarr"),
                                           metadata={**meta, "description": f"entry {i}"})
    expected = [f"e{i}" for i, m in enumerate(metas) if _oracle(m, query)]
    assert list(catalog.search(cat, **query)) == sorted(expected)
    with tempfile.TemporaryDirectory() as tmp:  # and the same after a YAML round trip
        path = Path(tmp) / "prop.yaml"
        cat.to_yaml_file(str(path))
        assert list(catalog.search(catalog.open(path), **query)) == sorted(expected)
