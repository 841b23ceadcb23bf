"""Small failures handled cleanly: Ctrl-C, empty model names, failed resumes, nothing to
resume, catalogs that name foreign code, and stores that open plainly with xarray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import soak
from conftest import TINY_ARGS

from cdwdata import store
from cdwdata.errors import CatalogError, ModelError

pytestmark = pytest.mark.reliability


def _as_from_a_terminal() -> None:
    """Default SIGINT handling in the child, as a shell in a terminal starts commands (a test
    run started in the background, ``pytest &``, ignores SIGINT, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("command", [
    ["ed-quench", "--L", "8", "--runs", "2", "--steps", "20000", "--save-every", "10"],
    ["quench", "--model", "ed", "--L", "8", "--runs", "2", "--steps", "20000",
     "--save-every", "10", "--workers", "1"],
])
def test_ctrl_c_prints_one_line(command, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole process group (driver and, for
    ``cdw quench``, the Dask worker processes): one line, exit code 130."""
    out = tmp_path / "q.zarr"
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "cdwdata.cli",
                             *command, "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=soak.cdw_env(), start_new_session=True, text=True,
                            preexec_fn=_as_from_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while (soak.progress(soak.Job(command[0], [], out)) or 0) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # show where it hangs (faulthandler on SIGABRT)
            status = open(f"/proc/{proc.pid}/status").read()
            os.kill(proc.pid, signal.SIGABRT)
            masks = [line for line in status.splitlines() if line.startswith("Sig")]
            pytest.fail(f"no exit after Ctrl-C ({masks}):\n"
                        + proc.communicate(timeout=30)[1][-5000:])
    finally:
        if proc.poll() is None:
            soak.kill_group(proc)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        f"cdw {command[0]}: interrupted; rerun with --resume to continue"], err


@pytest.mark.parametrize("name", ["", "/", "   "])
def test_an_empty_model_name_is_a_model_error(name):
    from cdwdata.ml import load_model

    with pytest.raises(ModelError, match="names no model"):
        load_model(name)


def test_a_failed_resume_does_not_join_the_history(tiny_store, tmp_path, monkeypatch, cdw):
    from cdwdata import quench

    path = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, path)
    before = store.read_attrs(path)["history"]

    def fail(*args, **kwargs):
        raise quench.BlowUpError("the integration blew up")

    monkeypatch.setattr(quench, "run_segment", fail)
    rc, _, err = cdw("ed-quench", *TINY_ARGS, "--out", path, "--resume")
    assert rc == 2 and "blew up" in err
    assert store.read_attrs(path)["history"] == before
    monkeypatch.undo()
    rc, _, _ = cdw("ed-quench", *TINY_ARGS, "--out", path, "--resume")
    assert rc == 0
    after = store.read_attrs(path)["history"]
    assert after[:-1] == before and len(after) == len(before) + 1  # a success joins it


@pytest.mark.parametrize("command", [
    ["quench", "--model", "ed", "--L", "8"], ["ed-quench", *TINY_ARGS]])
def test_resume_with_no_store_is_an_error(command, tmp_path, cdw):
    path = tmp_path / "nowhere.zarr"
    rc, _, err = cdw(*command, "--out", path, "--resume")
    assert rc == 2 and "nothing to resume" in err and str(path) in err
    assert not path.exists()


def test_stores_open_plainly_with_xarray(tiny_store):
    """Consolidated metadata (no RuntimeWarning) and no checkpoint in the user's view."""
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(tiny_store)
    assert "slot" not in ds.dims
    assert not [v for v in ds.variables if str(v).startswith(("ckpt", "checkpoint"))]
    assert {"Q", "v", "n", "F", "frames_done", "mu"} <= set(ds.data_vars)
    np.testing.assert_array_equal(ds.Q.values, store.open_dataset(tiny_store).Q.values)


def test_old_stores_with_root_checkpoints_still_open_resume_and_hide_them(tiny_store, tmp_path,
                                                                          cdw):
    """Stores made before the checkpoint moved into its subgroup keep ``ckpt_*`` arrays."""
    from cdwdata.store import _group

    path = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, path)
    g = _group(path, "r+")
    ck = g[store.CKPT_GROUP]
    for name in (*store.CKPT_VARS, "step"):
        src = ck[name]
        dst = g.create_array(f"ckpt_{name}", shape=src.shape, chunks=src.chunks,
                             dtype=src.dtype, fill_value=src.fill_value,
                             dimension_names=src.metadata.dimension_names)
        dst[...] = src[...]
    shutil.rmtree(path / store.CKPT_GROUP)
    store._consolidate(path)
    assert store.private_variables(path) == [f"ckpt_{n}" for n in sorted(
        (*store.CKPT_VARS, "step"))]
    ds = store.open_dataset(path)
    assert not [v for v in ds.variables if str(v).startswith("ckpt_")]
    assert store.verify(path).ok
    w = store.TrajectoryWriter(path)
    w.mark_frames_done(0, 0, [0], 2)
    rc, _, err = cdw("ed-quench", *TINY_ARGS, "--out", path, "--resume")
    assert rc == 0, err
    np.testing.assert_array_equal(store.open_dataset(path).Q.values,
                                  store.open_dataset(tiny_store).Q.values)


@pytest.mark.parametrize("where", ["entry cls", "reader", "datatype", "user parameter cls"])
def test_a_catalog_naming_foreign_code_is_refused_before_anything_is_imported(
        where, tmp_path, monkeypatch):
    """A module placed beside a downloaded catalog, with the current folder on sys.path (as
    in notebooks), must never be imported by cdwdata.catalog.open."""
    from cdwdata import catalog

    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass X:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = {"reader": "intake.readers.readers:XArrayDatasetReader", "kwargs": {},
             "metadata": {}, "user_parameters": {}, "output_instance": None}
    doc = {"version": 2, "entries": {"a": entry}, "data": {}, "user_parameters": {},
           "aliases": {}, "metadata": {}}
    if where == "entry cls":
        entry["cls"] = "evilmod:X"
    elif where == "reader":
        entry["reader"] = "evilmod:X"
    elif where == "datatype":
        doc["data"]["d"] = {"datatype": "evilmod:X", "kwargs": {}}
    else:
        doc["user_parameters"]["p"] = {"cls": "evilmod:X", "kwargs": {}}
    import yaml

    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError, match="evilmod:X") as info:
        catalog.open(path)
    assert "\n" not in str(info.value)
    assert not marker.exists() and "evilmod" not in sys.modules
