"""Security: nothing unpickles untrusted files, YAML is parsed safely, Dask listens locally.

* A scan of every module in ``cdwdata/`` (its syntax tree, so formatting cannot hide a call):
  no ``pickle``/``dill``/``cloudpickle``/``marshal``/``shelve`` loads, no ``torch.load``
  without ``weights_only=True``, no ``yaml.load`` without a safe loader, no ``yaml.unsafe_load``
  / ``full_load``, no ``numpy.load(allow_pickle=True)``, no ``eval``/``exec``.
* Pickles disguised as model files raise ModelError and are never executed (their payload
  would create a marker file), through the Python API and through ``cdw``.
* ``cdwdata.ensemble.dask_client()`` binds scheduler, workers and dashboard to 127.0.0.1.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest

import cdwdata
from cdwdata.errors import ModelError

pytestmark = pytest.mark.reliability

PACKAGE = Path(cdwdata.__file__).resolve().parent
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                  "joblib"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Unsafe deserialisation in ``source``: one ``file:line: what`` per finding."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        root, _, attr = name.rpartition(".")
        if root.split(".")[0] in UNSAFE_MODULES and attr in ("load", "loads", "Unpickler",
                                                             "open"):
            found.append(f"{where}: {name}")
        elif name.endswith("torch.load"):
            if not _is_true(_kw(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
        elif root.split(".")[-1] == "yaml" and attr in ("unsafe_load", "full_load",
                                                       "unsafe_load_all", "full_load_all"):
            found.append(f"{where}: {name}")
        elif root.split(".")[-1] == "yaml" and attr in ("load", "load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).split(".")[-1] not in SAFE_LOADERS:
                found.append(f"{where}: {name} without SafeLoader")
        elif attr == "load" and root.split(".")[-1] in ("np", "numpy") and \
                _is_true(_kw(node, "allow_pickle")):
            found.append(f"{where}: {name}(allow_pickle=True)")
        elif name in ("eval", "exec"):
            found.append(f"{where}: {name}()")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = """
import pickle
from dill import loads
import torch, yaml, numpy as np
pickle.load(f)
torch.load(p)
torch.load(p, weights_only=False)
yaml.load(s)
yaml.load(s, Loader=yaml.Loader)
yaml.unsafe_load(s)
np.load(p, allow_pickle=True)
eval("1")
"""
    good = """
import torch, yaml, numpy as np
torch.load(p, weights_only=True)
yaml.safe_load(s)
yaml.load(s, Loader=yaml.SafeLoader)
yaml.load(s, yaml.CSafeLoader)
np.load(p)
model.eval()
"""
    assert len(unsafe_calls(bad)) == 10
    assert unsafe_calls(good) == []


def test_no_code_path_in_cdwdata_deserialises_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = []
    for path in files:
        found += unsafe_calls(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert found == [], "unsafe deserialisation:\n" + "\n".join(found)


class _Payload:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _disguise(folder: Path, name: str, blob: bytes, card_matches: bool) -> Path:
    """``name.safetensors`` holding ``blob`` and a well-formed card for it."""
    from cdwdata import HolsteinParams
    from cdwdata.ml import modelfile
    from cdwdata.ml.model import ForceModel

    stem = folder / name
    model = ForceModel()
    modelfile.save(model, stem, {"params": HolsteinParams().to_dict(), "filling": 0.5,
                                 "electron_T": 0.1})
    (folder / f"{name}.safetensors").write_bytes(blob)
    if card_matches:  # the card vouches for the pickle: only the parser stands in the way
        card = json.loads((folder / f"{name}.json").read_text())
        card["weights_sha256"] = modelfile.sha256_bytes(blob)
        (folder / f"{name}.json").write_text(json.dumps(card))
    return stem


def _pickles(marker: Path) -> dict[str, bytes]:
    import torch

    buf = io.BytesIO()
    torch.save({"weights": _Payload(marker)}, buf)  # a torch zip file with data.pkl inside
    return {"pickle-p2": pickle.dumps(_Payload(marker), protocol=2),
            "pickle-p5": pickle.dumps(_Payload(marker), protocol=5),
            "torch-save": buf.getvalue()}


@pytest.mark.parametrize("card_matches", [True, False], ids=["card-vouches", "hash-differs"])
@pytest.mark.parametrize("kind", ["pickle-p2", "pickle-p5", "torch-save"])
def test_pickle_disguised_as_a_model_is_refused_and_never_run(kind, card_matches, tmp_path):
    from cdwdata.ml import load_model

    marker = tmp_path / "pwned"
    stem = _disguise(tmp_path, "evil", _pickles(marker)[kind], card_matches)
    assert not marker.exists()
    with pytest.raises(ModelError) as info:
        load_model(stem)
    assert "evil.safetensors" in str(info.value)
    assert not marker.exists(), "the pickle payload was executed"


def test_pickle_disguised_as_a_model_through_the_cli(tmp_path, cdw, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    stem = _disguise(tmp_path, "evil", _pickles(marker)["pickle-p2"], card_matches=True)
    rc, out, err = cdw("quench", "--model", str(stem), "--L", "8", "--steps", "2",
                       "--save-every", "1", "--no-progress", "--out", "q.zarr")
    assert rc == 2 and "evil.safetensors" in err and len(err.strip().splitlines()) == 1
    rc, out, err = cdw("validate", str(stem), "--data", "nowhere.zarr", "--no-plots")
    assert rc == 2 and "evil.safetensors" in err
    assert not marker.exists(), "the pickle payload was executed"
    assert not (tmp_path / "q.zarr").exists()


def _listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    out = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        out += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def test_dask_client_binds_scheduler_workers_and_dashboard_to_localhost():
    from cdwdata.ensemble import dask_client

    with dask_client() as client:
        assert urlparse(client.scheduler.address).hostname == "127.0.0.1"
        link = client.dashboard_link
        assert urlparse(link).hostname == "127.0.0.1", link
        workers = client.scheduler_info()["workers"]
        assert workers and all(urlparse(a).hostname == "127.0.0.1" for a in workers)
        for info in workers.values():
            if info.get("nanny"):
                assert urlparse(info["nanny"]).hostname == "127.0.0.1"
        listening = _listening(os.getpid())
        dashboard_port = urlparse(link).port
        assert dashboard_port in {port for _, port in listening}, \
            "the dashboard is not listening where its link says"
        exposed = [(ip, port) for ip, port in listening if ip not in ("127.0.0.1", "::1")]
        assert exposed == [], f"listening beyond localhost: {exposed}"
