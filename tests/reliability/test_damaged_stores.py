"""Damaged data is detected, named and repaired, never analysed.

A small ED ensemble (2 temperatures x 2 runs, 7 frames) is made once; each test damages a copy
the way disks and people do (a deleted chunk, flipped bits, a truncated chunk, a deleted
checkpoint chunk, a truncated ``zarr.json``) and checks that ``cdw verify`` names the store,
the variable and the (T, f, run, step); that ``cdw analyze`` refuses with one line and writes
nothing; and that ``--resume`` recomputes exactly the damaged runs, ending equal bit for bit to
the undamaged store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soak
from conftest import run_cli, tree_hash

from cdwdata import store
from cdwdata.errors import StoreDamagedError

pytestmark = pytest.mark.reliability

ARGS = ["--L", "8", "--T", "0.1", "0.2", "--f", "0.5", "--runs", "2", "--steps", "12",
        "--save-every", "2", "--seed", "3", "--no-progress"]
T_VALUES = (0.1, 0.2)


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sound") / "ens.zarr"
    assert run_cli("ed-quench", *ARGS, "--out", path) == 0
    return path


@pytest.fixture
def copy(sound, tmp_path) -> Path:
    path = tmp_path / "ens.zarr"
    shutil.copytree(sound, path)
    return path


def chunk(path: Path, var: str, it: int, run: int, frame: int) -> Path:
    """The chunk file of frame ``frame`` of ``var`` (f index 0); ``checkpoint/<v>`` takes the
    slot as ``frame``."""
    p = path / var / "c" / str(it) / "0" / str(run) / str(frame)
    return p / "0" / "0" if (p / "0" / "0").exists() or not p.is_file() else p


def flip_bits(p: Path, *positions: int) -> None:
    data = bytearray(p.read_bytes())
    for pos in positions:
        data[pos % len(data)] ^= 1 << (pos % 8)
    p.write_bytes(bytes(data))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_sound_store_verifies(sound, cdw):
    report = store.verify(sound)
    assert report.ok, report.damage
    assert report.chunks >= 2 * 2 * 7 * 4  # every frame of Q, v, n, F of every run
    rc, out, _ = cdw("verify", sound)
    assert rc == 0 and "sound" in out


def test_deleted_chunk_is_named_and_refused(copy, cdw, tmp_path):
    chunk(copy, "n", 1, 1, 2).unlink()
    report = store.verify(copy)
    assert [str(d) for d in report.damage] == ["n at (T=0.2, f=0.5, run=1, step=4): chunk missing"]
    assert report.damage[0].cell == (1, 0, 1)
    rc, out, err = cdw("verify", copy)
    assert rc == 2 and "n at (T=0.2, f=0.5, run=1, step=4): chunk missing" in out
    assert str(copy) in one_line(err)
    # cdw info no longer calls it complete
    rc, out, _ = cdw("info", copy)
    assert rc == 0 and "DAMAGED" in out and "run=1, step=4" in out
    # cdw analyze refuses, writes nothing
    out_dir = tmp_path / "analysis"
    rc, _, err = cdw("analyze", copy, "--out", out_dir)
    line = one_line(err)
    assert rc == 2 and str(copy) in line and "n at (T=0.2, f=0.5, run=1, step=4)" in line
    assert not out_dir.exists()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".analysis"))
    assert left == [".analysis.lock"], "no staging folder and no writer record are left"


@pytest.mark.parametrize("damage", ["two flipped bits", "truncated"])
def test_corrupt_chunk_is_named_and_refused(damage, copy, cdw, tmp_path):
    p = chunk(copy, "n", 0, 1, 3)
    if damage == "truncated":
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    else:
        flip_bits(p, 40, 97)
    report = store.verify(copy)
    assert len(report.damage) == 1, report.damage
    assert str(report.damage[0]) == \
        "n at (T=0.1, f=0.5, run=1, step=6): unreadable chunk (checksum mismatch)"
    rc, _, err = cdw("analyze", copy, "--out", tmp_path / "a")
    line = one_line(err)
    assert rc == 2 and "n at (T=0.1, f=0.5, run=1, step=6)" in line and str(copy) in line
    assert not (tmp_path / "a").exists()


def test_garbage_that_decodes_is_caught_by_plausibility(copy):
    """Stores written before chunks carried checksums decode flipped bits silently (the
    issue saw n = -4.9e14): verify still flags values no sound store holds."""
    w = store.TrajectoryWriter(copy)
    w.group["n"][1, 0, 0, 5] = np.full((8, 8), -4.9e14)
    report = store.verify(copy)
    assert [str(d) for d in report.damage] == [
        "n at (T=0.2, f=0.5, run=0, step=10): value -4.9e+14 outside [-1e+06, 1e+06] "
        "(corrupt chunk)"]


def test_resume_recomputes_exactly_the_damaged_runs(sound, copy, cdw, caplog):
    ckpt = copy / store.CKPT_GROUP
    chunk(copy, "n", 0, 1, 2).unlink()                  # run (0.1, 0.5, 1): frame data
    flip_bits(chunk(copy, "Q", 1, 0, 5), 33, 71)        # run (0.2, 0.5, 0): frame data
    last_slot = (7 - 1) % 2
    chunk(ckpt, "Q", 1, 1, last_slot).unlink()          # run (0.2, 0.5, 1): its checkpoint
    untouched = [chunk(copy, v, 0, 0, k) for v in ("Q", "n") for k in range(7)]
    stamps = [p.stat().st_mtime_ns for p in untouched]
    damaged = {d.cell for d in store.verify(copy).damage}
    assert damaged == {(0, 0, 1), (1, 0, 0), (1, 0, 1)}

    rc, _, err = cdw("ed-quench", *ARGS, "--out", copy, "--resume")
    assert rc == 0, err
    said = caplog.text  # the cdwdata.store logger: on stderr outside pytest
    assert "3 damaged chunk(s)" in said and "recomputing run (T=0.1, f=0.5, run=1) from the " \
        "start" in said and "run (T=0.2, f=0.5, run=1) from step 10" in said
    assert store.verify(copy).ok
    soak.compare_stores(copy, sound)  # every array bit for bit, attrs but history
    assert [p.stat().st_mtime_ns for p in untouched] == stamps, "a sound run was rewritten"


def test_resume_restarts_from_the_older_checkpoint_when_the_newest_is_damaged(sound, copy):
    """Only the checkpoint of the last frame is damaged: the run restarts from the other
    slot (frame k - 2), not from the start."""
    chunk(copy / store.CKPT_GROUP, "v", 0, 0, 0).unlink()  # frame 6 of 7 lives in slot 0
    report = store.verify(copy)
    assert [str(d) for d in report.damage] == [
        "checkpoint/v at (T=0.1, f=0.5, run=0, slot=0, step=12): chunk missing"]
    keep = store.reset_damaged_runs(copy, report)
    assert keep == {(0, 0, 0): 6}
    assert run_cli("ed-quench", *ARGS, "--out", copy, "--resume") == 0
    soak.compare_stores(copy, sound)


def test_a_damaged_checkpoint_is_reported_as_such(copy):
    """It used to surface as 'the integration blew up (try a smaller dt)'."""
    chunk(copy / store.CKPT_GROUP, "Q", 0, 1, 0).unlink()
    w = store.TrajectoryWriter(copy)
    with pytest.raises(StoreDamagedError, match=r"checkpoint variable Q \(T=0.1, f=0.5, "
                       r"run=1, step=12\) is missing") as info:
        w.read_checkpoint(0, 0, 1, 6)
    assert "cdw verify" in str(info.value) and "blew up" not in str(info.value)


def test_truncated_metadata_names_the_file(copy, cdw):
    meta = copy / "Q" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    before = tree_hash(copy)
    for argv in (("info", copy), ("verify", copy), ("analyze", copy, "--out", copy.parent / "a"),
                 ("ed-quench", *ARGS, "--out", copy, "--resume")):
        rc, _, err = cdw(*argv)
        line = one_line(err)
        assert rc == 2 and str(meta) in line and "not valid JSON" in line, (argv, line)
    assert tree_hash(copy) == before


def test_analyze_failing_part_way_leaves_no_output(sound, tmp_path, monkeypatch, cdw):
    from cdwdata import analysis

    out = tmp_path / "a"
    assert cdw("analyze", sound, "--out", out)[0] == 0
    before = tree_hash(out)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(analysis, "interface_density", boom)  # after two stores are written
    rc, _, err = cdw("analyze", sound, "--out", out, "--overwrite")
    assert rc == 2 and "No space left" in one_line(err)
    assert tree_hash(out) == before, "the previous outputs must survive a failed rerun"
    rc, _, err = cdw("analyze", sound, "--out", tmp_path / "b")
    assert rc == 2 and not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "staging" in p.name or
                  p.suffix == ".json") == [], "no staging folder or writer record is left"
    monkeypatch.undo()
    assert cdw("analyze", sound, "--out", tmp_path / "b")[0] == 0
    assert tree_hash(tmp_path / "b") != "" and (tmp_path / "b" / "order-parameter.zarr").exists()


def test_analyze_of_a_store_being_written_says_how_many_frames_it_used(sound, cdw, tmp_path):
    from cdwdata.quench import QuenchConfig, prepare_store, run_segment

    class Stop(Exception):
        pass

    def stop_at(frame):
        def hook(k, runs):
            if k == frame:
                raise Stop
        return hook

    config = QuenchConfig.from_attrs(store.read_attrs(sound))
    path = tmp_path / "partial.zarr"
    prepare_store(path, config)
    run_segment(path, config, 0, 0)
    with pytest.raises(Stop):  # the T = 0.2 runs are still at frame 4 of 7
        run_segment(path, config, 1, 0, on_frame=stop_at(3))
    assert store.verify(path).ok
    rc, out, _ = cdw("analyze", path, "--out", tmp_path / "a")
    assert rc == 0
    assert "frames used: 4 of 7" in out
    assert store.read_attrs(tmp_path / "a" / "domain-size.zarr")["frames_used"] == 4


def test_training_set_resume_recomputes_damaged_samples(tmp_path):
    from distributed import Client, LocalCluster

    from cdwdata.trainset import TrainsetConfig, generate

    config = TrainsetConfig(L=4, fillings=(0.5, 0.4), T=0.1, n_random=4, quench_runs=0)
    ref, path = tmp_path / "ref.zarr", tmp_path / "ts.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        generate(ref, config, client=client, progress=False)
        shutil.copytree(ref, path)
        (path / "F" / "c" / "1" / "2" / "0" / "0").unlink()  # f = 0.4, sample 2
        flip_bits(path / "n" / "c" / "0" / "3" / "0" / "0", 20, 51)  # f = 0.5, sample 3
        report = store.verify(path)
        assert sorted(d.sample for d in report.damage) == [(0, 3), (1, 2)]
        assert "F at (f=1, sample=2): chunk missing" in [str(d) for d in report.damage]
        generate(path, config, client=client, progress=False, resume=True)
    assert store.verify(path).ok
    soak.compare_stores(path, ref)
