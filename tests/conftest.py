"""Shared fixtures for the cdwdata test suite.

Fixtures
--------
rng
    A seeded ``numpy.random.Generator`` (fresh per test, so tests never share RNG state).
params
    The default :class:`cdwdata.HolsteinParams` (the defaults table of docs/conventions.md).
backend
    Parametrised over the ED backends ``"numpy"`` and ``"torch"`` (STYLE principle 8).

Markers
-------
``@pytest.mark.requires_cuda`` skips a test when no CUDA GPU is present (the hook below
adds the skip); ``requires_cuda`` is also exported as a ready-made ``skipif`` marker.
"""

from __future__ import annotations

import numpy as np
import pytest

from cdwdata import HolsteinParams

#: Seed of the ``rng`` fixture; change it to re-roll every randomised test at once.
SEED = 20240611

#: ED backends every solver test runs on.
ED_BACKENDS = ("numpy", "torch")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


HAS_CUDA = _cuda_available()

#: ``@requires_cuda`` on a test is the same as ``@pytest.mark.requires_cuda``.
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``requires_cuda`` when torch sees no GPU."""
    if not HAS_CUDA and item.get_closest_marker("requires_cuda") is not None:
        pytest.skip("needs a CUDA GPU")


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded numpy random generator, fresh for every test."""
    return np.random.default_rng(SEED)


@pytest.fixture
def params() -> HolsteinParams:
    """Default model parameters (docs/conventions.md)."""
    return HolsteinParams()


@pytest.fixture(params=ED_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """ED backend name: ``"numpy"`` or ``"torch"``."""
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_kernels():
    """One BLAS and one torch thread: the suite's matrices are small, and spinning
    threads on a shared CI core make small eigensolves an order of magnitude slower."""
    import torch

    from cdwdata.ensemble import blas_threads

    old_blas, old_torch = blas_threads(1), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old_torch)
    if old_blas is not None:
        blas_threads(old_blas)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on a shared 2-core machine torch's OpenMP pool is
    ~10x slower. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
