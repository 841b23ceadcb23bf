"""Counter-based random numbers: every draw is a pure function of (run key, stream, step).

Each run gets a 63-bit key derived from ``(seed, T, f, run)``, so adding runs or temperatures
never changes existing runs, and a resumed run draws exactly the numbers the uninterrupted run
would have drawn. Draws use a freshly seeded ``torch.Generator`` on the target device, so the
same key gives bit-identical numbers on the same backend.
"""

from __future__ import annotations

import struct

import numpy as np

_MASK64 = (1 << 64) - 1

#: Stream identifiers: thermal noise of step s uses (THERMAL, s).
THERMAL, INIT_Q, INIT_V, RANDOM_CONFIG = 0, 1, 2, 3


def _float_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def run_key(seed: int, T: float, f: float, run: int) -> int:
    """63-bit RNG key of one run, a hash of ``(seed, T, f, run)``."""
    words = [int(seed) & _MASK64, _float_bits(T), _float_bits(f), int(run) & _MASK64]
    entropy = [w for word in words for w in (word & 0xFFFFFFFF, word >> 32)]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
    return int(state[0] ^ (state[1] << np.uint64(17))) & ((1 << 63) - 1)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def draw_seed(key: int, stream: int, step: int = 0) -> int:
    """Seed of the generator used for draw ``(stream, step)`` of the run with ``key``."""
    x = _splitmix64(int(key) ^ _splitmix64((int(stream) << 48) ^ int(step)))
    return x & ((1 << 63) - 1)


def normal(keys, stream: int, step: int, shape, device="cpu", dtype=None, out=None):
    """Standard normal draws, one independent block per run key.

    Parameters
    ----------
    keys : sequence of int
        Run keys (R of them).
    stream, step : int
        Which draw of each run.
    shape : tuple
        Shape of one run's block, e.g. (L, L).
    out : torch.Tensor, optional
        Buffer of shape (R, *shape) to draw into (reused by the Langevin loop).

    Returns
    -------
    torch.Tensor of shape (R, *shape), on ``device`` with ``dtype`` (default float64).
    """
    import torch

    dtype = dtype or torch.float64
    full = (len(keys), *shape)
    if out is None or tuple(out.shape) != full or out.dtype != dtype:
        out = torch.empty(full, device=device, dtype=dtype)
    gen = torch.Generator(device=device)
    for r, key in enumerate(keys):
        gen.manual_seed(draw_seed(key, stream, step))
        torch.randn(shape, generator=gen, device=device, dtype=dtype, out=out[r])
    return out
