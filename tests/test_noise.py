"""Counter-based noise: keys are pure functions of (seed, T, f, run); draws of (key, stream, step)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cdwdata import noise


def test_run_key_is_deterministic_and_63_bit():
    k = noise.run_key(42, 0.1, 0.5, 3)
    assert k == noise.run_key(42, 0.1, 0.5, 3)
    assert isinstance(k, int) and 0 <= k < 2**63
    # Equal values of other types give the same key (T and f are floats, seed/run ints).
    assert noise.run_key(np.int64(42), np.float64(0.1), 0.5, np.int32(3)) == k


def test_run_keys_are_distinct_over_a_grid():
    grid = list(itertools.product(range(4), (0.0, 0.01, 0.05, 0.1, 0.5), (0.3, 0.4, 0.5),
                                  range(16)))
    keys = {noise.run_key(*combo) for combo in grid}
    assert len(keys) == len(grid)


@pytest.mark.parametrize(
    "other", [(1, 0.1, 0.5, 0), (0, 0.1000000001, 0.5, 0), (0, 0.1, 0.4, 0), (0, 0.1, 0.5, 1),
              (0, 0.5, 0.1, 0)],
)
def test_run_key_changes_with_each_argument(other):
    """Including swapping T and f: the hash is not symmetric in its arguments."""
    assert noise.run_key(0, 0.1, 0.5, 0) != noise.run_key(*other)


def test_run_key_bits_look_random():
    keys = np.array([noise.run_key(7, 0.1, 0.5, r) for r in range(2000)], dtype=np.uint64)
    bits = (keys[:, None] >> np.arange(63, dtype=np.uint64)) & np.uint64(1)
    frac = bits.mean(0)
    # Each of the 63 bits is set half of the time (binomial sd 0.011); bit 63 is never set.
    assert np.all(np.abs(frac - 0.5) < 5 * 0.5 / math.sqrt(len(keys)))
    assert not np.any(keys >> np.uint64(63))


def _keys(n, seed=0):
    return [noise.run_key(seed, 0.1, 0.5, r) for r in range(n)]


def test_normal_is_reproducible():
    keys = _keys(3)
    a = noise.normal(keys, noise.THERMAL, 12, (6, 6))
    b = noise.normal(keys, noise.THERMAL, 12, (6, 6))
    assert a.shape == (3, 6, 6) and a.dtype == torch.float64
    assert torch.equal(a, b)


def test_normal_block_of_a_key_is_independent_of_the_batch():
    keys = _keys(5)
    batch = noise.normal(keys, noise.THERMAL, 7, (4, 4))
    for r, key in enumerate(keys):
        assert torch.equal(noise.normal([key], noise.THERMAL, 7, (4, 4))[0], batch[r])
    reordered = noise.normal(keys[::-1], noise.THERMAL, 7, (4, 4))
    assert torch.equal(reordered, batch.flip(0))
    # The same key twice in one batch gives the same block twice.
    dup = noise.normal([keys[0], keys[0]], noise.THERMAL, 7, (4, 4))
    assert torch.equal(dup[0], dup[1])


def test_normal_differs_between_keys_streams_and_steps():
    keys = _keys(2)
    base = noise.normal(keys, noise.THERMAL, 0, (8, 8))
    assert not torch.allclose(base[0], base[1])
    for stream, step in [(noise.THERMAL, 1), (noise.INIT_Q, 0), (noise.INIT_V, 0),
                         (noise.RANDOM_CONFIG, 0), (noise.THERMAL, 2**40)]:
        other = noise.normal(keys, stream, step, (8, 8))
        assert not torch.allclose(base, other), (stream, step)
    assert len({noise.INIT_Q, noise.INIT_V, noise.THERMAL, noise.RANDOM_CONFIG}) == 4


def test_draw_seeds_are_distinct_over_streams_and_steps():
    key = _keys(1)[0]
    seeds = {noise.draw_seed(key, s, t) for s in range(4) for t in range(2000)}
    assert len(seeds) == 4 * 2000


def test_normal_moments_and_independence():
    """Mean 0, variance 1, Gaussian fourth moment, no correlation between steps or runs."""
    keys = _keys(50, seed=9)
    x = noise.normal(keys, noise.THERMAL, 3, (20, 20)).numpy()
    y = noise.normal(keys, noise.THERMAL, 4, (20, 20)).numpy()
    n = x.size
    z = x.ravel()
    assert abs(z.mean()) < 4.5 / math.sqrt(n)
    assert abs(z.var() - 1) < 4.5 * math.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 4.5 * math.sqrt(96 / n)
    assert abs((x * y).mean()) < 4.5 / math.sqrt(n)  # consecutive steps
    assert abs((x[:-1] * x[1:]).mean()) < 4.5 / math.sqrt(n)  # neighbouring runs
    assert abs((x * np.roll(x, 1, -1)).mean()) < 4.5 / math.sqrt(n)  # neighbouring sites


def test_normal_dtype_and_empty_batch():
    a = noise.normal(_keys(2), noise.THERMAL, 0, (4, 4), dtype=torch.float32)
    assert a.dtype == torch.float32 and a.shape == (2, 4, 4)
    assert noise.normal([], noise.THERMAL, 0, (4, 4)).shape == (0, 4, 4)


@pytest.mark.requires_cuda
def test_normal_on_cuda_is_reproducible_and_batch_independent():
    keys = _keys(3)
    a = noise.normal(keys, noise.THERMAL, 5, (6, 6), device="cuda")
    assert a.device.type == "cuda"
    assert torch.equal(a, noise.normal(keys, noise.THERMAL, 5, (6, 6), device="cuda"))
    assert torch.equal(a[1], noise.normal(keys[1:2], noise.THERMAL, 5, (6, 6), device="cuda")[0])
