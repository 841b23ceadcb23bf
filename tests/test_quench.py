"""Quench runs: resume bit for bit, blow-up detection, device-side hot loop, configs.

Most tests drive the integrator with a harmonic lattice (the Holstein model without
electrons, defined below: cheap, exact, batch-invariant); a few use ED on an 8 x 8 lattice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from storecheck import assert_same, frames

from cdwdata import BlowUpError, HolsteinParams, ParameterError, StoreError, schema, store
from cdwdata.forcefields import ForceField
from cdwdata.quench import (
    MAX_ABS,
    QuenchConfig,
    is_ml,
    make_forcefield,
    prepare_store,
    resolve_forcefield,
    run_quench,
    run_segment,
)


class Harmonic(ForceField):
    """Elastic force of the Holstein model without electrons (g = 0): ``-k Q - kappa sum Q_nn``.

    The density proxy is ``n = f + Q / 10``. Pure, batched, keeps dtype and device.
    """

    name = "harmonic"

    def __init__(self, f: float = 0.5, params: HolsteinParams | None = None) -> None:
        self.f = f
        self.params = params or HolsteinParams()

    def evaluate(self, Q):
        assert isinstance(Q, torch.Tensor), "the hot loop must stay in torch"
        nb = (torch.roll(Q, 1, -1) + torch.roll(Q, -1, -1) + torch.roll(Q, 1, -2)
              + torch.roll(Q, -1, -2))
        F = -self.params.k * Q - self.params.kappa * nb
        return F, self.f + 0.1 * Q


def harmonic(T, f, params, device):
    """Factory for the ``"module:callable"`` force-field spec."""
    return Harmonic(f, params)


HARMONIC = f"{__name__}:harmonic"
FRAME_VARS = (schema.Q, schema.V, schema.N, schema.FORCE)


def _config(**kw) -> QuenchConfig:
    base = dict(L=8, temperatures=(0.1,), fillings=(0.5,), runs=3, steps=60, save_every=10,
                seed=7, forcefield=HARMONIC)
    base.update(kw)
    return QuenchConfig(**base)


class _Kill(Exception):
    pass


def _kill_at(frame_to_kill: int):
    def on_frame(frame, runs):
        if frame == frame_to_kill:
            raise _Kill(frame)
    return on_frame


def _reference(tmp_path, config, name="ref.zarr"):
    path = tmp_path / name
    run_quench(config, path, progress=False)
    return frames(path)


def test_resume_after_interrupt_is_bit_identical(tmp_path):
    config = _config()
    ref = _reference(tmp_path, config)
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, on_frame=_kill_at(2))
    done = store.frames_done(path)
    assert (done == 3).all(), "frames up to the interrupt are on disk"
    assert np.isnan(store.open_dataset(path).Q.values[0, 0, :, 3:]).all()
    prepare_store(path, config, resume=True)
    steps = run_segment(path, config, 0, 0)
    assert steps == 3 * (60 - 20)
    assert_same(frames(path), ref)


def test_resume_after_kill_mid_write_is_bit_identical(tmp_path):
    """A kill while frame k is written leaves runs one frame apart: all resume exactly."""
    config = _config()
    ref = _reference(tmp_path, config)
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, on_frame=_kill_at(3))
    # Undo run 1's frame 3 as a kill mid-write leaves it: frame data half written, the slot
    # being written invalidated and half overwritten, frames_done not yet advanced.
    writer = store.TrajectoryWriter(path)
    g = writer.group
    g[schema.Q][0, 0, 1, 3] = np.full((8, 8), 123.0)
    writer.checkpoint_array("step")[0, 0, 1, 1] = -1
    writer.checkpoint_array("Q")[0, 0, 1, 1] = np.full((8, 8), 123.0)
    writer.mark_frames_done(0, 0, [1], 3)
    run_segment(path, config, 0, 0)
    assert_same(frames(path), ref)


def test_resume_of_runs_at_different_frames_is_bit_identical(tmp_path):
    config = _config()
    ref = _reference(tmp_path, config)
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, on_frame=_kill_at(1))
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, runs=[0, 2], on_frame=_kill_at(4))
    assert store.frames_done(path)[0, 0].tolist() == [5, 2, 5]
    run_segment(path, config, 0, 0)
    assert_same(frames(path), ref)


def test_resume_with_ed_is_bit_identical(tmp_path):
    config = _config(runs=2, steps=20, save_every=5, forcefield="ed")
    ref = _reference(tmp_path, config)
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, on_frame=_kill_at(1))
    run_segment(path, config, 0, 0)
    assert_same(frames(path), ref)


def test_runs_are_independent_of_their_batch(tmp_path):
    """Run by run force evaluation: a run computed alone equals the same run in a batch."""
    config = _config(runs=3, forcefield="ed", steps=10, save_every=5)
    ref = _reference(tmp_path, config)
    path = tmp_path / "single.zarr"
    prepare_store(path, config)
    for r in (2, 0, 1):
        run_segment(path, config, 0, 0, runs=[r])
    assert_same(frames(path), ref)


def test_adding_runs_leaves_existing_runs_and_equals_a_fresh_store(tmp_path):
    small = _config(runs=2, temperatures=(0.1, 0.3))
    path = tmp_path / "grow.zarr"
    run_quench(small, path, progress=False)
    before = frames(path)
    big = small.replace(runs=5)
    run_quench(big, path, resume=True, progress=False)
    after = frames(path)
    for name in ("Q", "v", "n", "F", "frames_done", "seed"):
        np.testing.assert_array_equal(after[name][:, :, :2], before[name], err_msg=name)
    assert_same(after, _reference(tmp_path, big, "fresh.zarr"))
    assert store.read_attrs(path)["runs"] == 5


def test_state_leaves_the_device_only_at_save_points(tmp_path, monkeypatch):
    import cdwdata.quench as quench

    calls = []
    real = quench._state_arrays
    monkeypatch.setattr(quench, "_state_arrays", lambda s: calls.append(s.step) or real(s))
    config = _config(runs=2, steps=40, save_every=10)
    path = tmp_path / "a.zarr"
    prepare_store(path, config)
    run_segment(path, config, 0, 0)
    assert calls == [0, 10, 20, 30, 40]


def test_blowup_keeps_last_good_frame(tmp_path):
    """dt beyond the Verlet limit: |Q| grows ~6x per step; caught once |Q| > MAX_ABS."""
    config = _config(runs=2, steps=1000, save_every=100, params=HolsteinParams(dt=5.0))
    path = tmp_path / "boom.zarr"
    prepare_store(path, config)
    with pytest.raises(BlowUpError, match="blew up"):
        run_segment(path, config, 0, 0)
    done = store.frames_done(path)[0, 0]
    k = int(done[0])
    assert (done == k).all() and 1 <= k < config.n_frames
    Q = store.open_dataset(path).Q.values[0, 0]
    assert np.isfinite(Q[:, :k]).all(), "every frame before the blow-up is kept"
    # runaway growth (|Q| > quench.MAX_ABS) counts as a blow-up before anything overflows
    assert np.abs(Q[:, :k]).max() <= MAX_ABS[schema.Q]
    assert np.isnan(Q[:, k:]).all(), "nothing is written past the last good frame"
    with pytest.raises(BlowUpError):  # a resume blows up again and advances nothing
        run_segment(path, config, 0, 0)
    assert (store.frames_done(path)[0, 0] == k).all()


def test_ed_blowup_is_reported_within_one_save_interval(tmp_path):
    config = _config(runs=1, steps=200, save_every=100, forcefield="ed",
                     params=HolsteinParams(dt=1e3))
    path = tmp_path / "boom.zarr"
    prepare_store(path, config)
    with pytest.raises(BlowUpError, match="smaller dt"), np.errstate(all="ignore"):
        run_segment(path, config, 0, 0)
    assert store.frames_done(path).tolist() == [[[1]]]
    assert np.isfinite(store.open_dataset(path).Q.values[0, 0, 0, 0]).all()


def test_float32_compute_and_frames(tmp_path):
    config = _config(compute_dtype="float32", frame_dtype="float32", frame_vars=("Q", "n"))
    a = _reference(tmp_path, config, "a.zarr")
    b = _reference(tmp_path, config, "b.zarr")
    assert_same(a, b)
    ds = store.open_dataset(tmp_path / "a.zarr")
    assert ds.Q.dtype == np.float32 and set(ds.data_vars) == {"Q", "n", "mu", "frames_done"}
    assert np.isfinite(ds.Q.values).all()
    # resume of a float32 run from its float64 checkpoint is exact too
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, on_frame=_kill_at(2))
    run_segment(path, config, 0, 0)
    assert_same(frames(path), a)


def test_resume_with_different_parameters_raises(tmp_path):
    config = _config(runs=2)
    path = tmp_path / "a.zarr"
    prepare_store(path, config)
    for change in ({"steps": 120}, {"save_every": 20}, {"seed": 8}, {"L": 10},
                   {"params": HolsteinParams(g=3.0)}, {"temperatures": (0.2,)},
                   {"forcefield": "ed"}, {"compute_dtype": "float32"}, {"runs": 1}):
        with pytest.raises(StoreError, match="cannot resume"):
            prepare_store(path, config.replace(**change), resume=True, add_runs=True)
    with pytest.raises(StoreError, match="runs"):  # adding runs must be asked for
        prepare_store(path, config.replace(runs=3), resume=True)


def test_config_round_trips_through_store_attrs(tmp_path):
    config = _config(temperatures=(0.1, 0.2), fillings=(0.5, 0.4), compute_dtype="float32",
                     frame_vars=("Q", "n"), params=HolsteinParams(gamma=0.3))
    path = tmp_path / "a.zarr"
    prepare_store(path, config)
    assert QuenchConfig.from_attrs(store.read_attrs(path)) == config


def test_forcefield_specs():
    assert resolve_forcefield("holstein-f{f}", 0.4) == "holstein-f0.4"
    assert resolve_forcefield("models/m.pt", 0.3) == "models/m.pt"
    assert is_ml("holstein-f{f}") and not is_ml("ed") and not is_ml("tdgl")
    assert not is_ml(HARMONIC)
    p = HolsteinParams()
    assert isinstance(make_forcefield(HARMONIC, 0.1, 0.5, p), Harmonic)
    with pytest.raises(ParameterError, match="cannot import"):
        make_forcefield("no_such_module_xyz:factory", 0.1, 0.5, p)
    attrs = _config(forcefield="holstein-f{f}", fillings=(0.5, 0.3)).attrs("cdw quench")
    assert attrs["models"] == {"0.5": "holstein-f0.5", "0.3": "holstein-f0.3"}


def test_bad_configs_are_rejected():
    with pytest.raises(ParameterError, match="multiple"):
        _config(steps=25, save_every=10)
    with pytest.raises(ParameterError, match="frame_vars"):
        _config(frame_vars=("n",))
    with pytest.raises(ParameterError, match="device"):
        _config(device="tpu")
    with pytest.raises(ParameterError, match="distinct"):
        _config(temperatures=(0.1, 0.1))


def test_batched_ml_forces_resume_bit_identical_with_the_same_grouping(tmp_path):
    """The GPU's default (one force call for the batch, ``batch_forces``), run on the CPU
    with the shipped refined level model: an interrupted batch restarts together from its
    checkpoints (mu included) and ends equal to an uninterrupted one."""
    config = _config(L=12, runs=2, steps=30, save_every=10, forcefield="holstein-gc-v12",
                     fillings=(0.45,), compute_dtype="float32")
    ref_path = tmp_path / "ref.zarr"
    prepare_store(ref_path, config)
    run_segment(ref_path, config, 0, 0, batch_forces=True)
    path = tmp_path / "killed.zarr"
    prepare_store(path, config)
    with pytest.raises(_Kill):
        run_segment(path, config, 0, 0, batch_forces=True, on_frame=_kill_at(2))
    prepare_store(path, config, resume=True)
    run_segment(path, config, 0, 0, batch_forces=True)
    assert_same(frames(path), frames(ref_path))
    n = store.open_dataset(path)[schema.N].isel(T=0, f=0)
    np.testing.assert_allclose(n.mean(("x", "y")).values, 0.45, atol=1e-5)
