"""Numerical blow-up: detected within one save interval, clear error, last good frame kept.

A run that blows up (time step far beyond the Verlet limit omega dt < 2, or a force field that
returns NaN) must stop with :class:`~cdwdata.errors.BlowUpError` (``cdw``: exit code 2, one
line) at the first save point after the blow-up; ``frames_done`` stays at the last good
frame, whose data and that of every earlier frame are intact, and nothing is written past it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import soak
import torch
from conftest import run_cli

from cdwdata import store
from cdwdata.errors import BlowUpError
from cdwdata.forcefields import EDForceField

pytestmark = pytest.mark.reliability

BASE = ["ed-quench", "--L", "8", "--runs", "2", "--seed", "9", "--no-progress"]


def _error_step(line: str) -> int:
    m = re.search(r"(?:at|after) step (\d+)", line)
    assert m, f"the error does not say at which step: {line!r}"
    return int(m.group(1))


def _check_kept_frames(path, k: int, n_frames: int) -> None:
    ds = store.open_dataset(path)
    for name in ("Q", "v", "n", "F"):
        data = ds[name].values[0, 0]  # (run, step, x, y)
        assert np.isfinite(data[:, :k]).all(), f"{name}: a kept frame is not finite"
        assert np.isnan(data[:, k:]).all(), f"{name}: something was written past frame {k - 1}"


def test_huge_dt_stops_with_blowup_error_within_one_save_interval(tmp_path, cdw,
                                                                  monkeypatch):
    """dt = 50 (omega dt = 22): |Q| grows ~1e5-fold every two steps until it overflows."""
    monkeypatch.chdir(tmp_path)
    argv = [*BASE, "--steps", "200", "--save-every", "20", "--dt", "50", "--out", "b.zarr"]
    with np.errstate(all="ignore"):
        rc, out, err = cdw(*argv)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "blew up" in line and "smaller dt" in line and "last good frame" in line
    done = store.frames_done("b.zarr")[0, 0]
    k = int(done[0])
    assert (done == k).all() and 1 <= k < 11
    step = _error_step(line)
    assert (k - 1) * 20 < step <= k * 20, "not detected within one save interval"
    _check_kept_frames("b.zarr", k, 11)
    with np.errstate(all="ignore"):  # resuming blows up again and advances nothing
        rc, out, err = cdw(*argv, "--resume")
    assert rc == 2 and "blew up" in err
    assert (store.frames_done("b.zarr")[0, 0] == k).all()
    with np.errstate(all="ignore"), pytest.raises(BlowUpError):
        run_cli("--debug", *argv, "--resume")


def test_huge_dt_short_run_is_not_stored_as_a_success(tmp_path, cdw, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with np.errstate(all="ignore"):
        rc, out, err = cdw(*BASE, "--steps", "20", "--save-every", "2", "--dt", "50",
                           "--out", "s.zarr")
    assert rc == 2 and "blew up" in err
    k = int(store.frames_done("s.zarr").max())
    assert k < 11
    assert np.abs(store.open_dataset("s.zarr").Q.values[..., :k, :, :]).max() < 1e6


def test_nan_force_field_stops_at_the_next_save_point(tmp_path, cdw, monkeypatch):
    """The ED force field returns NaN from step 23 on (save every 5): the error comes before
    the save point at step 25, frames 0-20 are kept and equal the undisturbed run's."""
    monkeypatch.chdir(tmp_path)
    argv = ["ed-quench", "--L", "8", "--runs", "1", "--steps", "40", "--save-every", "5",
            "--seed", "3", "--no-progress"]
    assert cdw(*argv, "--out", "ref.zarr")[0] == 0
    real = EDForceField.evaluate_with_mu
    calls = {"n": 0}

    def evaluate_with_mu(self, Q):  # call 0 is the hot start, call s the force at step s
        F, n, mu = real(self, Q)
        calls["n"] += 1
        if calls["n"] > 23:
            F = torch.full_like(F, float("nan"))
        return F, n, mu

    with monkeypatch.context() as m:
        m.setattr(EDForceField, "evaluate_with_mu", evaluate_with_mu)
        rc, out, err = cdw(*argv, "--out", "nan.zarr")
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "blew up" in line and "non-finite" in line
    assert 20 < _error_step(line) <= 25, "not detected within one save interval"
    assert store.frames_done("nan.zarr").tolist() == [[[5]]]
    _check_kept_frames("nan.zarr", 5, 9)
    got, ref = store.open_dataset("nan.zarr"), store.open_dataset("ref.zarr")
    for name in ("Q", "v", "n", "F"):
        a, b = got[name].values[..., :5, :, :], ref[name].values[..., :5, :, :]
        assert a.tobytes() == b.tobytes(), f"{name}: kept frames differ from the clean run"
    # the store is still resumable: without the fault the run finishes like the clean one
    assert cdw(*argv, "--out", "nan.zarr", "--resume")[0] == 0
    soak.compare_stores(tmp_path / "nan.zarr", tmp_path / "ref.zarr")
