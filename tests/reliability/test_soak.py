"""Scaled-down soak (``benchmarks/soak.py``): three SIGKILLs at random points, three resumes;
second writers; damaged chunks.

An ensemble of 2 temperatures x 2 runs (``cdw ed-quench``, L = 8) is killed three times at
seeded random points and resumed each time; after every kill the frames the store counts as
done must equal an uninterrupted run's, and the finished store must equal it bit for bit.
The full-size figures come from ``python benchmarks/soak.py`` (see benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import soak

pytestmark = pytest.mark.reliability


def test_soak_three_interruptions(tmp_path):
    job = soak.Job("ed-quench", ["--L", "8", "--T", "0.1", "0.3", "--f", "0.5", "--runs", "2",
                                 "--steps", "40", "--save-every", "2", "--seed", "17",
                                 "--no-progress"], tmp_path / "soak.zarr")
    ref = tmp_path / "ref.zarr"
    soak.make_reference(job, ref, tmp_path)
    res = soak.run_with_kills(job, ref, kills=3, rng=np.random.default_rng(2024), cwd=tmp_path,
                              timeout=120)
    assert res.interruptions == 3, res
    assert res.final_frames == 2 * 2 * 21
    assert res.frames_verified >= res.final_frames
    assert res.arrays_compared >= 18
    assert sorted(res.kill_progress) == res.kill_progress, "progress was lost between kills"


def test_soak_concurrent_writers_and_corruption(tmp_path):
    """Scaled-down rounds 5 and 6 of ``benchmarks/soak.py``: second writers of a store being
    written are refused (two trials: a running job, and three ``--resume`` runs racing after
    a kill), and damaged stores are found, refused by analyze and repaired bit for bit."""
    job = soak.Job("ed-quench", ["--L", "8", "--T", "0.1", "--f", "0.5", "--runs", "2",
                                 "--steps", "160", "--save-every", "4", "--seed", "19",
                                 "--no-progress"], tmp_path / "soak.zarr")
    ref = tmp_path / "ref.zarr"
    soak.make_reference(job, ref, tmp_path)
    rng = np.random.default_rng(7)
    conc = soak.run_concurrent(job, ref, trials=2, writers=3, rng=rng, cwd=tmp_path,
                               timeout=120)
    assert conc.trials == 2 and conc.refused == conc.second_writers == 4
    assert conc.winners_per_race == [1, 1]
    corr = soak.run_corruption(job, ref, rounds=1, damages=4, rng=rng, cwd=tmp_path,
                               timeout=120)
    assert corr.rounds == corr.repaired_bit_for_bit == corr.analyze_refused == 1
    assert corr.injected == 4 and corr.detected == corr.runs_damaged >= 1
