"""Bad input is refused with a one-line error naming it; existing data is never touched.

The table ``CLI_CASES`` runs ``cdw`` in this process (``cdwdata.cli.main``): each case must exit
with code 2, print one line on stderr that names the bad value or parameter (argparse usage
errors print the usage and then that line), no traceback, and leave every existing file it
points at byte for byte as it was. With ``--debug`` the same call raises the exception.
``API_CASES`` feed bad arrays to ``cdwdata.ed`` and to a loaded ML model. The special cases
(read-only folder, full disk, catalogs) follow the tables.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soak
from conftest import TINY_ARGS, run_cli, tree_hash

from cdwdata import HolsteinParams, ed, store
from cdwdata.errors import CdwError, InputError, ModelError, ParameterError

pytestmark = pytest.mark.reliability

L8 = ["--L", "8", "--runs", "1", "--steps", "4", "--save-every", "2", "--no-progress"]
Q8 = ["--L", "8", "--runs", "1", "--steps", "4", "--save-every", "2", "--no-progress",
      "--workers", "1"]
DS8 = ["--L", "8", "--f", "0.5", "--random", "2", "--quench-runs", "0", "--no-progress",
       "--workers", "1"]


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def trainset(tmp_path_factory) -> Path:
    """Tiny ED training set (L = 8, f = 0.5): 16 random + 8 'quench' snapshots."""
    from cdwdata.trainset import TrainsetConfig, random_configuration

    path = tmp_path_factory.mktemp("ts") / "ts.zarr"
    cfg = TrainsetConfig(L=8, fillings=(0.5,), T=0.1, n_random=16, quench_runs=0)
    sources = ["random"] * 16 + ["quench"] * 8
    runs = list(range(16)) + [0, 0, 1, 1, 2, 2, 3, 3]
    steps = [-1] * 16 + [10, 20] * 4
    store.create_trainset(path, 8, (0.5,), sources, runs, steps, 0.1, cfg.attrs("test"))
    w = store.TrainsetWriter(path)
    Q = np.stack([random_configuration(cfg, 0.5, s) for s in range(24)])
    res = ed.solve(Q, 0.1, 0.5, cfg.params)
    for s in range(24):
        w.write_sample(0, s, {"Q": Q[s], "F": res.F[s], "n": res.n[s]})
    return path


@pytest.fixture(scope="module")
def models(trainset, tmp_path_factory) -> dict[str, Path]:
    """A tiny model trained with cdwdata.ml.train, and broken copies of it."""
    from cdwdata.ml.train import train

    d = tmp_path_factory.mktemp("models")
    good = d / "tiny-f0.5"
    train(trainset, 0.5, good, epochs=2, batch_size=256, seed=0, progress=False)
    out = {"model": good}
    for name in ("corrupt", "badcard", "noweights"):
        for suffix in (".safetensors", ".json"):
            shutil.copy(f"{good}{suffix}", d / f"{name}{suffix}")
        out[name] = d / name
    w = d / "corrupt.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated weights
    (d / "badcard.json").write_text('{"format": "cdwdata-model/1", "name": ')  # cut JSON
    (d / "noweights.safetensors").unlink()
    return out


class Paths(dict):
    """Placeholder values of one case, made on first use in the test's tmp_path."""

    def __init__(self, tmp_path: Path, tiny_store: Path, trainset: Path, models) -> None:
        super().__init__()
        self.tmp, self.tiny, self.ts, self.models = tmp_path, tiny_store, trainset, models

    def __missing__(self, key: str):
        t = self.tmp
        if key == "tmp":
            value = t
        elif key == "store":
            value = t / "existing.zarr"
            shutil.copytree(self.tiny, value)
        elif key == "trainset":
            value = t / "existing-ts.zarr"
            shutil.copytree(self.ts, value)
        elif key == "file":
            value = t / "notes.txt"
            value.write_text("not a store\n")
        elif key == "emptydir":
            value = t / "empty"
            value.mkdir()
        elif key == "yaml":
            value = t / "bad.yaml"
            value.write_text("version: 2\nentries: {a: [1, 2\n")
        elif key in ("missing", "new"):
            value = t / f"{key}.zarr"
        elif key == "models":
            value = None
        else:
            value = self.models[key]
        self[key] = value
        return value


@pytest.fixture
def paths(tmp_path, tiny_store, trainset, models, monkeypatch) -> Paths:
    monkeypatch.chdir(tmp_path)
    return Paths(tmp_path, tiny_store, trainset, models)


# ------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class Case:
    """``cdw`` arguments (``{name}`` placeholders, see :class:`Paths`) and what must happen.

    expect: fragments of the error line (the bad value or parameter); untouched: placeholders
    of files that must not change; usage: argparse error (SystemExit 2 with usage text);
    no_cluster: the error must come before any Dask cluster is started.
    """

    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    untouched: tuple[str, ...] = ()
    usage: bool = False
    no_cluster: bool = False


CLI_CASES = [
    # lattice size
    Case("ed-quench-odd-L", ("ed-quench", *L8, "--L", "7"), ("L=7", "even")),
    Case("ed-quench-L-below-4", ("ed-quench", *L8, "--L", "2"), ("L=2", ">= 4")),
    Case("quench-odd-L", ("quench", "--model", "ed", *Q8, "--L", "9"), ("L=9",)),
    Case("ed-dataset-odd-L", ("ed-dataset", *DS8, "--L", "5"), ("L=5",), no_cluster=True),
    Case("ed-quench-L-not-int", ("ed-quench", "--L", "eight"), ("--L", "'eight'"), usage=True),
    # filling
    Case("ed-quench-f-zero", ("ed-quench", *L8, "--f", "0"), ("f=0.0", "(0, 1)")),
    Case("ed-quench-f-one", ("ed-quench", *L8, "--f", "1"), ("f=1.0",)),
    Case("quench-f-negative", ("quench", "--model", "ed", *Q8, "--f", "-0.3"), ("f=-0.3",)),
    Case("ed-dataset-f-above-1", ("ed-dataset", *DS8, "--f", "1.5"), ("f=1.5",),
         no_cluster=True),
    # temperature
    Case("ed-quench-T-negative", ("ed-quench", *L8, "--T", "-0.1"), ("T=-0.1",)),
    Case("quench-T-negative", ("quench", "--model", "ed", *Q8, "--T", "0.1", "-1"), ("T=-1.0",)),
    Case("ed-quench-T-nan", ("ed-quench", *L8, "--T", "nan"), ("T must be finite, got nan",)),
    Case("ed-dataset-T-negative", ("ed-dataset", *DS8, "--T", "-2"), ("T=-2.0",),
         no_cluster=True),
    # steps and frames
    Case("ed-quench-negative-steps", ("ed-quench", *L8, "--steps", "-10"), ("steps=-10",)),
    Case("quench-negative-steps", ("quench", "--model", "ed", *Q8, "--steps", "-4"),
         ("steps=-4",)),
    Case("ed-quench-save-every-zero", ("ed-quench", *L8, "--save-every", "0"),
         ("save_every=0",)),
    Case("ed-quench-save-every-above-steps", ("ed-quench", *L8, "--steps", "4",
                                              "--save-every", "10"), ("save_every=10", "steps=4")),
    Case("ed-quench-steps-not-multiple", ("ed-quench", *L8, "--steps", "10", "--save-every", "4"),
         ("steps=10", "save_every=4")),
    Case("ed-quench-zero-runs", ("ed-quench", *L8, "--runs", "0"), ("runs=0",)),
    Case("ed-dataset-duplicate-f", ("ed-dataset", *DS8, "--f", "0.5", "0.5"),
         ("(0.5, 0.5)", "distinct"), no_cluster=True),
    Case("ed-dataset-negative-seed", ("ed-dataset", *DS8, "--seed", "-1"), ("seed=-1",),
         no_cluster=True),
    Case("ed-dataset-negative-random", ("ed-dataset", *DS8, "--random", "-3"), ("-3",),
         no_cluster=True),
    # model parameters
    Case("ed-quench-negative-dt", ("ed-quench", *L8, "--dt", "-0.05"), ("dt=-0.05",)),
    Case("ed-quench-inf-dt", ("ed-quench", *L8, "--dt", "inf"), ("dt must be finite",)),
    Case("ed-quench-zero-mass", ("ed-quench", *L8, "--mass", "0"), ("mass=0.0",)),
    Case("ed-quench-negative-gamma", ("ed-quench", *L8, "--gamma", "-1"), ("gamma=-1.0",)),
    Case("ed-quench-unstable-kappa", ("ed-quench", *L8, "--kappa", "0.3"), ("kappa=0.3",)),
    # models
    Case("quench-unknown-model", ("quench", *Q8, "--model", "no-such-model"), ("'no-such-model'",)),
    Case("quench-truncated-model", ("quench", *Q8, "--model", "{corrupt}"),
         ("corrupt.safetensors", "sha256"), untouched=("corrupt",)),
    Case("quench-model-card-not-json", ("quench", *Q8, "--model", "{badcard}"),
         ("badcard.json", "not valid JSON")),
    Case("quench-model-weights-missing", ("quench", *Q8, "--model", "{noweights}"),
         ("noweights.safetensors", "missing")),
    Case("quench-model-other-params", ("quench", *Q8, "--model", "{model}", "--g", "3.0"),
         ("g=3.0", "model: 3.5")),
    Case("quench-model-other-filling", ("quench", *Q8, "--model", "{model}", "--f", "0.4"),
         ("f=0.4", "f=0.5")),
    Case("validate-truncated-model", ("validate", "{corrupt}", "--data", "{trainset}",
                                      "--no-plots"), ("corrupt.safetensors",),
         untouched=("trainset",)),
    Case("validate-unknown-model", ("validate", "nosuch-model", "--data", "{trainset}"),
         ("'nosuch-model'",), untouched=("trainset",)),
    Case("train-missing-data", ("train", "--data", "{missing}", "--f", "0.5", "--out",
                                "{tmp}/m"), ("missing.zarr", "does not exist")),
    Case("train-filling-not-in-set", ("train", "--data", "{trainset}", "--f", "0.3", "--out",
                                      "{tmp}/m", "--epochs", "1"), ("f=0.3",),
         untouched=("trainset",)),
    Case("train-over-existing-model", ("train", "--data", "{trainset}", "--f", "0.5", "--out",
                                       "{model}", "--epochs", "1"), ("tiny-f0.5", "exists"),
         untouched=("model",)),
    # existing output and resume
    Case("ed-quench-out-exists", ("ed-quench", *L8, "--out", "{store}"),
         ("existing.zarr", "already exists", "--resume"), untouched=("store",)),
    Case("quench-out-exists", ("quench", "--model", "ed", *Q8, "--out", "{store}"),
         ("existing.zarr", "already exists"), untouched=("store",)),
    Case("ed-dataset-out-exists", ("ed-dataset", *DS8, "--out", "{trainset}"),
         ("existing-ts.zarr", "already exists"), untouched=("trainset",), no_cluster=True),
    Case("ed-quench-out-is-a-file", ("ed-quench", *L8, "--out", "{file}"),
         ("notes.txt", "already exists"), untouched=("file",)),
    Case("ed-quench-resume-other-dt", ("ed-quench", *TINY_ARGS, "--out", "{store}", "--resume",
                                       "--dt", "0.04"), ("cannot resume", "0.04"),
         untouched=("store",)),
    Case("ed-quench-resume-other-L", ("ed-quench", *TINY_ARGS, "--out", "{store}", "--resume",
                                      "--L", "12"), ("L=8", "L=12"), untouched=("store",)),
    Case("ed-quench-resume-other-steps", ("ed-quench", *TINY_ARGS, "--out", "{store}",
                                          "--resume", "--steps", "8"), ("steps=4", "steps=8"),
         untouched=("store",)),
    Case("quench-resume-other-dt", ("quench", "--out", "{store}", "--resume", "--dt", "0.04",
                                    "--no-progress", "--workers", "1"), ("cannot resume", "0.04"),
         untouched=("store",)),
    Case("ed-quench-resume-a-trainset", ("ed-quench", *L8, "--out", "{trainset}", "--resume"),
         ("training-set",), untouched=("trainset",)),
    Case("ed-dataset-resume-other-dt", ("ed-dataset", *DS8, "--T", "0.1", "--out", "{trainset}",
                                        "--resume", "--dt", "0.04"), ("cannot resume", "0.04"),
         untouched=("trainset",), no_cluster=True),
    Case("ed-dataset-resume-other-random", ("ed-dataset", *DS8, "--T", "0.1", "--random", "5",
                                            "--out", "{trainset}", "--resume"),
         ("n_random", "5"), untouched=("trainset",), no_cluster=True),
    # info, catalogs, the command line itself
    Case("info-missing-path", ("info", "{missing}"), ("missing.zarr", "does not exist")),
    Case("info-plain-file", ("info", "{file}"), ("notes.txt",), untouched=("file",)),
    Case("info-empty-folder", ("info", "{emptydir}"), ("empty",), untouched=("emptydir",)),
    Case("catalog-malformed-yaml", ("catalog", "list", "--catalog", "{yaml}"),
         ("bad.yaml", "malformed YAML"), untouched=("yaml",)),
    Case("catalog-build-missing-store", ("catalog", "build", "{missing}", "--out",
                                         "{tmp}/cat.yaml"), ("missing.zarr",)),
    Case("unknown-subcommand", ("frobnicate", "--L", "8"), ("invalid choice", "'frobnicate'"),
         usage=True),
    Case("unknown-option", ("ed-quench", "--bogus", "1"), ("unrecognized arguments",
                                                          "--bogus"), usage=True),
    Case("resume-and-overwrite", ("ed-quench", *L8, "--resume", "--overwrite"),
         ("--overwrite", "not allowed with"), usage=True),
]


def _fill(argv, paths: Paths) -> list[str]:
    out = []
    for a in argv:
        if "{" in a:
            a = a.format_map(paths)
        out.append(a)
    return out


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_refuses_bad_input(case: Case, paths: Paths, cdw, monkeypatch):
    argv = _fill(case.argv, paths)
    before = {name: tree_hash(paths[name]) for name in case.untouched}
    if case.no_cluster:
        def no_cluster(*a, **k):
            raise AssertionError("a Dask cluster was started before the input was checked")

        monkeypatch.setattr("cdwdata.ensemble.dask_client", no_cluster)
    rc, out, err = cdw(*argv)
    assert rc == 2, f"exit code {rc}; stderr: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if case.usage:
        assert lines[0].startswith("usage: cdw")
        line = lines[-1]
        assert line.startswith("cdw") and "error:" in line
    else:
        assert len(lines) == 1, f"expected one line, got: {err!r}"
        line = lines[0]
        assert line.startswith(f"cdw {argv[0]}: error: ")
    for fragment in case.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    for name, digest in before.items():
        assert tree_hash(paths[name]) == digest, f"{name} was modified"
    assert not paths["new"].exists()
    if not case.usage:
        with pytest.raises((CdwError, ValueError, OSError)):
            run_cli("--debug", *argv)
        for name, digest in before.items():
            assert tree_hash(paths[name]) == digest, f"{name} was modified (--debug)"


def test_console_script_prints_one_line_and_traceback_only_with_debug(tmp_path):
    """The real ``cdw`` executable: exit code 2, one line; ``--debug`` adds the traceback."""
    cmd = [sys.executable, "-m", "cdwdata.cli"]
    argv = ["ed-quench", "--L", "7", "--out", str(tmp_path / "x.zarr")]
    plain = subprocess.run([*cmd, *argv], capture_output=True, text=True, env=soak.cdw_env())
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        "cdw ed-quench: error: L=7 is not allowed: L must be an even integer >= 4"]
    debug = subprocess.run([*cmd, "--debug", *argv], capture_output=True, text=True,
                           env=soak.cdw_env())
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "L=7" in debug.stderr
    assert not (tmp_path / "x.zarr").exists()


# ------------------------------------------------------------------------------ Python API

def _Q(shape=(8, 8), seed=0):
    return np.random.default_rng(seed).normal(0.0, 1.0, shape)


def _with(value, where=(2, 3)):
    Q = _Q()
    Q[where] = value
    return Q


API_CASES = [
    ("ed-nan", lambda m: ed.forces(_with(np.nan), 0.1, 0.5), InputError, ("non-finite",)),
    ("ed-inf", lambda m: ed.forces(_with(np.inf), 0.1, 0.5), InputError, ("non-finite",)),
    ("ed-density-nan", lambda m: ed.density(_with(np.nan), 0.1, 0.5), InputError,
     ("non-finite",)),
    ("ed-torch-nan", lambda m: ed.forces(__import__("torch").tensor(_with(np.nan)), 0.1, 0.5),
     InputError, ("non-finite",)),
    ("ed-torch-complex", lambda m: ed.forces(__import__("torch").tensor(_Q() + 1j), 0.1, 0.5),
     InputError, ("complex128",)),
    ("ed-torch-bool", lambda m: ed.forces(__import__("torch").ones(8, 8, dtype=bool), 0.1, 0.5),
     InputError, ("torch.bool",)),
    ("ed-not-square", lambda m: ed.forces(_Q((8, 6)), 0.1, 0.5), InputError, ("(8, 6)",)),
    ("ed-odd-L", lambda m: ed.forces(_Q((7, 7)), 0.1, 0.5), InputError, ("L=7",)),
    ("ed-1d", lambda m: ed.forces(_Q((64,)), 0.1, 0.5), InputError, ("(64,)",)),
    ("ed-complex", lambda m: ed.forces(_Q().astype(complex), 0.1, 0.5), InputError,
     ("complex128",)),
    ("ed-strings", lambda m: ed.forces(np.full((8, 8), "a"), 0.1, 0.5), InputError, ("<U1",)),
    ("ed-negative-T", lambda m: ed.forces(_Q(), -0.5, 0.5), ParameterError, ("T=-0.5",)),
    ("ed-f-above-1", lambda m: ed.forces(_Q(), 0.1, 1.2), ParameterError, ("f=1.2",)),
    ("ed-bad-params", lambda m: ed.forces(_Q(), 0.1, 0.5, HolsteinParams(dt=0)), ParameterError,
     ("dt=0",)),
    ("model-nan", lambda m: m.forces(_with(np.nan)), InputError, ("non-finite",)),
    ("model-inf", lambda m: m.forces(_with(-np.inf)), InputError, ("non-finite",)),
    ("model-density-nan", lambda m: m.density(_with(np.nan)), InputError, ("non-finite",)),
    ("model-not-square", lambda m: m.forces(_Q((8, 10))), InputError, ("(8, 10)",)),
    ("model-odd-L", lambda m: m.forces(_Q((5, 5))), InputError, ("L=5",)),
    ("model-complex", lambda m: m.forces(_Q().astype(np.complex64)), InputError,
     ("complex64",)),
    ("model-other-params", lambda m: __import__("cdwdata").ml.load_model(
        m.path, params=HolsteinParams(g=3.0)), ModelError, ("g=3.0",)),
    ("model-other-filling", lambda m: __import__("cdwdata").ml.load_model(m.path, f=0.3),
     ModelError, ("f=0.3",)),
]


@pytest.mark.parametrize("call, exc, expect", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_arrays(call, exc, expect, models):
    from cdwdata.ml import load_model

    model = load_model(models["model"])
    with pytest.raises(exc) as info:
        call(model)
    msg = str(info.value)
    assert "\n" not in msg
    for fragment in expect:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


# ------------------------------------------------------------------------------ special cases

def _make_read_only(folder: Path):
    """Make ``folder`` unwritable even for root; return an undo function (or skip)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None:
        pytest.skip("running as root (chmod does not stop root) and no chattr here")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i is not allowed: {done.stderr!r}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("command", ["ed-quench", "ed-dataset", "train"])
def test_read_only_output_folder(command, tmp_path, trainset, cdw, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("precious\n")
    undo = _make_read_only(ro)
    try:
        if command == "ed-quench":
            argv = ["ed-quench", *L8, "--out", str(ro / "x.zarr")]
        elif command == "ed-dataset":
            monkeypatch.setattr("cdwdata.ensemble.dask_client", None)  # must fail before
            argv = ["ed-dataset", *DS8, "--out", str(ro / "x.zarr")]
        else:
            argv = ["train", "--data", str(trainset), "--f", "0.5", "--out", str(ro / "m"),
                    "--epochs", "1", "--no-progress"]
        rc, out, err = cdw(*argv)
    finally:
        undo()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(ro) in lines[0]
    assert "Permission denied" in lines[0] or "Operation not permitted" in lines[0]
    assert sorted(p.name for p in ro.iterdir()) == ["keep.txt"]
    assert (ro / "keep.txt").read_text() == "precious\n"


def _fill_disk_after(monkeypatch, n_writes: int) -> dict:
    """Make zarr's local store fail with ENOSPC after ``n_writes`` successful chunk writes."""
    from zarr.storage import LocalStore

    real = LocalStore.set
    state = {"writes": 0, "failed": 0}

    async def set_(self, key, value):
        if not key.endswith("zarr.json"):
            if state["writes"] >= n_writes:
                state["failed"] += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                              os.path.join(str(self.root), key))
            state["writes"] += 1
        return await real(self, key, value)

    monkeypatch.setattr(LocalStore, "set", set_)
    return state


FULL_ARGV = ["ed-quench", "--L", "8", "--runs", "2", "--steps", "12", "--save-every", "2",
             "--seed", "4", "--no-progress"]


@pytest.mark.parametrize("n_writes", [23, 57])
def test_full_disk_while_writing_frames_is_reported_and_resumable(n_writes, tmp_path, cdw,
                                                                   monkeypatch):
    """ENOSPC after some frames: exit 2 with a clear line; --resume then finishes the run bit
    for bit as if nothing had happened."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(*FULL_ARGV, "--out", "ref.zarr") == 0
    with monkeypatch.context() as m:
        state = _fill_disk_after(m, n_writes)
        rc, out, err = cdw(*FULL_ARGV, "--out", "full.zarr")
    assert state["failed"] >= 1
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "No space left on device" in lines[0] and "full.zarr" in lines[0]
    assert "--resume" in lines[0]
    done = store.frames_done("full.zarr")
    assert (done < 7).all()
    rc, out, err = cdw(*FULL_ARGV, "--out", "full.zarr", "--resume")
    assert rc == 0, err
    soak.compare_stores(tmp_path / "full.zarr", tmp_path / "ref.zarr")


def test_full_disk_while_creating_the_store_leaves_nothing_or_a_resumable_store(
        tmp_path, cdw, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        _fill_disk_after(m, 0)
        rc, out, err = cdw(*FULL_ARGV, "--out", "full.zarr")
    assert rc == 2 and "No space left on device" in err and "full.zarr" in err
    assert len(err.strip().splitlines()) == 1
    # creation is atomic: nothing is left, and the advice is to rerun (not to --resume)
    assert not (tmp_path / "full.zarr").exists()
    assert err.strip().endswith("free some disk space, then rerun")
    rc, out, err = cdw(*FULL_ARGV, "--out", "full.zarr", "--resume")
    assert rc == 2 and "nothing to resume" in err
    rc, out, err = cdw(*FULL_ARGV, "--out", "full.zarr")
    assert rc == 0, err
    assert (store.frames_done("full.zarr") == 7).all()


def test_catalog_entry_pointing_at_a_missing_store(tmp_path, tiny_store):
    from cdwdata import catalog
    from cdwdata.errors import CatalogError

    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(tiny_store, data / "run.zarr")
    cat_path = tmp_path / "cat.yaml"
    catalog.build([data], cat_path)
    cat = catalog.open(cat_path)
    (name,) = catalog.entries(cat)
    shutil.rmtree(data / "run.zarr")
    with pytest.raises(CatalogError) as info:
        catalog.read(catalog.open(cat_path), name)
    msg = str(info.value)
    assert "\n" not in msg and "run.zarr" in msg and "does not exist" in msg
