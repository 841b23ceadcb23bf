"""Trajectory store layout: preallocation, chunk-aligned writers, growth, refusal to clobber."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from cdwdata import StoreError, schema, store
from cdwdata.quench import QuenchConfig

L = 8


def _layout(runs=3, steps=40, save_every=10, frame_vars=("Q", "n"), dtype="float32",
            temps=(0.1, 0.2)) -> store.TrajectoryLayout:
    return store.TrajectoryLayout(L=L, temperatures=temps, fillings=(0.5,), runs=runs,
                                  steps=steps, save_every=save_every, dt=0.05,
                                  frame_vars=frame_vars, frame_dtype=dtype)


def _seeds(layout) -> np.ndarray:
    """Stand-in run keys: like the real ones, a run's key does not depend on the run count."""
    it = np.arange(len(layout.temperatures))[:, None, None]
    return (1000 * it + np.arange(layout.runs)[None, None, :] + 100).astype(np.int64)


def _create(path, layout, **kw):
    attrs = {"kind": "trajectory", "runs": layout.runs, **store.layout_attrs(layout)}
    store.create_trajectory(path, layout, _seeds(layout), attrs, **kw)


def _state(value: float, runs: int) -> dict[str, np.ndarray]:
    base = value + np.arange(runs)[:, None, None] + np.zeros((runs, L, L))
    return {name: base + i / 10 for i, name in enumerate(store.CKPT_VARS)}


def _chunk_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*")
            if p.is_file() and "/c/" in str(p.relative_to(path)).replace("\\", "/") + "/"
            and p.name != "zarr.json"}


def test_preallocation_writes_metadata_only(tmp_path):
    layout = _layout(runs=64, steps=10000, save_every=10)  # 64k frame chunks per variable
    path = tmp_path / "big.zarr"
    _create(path, layout)
    assert not (path / "Q" / "c").exists(), "no chunk is written at creation"
    ds = store.open_dataset(path)
    assert dict(ds.Q.sizes) == {"T": 2, "f": 1, "run": 64, "step": 1001, "x": L, "y": L}
    assert ds.Q.dtype == np.float32
    assert np.isnan(ds.Q[1, 0, 63, 1000].values).all()
    assert (ds[schema.FRAMES_DONE].values == 0).all()
    assert ds[schema.TIME].values[-1] == pytest.approx(10000 * 0.05)
    g = zarr.open_group(str(path), mode="r")
    assert g["Q"].chunks == (1, 1, 1, 1, L, L)
    assert g[schema.FRAMES_DONE].chunks == (1, 1, 1)


def test_refuses_to_overwrite_and_leaves_data_untouched(tmp_path):
    layout = _layout()
    path = tmp_path / "a.zarr"
    _create(path, layout)
    store.TrajectoryWriter(path).write_frame(0, 0, [0, 1, 2], 0, _state(1.0, 3))
    before = _chunk_files(path)
    assert before
    with pytest.raises(StoreError, match="--overwrite"):
        _create(path, _layout(runs=5))
    assert _chunk_files(path) == before
    assert store.frames_done(path)[0, 0].tolist() == [1, 1, 1]
    _create(path, _layout(runs=5), overwrite=True)
    assert store.frames_done(path).shape == (2, 1, 5)
    assert not store.frames_done(path).any()


def test_write_frame_order_and_values(tmp_path):
    layout = _layout(frame_vars=("Q", "v", "n", "F"), dtype="float64")
    path = tmp_path / "a.zarr"
    _create(path, layout)
    w = store.TrajectoryWriter(path)
    w.write_frame(1, 0, [2, 0], 0, _state(1.0, 2))  # non-contiguous runs
    w.write_frame(1, 0, [2, 0], 1, _state(5.0, 2))
    ds = store.open_dataset(path)
    np.testing.assert_array_equal(ds.Q.values[1, 0, 2, 1], np.full((L, L), 5.0))
    np.testing.assert_array_equal(ds.F.values[1, 0, 0, 0], np.full((L, L), 2.0 + 0.2))
    assert ds[schema.FRAMES_DONE].values[1, 0].tolist() == [2, 0, 2]
    ck = w.read_checkpoint(1, 0, 0, 1)
    np.testing.assert_array_equal(ck["v"], np.full((L, L), 6.1))
    np.testing.assert_array_equal(w.read_checkpoint(1, 0, 2, 0)["Q"], np.full((L, L), 1.0))
    with pytest.raises(StoreError, match="damaged"):  # slot 0 holds frame 0, not frame 2
        w.read_checkpoint(1, 0, 0, 2)


def test_concurrent_writers_of_one_store_lose_nothing(tmp_path):
    layout = _layout(runs=8, steps=50, save_every=10)
    path = tmp_path / "a.zarr"
    _create(path, layout)

    def work(t_index, run):
        w = store.TrajectoryWriter(path)  # each writer opens the store itself
        for frame in range(layout.n_frames):
            w.write_frame(t_index, 0, [run], frame, _state(100 * run + frame + 1000 * t_index,
                                                           1))

    threads = [threading.Thread(target=work, args=(it, r)) for it in range(2) for r in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ds = store.open_dataset(path)
    assert (ds[schema.FRAMES_DONE].values == layout.n_frames).all()
    Q = ds.Q.values
    for it in range(2):
        for r in range(8):
            for frame in range(layout.n_frames):
                assert (Q[it, 0, r, frame] == 100 * r + frame + 1000 * it).all()


def test_resize_runs_keeps_existing_chunks(tmp_path):
    layout = _layout(runs=2)
    path = tmp_path / "a.zarr"
    _create(path, layout)
    w = store.TrajectoryWriter(path)
    for frame in range(3):
        w.write_frame(0, 0, [0, 1], frame, _state(frame, 2))
    before = _chunk_files(path)
    seeds = _seeds(_layout(runs=5))
    assert store.resize_runs(path, 5, seeds) == 2
    after = _chunk_files(path)
    assert {k: after[k] for k in before} == before, "existing chunks are untouched"
    ds = store.open_dataset(path)
    assert ds.sizes["run"] == 5 and ds["run"].values.tolist() == list(range(5))
    np.testing.assert_array_equal(ds[schema.SEED].values, seeds)
    assert ds[schema.FRAMES_DONE].values[0, 0].tolist() == [3, 3, 0, 0, 0]
    assert np.isnan(ds.Q.values[:, :, 2:]).all()
    assert store.read_attrs(path)["runs"] == 5
    # new runs are writable, and never shrink
    store.TrajectoryWriter(path).write_frame(0, 0, [4], 0, _state(9.0, 1))
    assert store.frames_done(path)[0, 0, 4] == 1
    with pytest.raises(StoreError, match="never removed"):
        store.resize_runs(path, 3, seeds)


def test_interrupted_resize_is_repaired(tmp_path):
    layout = _layout(runs=2)
    path = tmp_path / "a.zarr"
    _create(path, layout)
    g = zarr.open_group(str(path), mode="r+")
    g["Q"].resize((2, 1, 4, layout.n_frames, L, L))  # killed before the attrs were updated
    store.repair_runs(path)
    assert store.open_dataset(path).sizes["run"] == 2


def test_check_resumable_names_the_mismatch(tmp_path):
    config = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.5,), runs=2, steps=20,
                          save_every=10)
    path = tmp_path / "a.zarr"
    store.create_trajectory(path, config.layout(), config.seeds(), config.attrs("test"))
    store.check_resumable(path, config.attrs("again"))
    with pytest.raises(StoreError, match="steps=20"):
        store.check_resumable(path, config.replace(steps=40).attrs())
    with pytest.raises(StoreError, match="T values"):
        store.check_resumable(path, config.replace(temperatures=(0.1, 0.2)).attrs())
    with pytest.raises(StoreError, match="holds 2 runs"):
        store.check_resumable(path, config.replace(runs=3).attrs())
    store.check_resumable(path, config.replace(runs=3).attrs(), check_runs=False)
    with pytest.raises(StoreError, match="never removed"):
        store.check_resumable(path, config.replace(runs=1).attrs(), check_runs=False)


def test_describe_reports_progress_and_provenance(tmp_path):
    config = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.5,), runs=2, steps=20,
                          save_every=10)
    path = tmp_path / "a.zarr"
    store.create_trajectory(path, config.layout(), config.seeds(), config.attrs("cdw x"))
    store.TrajectoryWriter(path).write_frame(0, 0, [1], 0, _state(0.0, 1))
    text = store.describe(path)
    assert "0/2 runs complete, 1/6 frames written" in text
    assert "command: cdw x" in text and "forcefield: ed" in text
    with pytest.raises(StoreError, match="does not exist"):
        store.read_attrs(tmp_path / "missing.zarr")


def test_verify_judges_a_run_that_moved_on_by_its_newest_checkpoint(tmp_path):
    """A store being written: frames_done read before the (long) frame checks can be two
    frames behind when the checkpoint slot is read, and that slot then holds a newer step.
    Not damage: the run is judged by its current frames_done."""
    from cdwdata.quench import run_quench

    path = tmp_path / "q.zarr"
    run_quench(QuenchConfig(L=8, temperatures=(0.1,), fillings=(0.5,), runs=2, steps=50,
                            save_every=10, seed=1, forcefield="tdgl"), path, progress=False)
    g = zarr.open_group(str(path), mode="r")
    now = np.asarray(g[schema.FRAMES_DONE][...]).astype(np.int64)
    stale = now - 2  # as read before the writer wrote two more frames
    report = store.VerifyReport(str(path), read=True)

    def add(var, cell, problem, frame=None, **extra):
        report.damage.append(store.Damage(var, dict(extra), problem, cell, frame))

    store._checkpoint_damage(path, g, stale, True, report, add)
    assert report.ok, report.damage
    assert store.verify(path).ok
