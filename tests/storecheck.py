"""Helpers shared by the store tests: read every frame of a store and compare two stores."""

from __future__ import annotations

import numpy as np

from cdwdata import store


def frames(path) -> dict[str, np.ndarray]:
    """Every data variable of the store at ``path`` (plus the per-run seeds), loaded."""
    ds = store.open_dataset(path)
    out = {name: ds[name].values for name in ds.data_vars}
    out["seed"] = ds["seed"].values
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-for-bit equality of two :func:`frames` results."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
