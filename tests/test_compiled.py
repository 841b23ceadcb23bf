"""torch.compile'd kernels of a level model (opt-in): the same physics as the eager path to
its rounding, recorded in a trajectory's attrs, and resumed only with the same setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdwdata import ModelError, store
from cdwdata.errors import ParameterError, StoreError
from cdwdata.ml import load_model
from cdwdata.quench import QuenchConfig, prepare_store, run_quench


@pytest.fixture(scope="module")
def compiler():
    """Skip where torch.compile cannot build a kernel (no C++ compiler on this CPU)."""
    try:
        torch.compile(lambda x: torch.sigmoid(x) * 2.0, dynamic=False)(torch.ones(4))
    except Exception as err:  # noqa: BLE001 - any failure means: not available here
        pytest.skip(f"torch.compile unavailable here: {type(err).__name__}")


def _config(**kw) -> QuenchConfig:
    base = dict(L=8, temperatures=(0.1,), fillings=(0.5,), runs=1, steps=20, save_every=10,
                seed=3, forcefield="holstein-gc-v12", compute_dtype="float32", compile=True,
                frame_vars=("Q", "n"))
    base.update(kw)
    return QuenchConfig(**base)


@pytest.mark.parametrize("runs", [1, 2])
def test_compiled_kernels_give_the_eager_densities_and_mu(compiler, runs):
    rng = np.random.default_rng(4)
    Q = torch.as_tensor(rng.normal(0.0, 1.5, (runs, 16, 16)), dtype=torch.float32)
    eager, fused = load_model("holstein-gc-v12"), load_model("holstein-gc-v12", compile=True)
    assert fused.plan().compiled is not None and eager.plan().compiled is None
    _, n_e, mu_e = eager.evaluate_with_mu(Q)  # cold: the bracketed solve
    _, n_c, mu_c = fused.evaluate_with_mu(Q)
    np.testing.assert_allclose(n_c.numpy(), n_e.numpy(), atol=1e-5)
    np.testing.assert_allclose(mu_c.numpy(), mu_e.numpy(), atol=1e-6)
    Q2 = Q + 0.02 * torch.randn(Q.shape, generator=torch.Generator().manual_seed(5))
    F_e, n_e, mu2_e = eager.evaluate_with_mu(Q2, mu_hint=mu_e)  # warm: Newton from the hint
    F_c, n_c, mu2_c = fused.evaluate_with_mu(Q2, mu_hint=mu_e)
    assert fused.plan().cluster.last_count == eager.plan().cluster.last_count > 0
    np.testing.assert_allclose(F_c.numpy(), F_e.numpy(), atol=1e-4)
    np.testing.assert_allclose(mu2_c.numpy(), mu2_e.numpy(), atol=1e-6)
    # the electron count is exact either way
    np.testing.assert_allclose(n_c.sum((-2, -1)).numpy(), 0.5 * 256, rtol=1e-6)
    assert fused.attrs()["ml_compile"] == 1 and "ml_compile" not in eager.attrs()


def test_compile_is_only_for_level_models():
    with pytest.raises(ModelError, match="level models"):
        load_model("holstein-gc-v9", compile=True)  # a density network
    with pytest.raises(ModelError, match="pair blocks"):
        load_model("holstein-gc-v10", compile=True).plan()  # levels in pair blocks
    with pytest.raises(ParameterError, match="ML models"):
        _config(forcefield="ed")


def test_a_compiled_quench_is_recorded_and_resumes_only_compiled(compiler, tmp_path):
    path = tmp_path / "c.zarr"
    run_quench(_config(), path, progress=False)
    attrs = store.read_attrs(path)
    assert attrs["compile"] is True
    assert QuenchConfig.from_attrs(attrs).compile is True
    with pytest.raises(StoreError, match="compile"):
        prepare_store(path, _config(compile=False), resume=True)
    prepare_store(path, _config(), resume=True)  # the same setting resumes
    # close to the eager run of the same seed: 20 steps apart only by rounding
    eager = tmp_path / "e.zarr"
    run_quench(_config(compile=False), eager, progress=False)
    a = store.open_dataset(path)["Q"].isel(T=0, f=0, run=0).values
    b = store.open_dataset(eager)["Q"].isel(T=0, f=0, run=0).values
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_store_from_before_the_compile_setting_resumes_as_eager(tmp_path):
    import zarr

    path = tmp_path / "old.zarr"
    config = _config(compile=False)
    prepare_store(path, config)
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["compile"]  # as written before the setting existed
    zarr.consolidate_metadata(str(path))
    assert "compile" not in store.read_attrs(path)
    prepare_store(path, config, resume=True)
    with pytest.raises(StoreError, match="compile"):
        prepare_store(path, config.replace(compile=True), resume=True)


def test_cdw_quench_compile_flag_sets_the_config(tmp_path):
    from cdwdata.cli import build_parser
    from cdwdata.commands.quench import build_config

    out = str(tmp_path / "q.zarr")
    args = build_parser("quench").parse_args(["quench", "--compile", "--L", "8", "--out", out])
    assert build_config(args).compile is True
    args = build_parser("quench").parse_args(["quench", "--L", "8", "--out", out])
    assert build_config(args).compile is False
    args = build_parser("quench").parse_args(["quench", "--compile", "--model", "ed", "--L",
                                              "8", "--out", out])
    with pytest.raises(ParameterError, match="ML models"):
        build_config(args)
