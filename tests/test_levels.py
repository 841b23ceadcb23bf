"""The level model (cdwdata.ml.levels): n_i(mu, T) = sum_k w_k sigma((mu - e_k) / T).

Exact by construction and tested here: only H - mu matters, dn/dmu >= 0, bounds and limits,
D4 invariance, the solve's plan equals the model (slope included); then training, loading,
the filling solve in Langevin steps and an ML quench through the normal path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdwdata import HolsteinParams, Lattice, ModelError, store
from cdwdata.ml import modelfile
from cdwdata.ml.forcefield import load_model
from cdwdata.ml.levels import LevelModel, LevelPlan

L = 8
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int = 0, K: int = 4, pairs: bool = False) -> LevelModel:
    torch.manual_seed(seed)
    m = LevelModel(hidden=(16, 8), components=K, pairs=pairs).double()
    with torch.no_grad():  # a non-trivial map: random, not the small-offset start
        for p in m.mlp.parameters():
            p.normal_(0.0, 0.5)
    return m.eval()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), c=st.floats(-2.0, 2.0), mu=st.floats(-6.0, 6.0),
       T=st.floats(0.05, 0.5), pairs=st.booleans())
def test_only_h_minus_mu_matters_and_density_rises_with_mu(seed, c, mu, T, pairs):
    m = _model(seed % 7, pairs=pairs)
    Q = torch.as_tensor(np.random.default_rng(seed).normal(0, 2, (2, L, L)))
    g = HolsteinParams().g
    with torch.no_grad():
        n = m.density_at(Q + c, mu, T)
        np.testing.assert_allclose(n, m.density_at(Q, mu + g * c, T), atol=1e-10)
        up = m.density_at(Q + c, mu + 0.05, T)
    assert float((up - n).min()) >= -1e-12 and 0 <= float(n.min()) <= float(n.max()) <= 1


@pytest.mark.parametrize("pairs", [False, True])
def test_limits_d4_invariance_and_the_plan(rng, pairs):
    m = _model(3, pairs=pairs)
    Q = torch.as_tensor(rng.normal(0, 1.5, (L, L)))
    with torch.no_grad():
        assert float(m.density_at(Q, 1e4, 0.1).min()) > 1 - 1e-9
        assert float(m.density_at(Q, -1e4, 0.1).max()) < 1e-9
        n = m.density_at(Q, 0.2, 0.1).numpy()
        lat = Lattice(L)
        for op in range(8):
            Qr = torch.as_tensor(lat.apply_d4(Q.numpy(), op))
            np.testing.assert_allclose(m.density_at(Qr, 0.2, 0.1).numpy(), lat.apply_d4(n, op),
                                       atol=1e-12)
        plan = LevelPlan(m, 0.1, dtype=torch.float64).bind(m.features(Q[None]))
        mu = torch.tensor([0.2], dtype=torch.float64)
        a, da = plan.density_and_slope(mu)
        np.testing.assert_allclose(a[0].numpy(), n, atol=1e-12)
        h = 1e-5
        fd = (plan.density(mu + h) - plan.density(mu - h)) / (2 * h)
        np.testing.assert_allclose(da.numpy(), fd.numpy(), atol=1e-6)
        assert plan.evaluations == 1  # Fermi sums are not network evaluations
    with pytest.raises(ModelError, match="precision"):
        LevelPlan(m, 0.1, precision="fp8")


@pytest.mark.parametrize("pairs", [False, True])
def test_density_near_is_exact_at_active_sites_and_linear_elsewhere(rng, pairs):
    m = _model(5, pairs=pairs)
    Q = torch.as_tensor(rng.normal(0, 1.5, (3, L, L)))
    with torch.no_grad():
        plan = LevelPlan(m, 0.1, dtype=torch.float64).bind(m.features(Q))
        mu0 = torch.tensor([0.1, 0.2, -0.1], dtype=torch.float64)
        mu = mu0 + torch.tensor([0.03, -0.05, 0.0], dtype=torch.float64)
        n0, dn0 = (x.clone() for x in plan.density_and_slope(mu0))
        exact, dexact = (x.clone() for x in plan.density_and_slope(mu))
        active = [torch.nonzero(r).reshape(-1) for r in (dn0.abs() > 1e-3).reshape(3, -1)]
        active[2] = active[2][:0]  # a configuration with no active site
        n, dn = plan.density_near(mu, mu0, n0, dn0, active)
    linear = n0 + dn0 * (mu - mu0)[:, None, None]
    for b in range(3):
        on = torch.zeros(L * L, dtype=torch.bool)
        on[active[b]] = True
        on = on.reshape(L, L)
        assert bool(on.any()) == (b < 2)
        np.testing.assert_allclose(n[b][on], exact[b][on], atol=1e-12)
        np.testing.assert_allclose(dn[b][on], dexact[b][on], atol=1e-12)
        np.testing.assert_allclose(n[b][~on], linear[b][~on], atol=1e-12)
        np.testing.assert_allclose(dn[b][~on], dn0[b][~on], atol=0)
        # the linear response of a quiet site is close to the exact density
        assert float((n[b] - exact[b]).abs().max()) < 1e-3


@pytest.fixture(scope="module")
def level_model(tmp_path_factory):
    from cdwdata.gcdata import GCSetConfig, generate
    from cdwdata.ml import gctrain
    from cdwdata.quench import QuenchConfig, run_quench

    tmp = tmp_path_factory.mktemp("levels")
    run_quench(QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.5, 0.3), runs=2, steps=30,
                            save_every=10, seed=5, forcefield="ed"), tmp / "q.zarr",
               progress=False)
    generate(tmp / "gc.zarr", GCSetConfig(L=L, n_random=4, frames=(str(tmp / "q.zarr"),),
                                          n_labels=4, seed=2), n_workers=1, progress=False)
    card = gctrain.train([tmp / "gc.zarr"], tmp / "lv", hidden=(16, 8), epochs=6,
                         batch_size=256, threads=1, progress=False, kind="levels",
                         components=4)
    return tmp / "lv", card


def test_a_trained_level_model_loads_with_its_card(level_model, rng):
    path, card = level_model
    assert card["kind"] == "levels" and card["architecture"]["layers"] == [45, 16, 8, 8]
    assert card["architecture"]["components"] == 4
    assert card["inference"]["precisions"] == ["float32", "bf16"]
    hist = [h["force_rmse"] for h in card["metrics"]["history"]]
    assert min(hist[1:]) < hist[0]  # it learns
    model, _, _ = modelfile.load(path)
    assert isinstance(model, LevelModel)
    ff = load_model(path, f=0.4, T=0.1)
    n = ff.density(rng.normal(0, 1, (L, L)))
    assert abs(n.mean() - 0.4) < 1e-6


def test_level_model_conserves_electrons_in_every_langevin_step(level_model):
    from cdwdata import dynamics

    params = HolsteinParams()
    ff = load_model(level_model[0], f=0.3, T=0.1)
    keys = [11, 12]
    Q, v = dynamics.hot_start(keys, L, params, dtype=torch.float32, T_init=0.3)
    state = dynamics.init_state(ff, Q, v, keys)
    N = 0.3 * L * L
    for _ in range(15):
        state = dynamics.step(state, ff, 0.1, params)
        total = state.n.double().sum((-2, -1))
        assert float((total - N).abs().max()) <= 1e-6 * N
        assert ff.last_iterations == 1  # one network evaluation per step, warm or not


def test_ml_quench_with_a_level_model(level_model, tmp_path):
    from cdwdata.quench import QuenchConfig, run_quench

    config = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.4,), runs=1, steps=20,
                          save_every=10, seed=3, forcefield=str(level_model[0]),
                          hot_start_T=0.3, frame_vars=("Q", "n"), compute_dtype="float32")
    run_quench(config, tmp_path / "q.zarr", progress=False)
    ds = store.open_dataset(tmp_path / "q.zarr")
    assert np.isfinite(ds.mu.values).all()
    total = ds.n.values.astype(float).sum((-2, -1))
    assert np.abs(total - 0.4 * L * L).max() <= 1e-6 * 0.4 * L * L


def test_bf16_hidden_layers_of_a_level_model_stay_close_and_conserve_electrons(level_model,
                                                                              rng):
    Q = rng.normal(0, 1.5, (2, L, L))
    exact = load_model(level_model[0], f=0.4, T=0.1)
    fast = load_model(level_model[0], f=0.4, T=0.1, precision="bf16")
    n32, n16 = exact.density(Q), fast.density(Q)
    assert np.abs(n16.sum((-2, -1)) - 0.4 * L * L).max() <= 1e-5 * 0.4 * L * L
    assert 0 < np.abs(n16 - n32).max() < 0.05  # bf16 rounding, not another model
    with pytest.raises(ModelError, match="dtype float32"):
        LevelPlan(exact.model, 0.1, precision="bf16", dtype=torch.float64)


def test_splitting_levels_keeps_the_function_and_refuses_other_layers():
    torch.manual_seed(3)
    small = LevelModel(hidden=[16, 8], components=4)
    with torch.no_grad():
        for p in small.mlp.parameters():
            p.add_(0.1 * torch.randn_like(p))
    G = torch.randn(200, small.n_features, dtype=torch.float32)
    big = LevelModel(hidden=[16, 8], components=12)
    big.split_from(small, spread=0.0)
    for mu, T in ((-1.0, 0.1), (0.3, 0.2), (2.0, 0.3)):
        torch.testing.assert_close(big.site_density(G, mu, T), small.site_density(G, mu, T),
                                   atol=1e-6, rtol=0)
    big.split_from(small, spread=0.01)  # copies apart: n moves only at second order
    with torch.no_grad():
        _, e = big.levels(G)
    assert float((e[:, 0] - e[:, 1]).abs().min()) > 0.009
    with torch.no_grad():
        diff = (big.site_density(G, 0.3, 0.1) - small.site_density(G, 0.3, 0.1)).abs().max()
    assert float(diff) < 0.5 * 0.01**2 * 10.0  # w spread^2 |sigma''|_max / 2 at T = 0.1
    with pytest.raises(ModelError):
        LevelModel(hidden=[16, 8], components=6).split_from(small)
    with pytest.raises(ModelError):
        LevelModel(hidden=[16, 4], components=8).split_from(small)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-4, 0.1, 1.0, 10.0]))
def test_pair_blocks_are_the_eigenvectors_of_two_by_two_hamiltonians(seed, scale):
    from cdwdata.ml.levels import pair_levels

    r = np.random.default_rng(seed)
    P, g = 3, 1.7
    h = r.normal(0, 1, (5, 4 * P))
    h[:, 3 * P:] *= scale  # weak and strong couplings
    Q0 = r.normal(0, 1, (5, 1))
    logw, e = pair_levels(torch.as_tensor(h), torch.as_tensor(Q0), g)
    w = torch.softmax(torch.as_tensor(h[:, :P]), -1).numpy()
    for s in range(5):
        for p in range(P):
            a, b, V = h[s, P + p] - g * Q0[s, 0], h[s, 2 * P + p] - g * Q0[s, 0], h[s, 3 * P + p]
            lam, vec = np.linalg.eigh([[a, V], [V, b]])  # ascending: lower, upper
            got_e = [float(e[s, P + p]), float(e[s, p])]
            got_w = np.exp([float(logw[s, P + p]), float(logw[s, p])])
            # pair_levels regularises r^2 = d^2 + V^2 by 1e-12: r moves by 1e-12 / (2 r) and
            # the weights by a relative 1e-12 / r^2 (seen for d, V ~ 1e-4)
            r2 = ((a - b) / 2) ** 2 + V**2
            np.testing.assert_allclose(got_e, lam, atol=1e-9 + 1e-12 / (2 * np.sqrt(r2)))
            np.testing.assert_allclose(got_w, w[s, p] * vec[0] ** 2, atol=1e-9,
                                       rtol=1e-6 + 2e-12 / r2)
    assert np.isfinite(logw.numpy()).all()


def test_a_pair_model_starts_as_its_plain_model_and_trains_on(level_model, tmp_path):
    from cdwdata.ml import gctrain
    from cdwdata.ml.levels import PAIR_START

    plain, _, _ = modelfile.load(level_model[0])
    pair = LevelModel(hidden=[16, 8], components=8, pairs=True)
    pair.pairs_from(plain)
    G = torch.randn(300, plain.n_features)
    gap, V = PAIR_START
    with torch.no_grad():
        for mu, T in ((-1.0, 0.1), (0.3, 0.2), (2.0, 0.3)):
            d = (pair.site_density(G, mu, T) - plain.site_density(G, mu, T)).abs().max()
            # a level moves by ~V^2 / gap, the partner takes ~(V / gap)^2 / 4 of its weight
            assert float(d) < (V**2 / gap) / (4 * T) + (V / gap) ** 2
    with pytest.raises(ModelError):
        LevelModel(hidden=[16, 8], components=4, pairs=True).pairs_from(plain)
    with pytest.raises(ModelError):
        LevelModel(hidden=[16, 8], components=5, pairs=True)
    card = gctrain.train(json_data_paths(level_model[1]), tmp_path / "pairs", hidden=(16, 8),
                         epochs=2, batch_size=256, threads=1, progress=False, kind="levels",
                         components=8, pairs=True, init=str(level_model[0]))
    assert card["architecture"]["pairs"] is True and card["architecture"]["components"] == 8
    ff = load_model(tmp_path / "pairs", f=0.4, T=0.1)
    assert ff.model.pairs
    n = ff.density(np.random.default_rng(0).normal(0, 1, (L, L)))
    assert abs(n.mean() - 0.4) < 1e-6
    with pytest.raises(ModelError, match="pair model"):
        gctrain.train(json_data_paths(level_model[1]), tmp_path / "back", hidden=(16, 8),
                      epochs=1, batch_size=256, threads=1, progress=False, kind="levels",
                      components=8, init=str(tmp_path / "pairs"))


def json_data_paths(card: dict) -> list[str]:
    return list(card["training"]["data"])


@pytest.mark.parametrize("pairs", [False, True])
def test_unchunked_plan_evaluates_all_configurations_at_once_with_the_same_result(rng, pairs):
    """The GPU's way (no chunks: one network call and one Fermi sum for every site of every
    configuration) gives what the CPU's chunked, configuration by configuration way gives."""
    m = _model(7, pairs=pairs)
    Q = torch.as_tensor(rng.normal(0, 1.5, (3, L, L)))
    mu = torch.tensor([0.1, 0.25, -0.2], dtype=torch.float64)
    with torch.no_grad():
        G = m.features(Q)
        out = []
        for chunk in (5, None):
            plan = LevelPlan(m, 0.1, dtype=torch.float64)
            plan.chunk = chunk
            plan.bind(G)
            out.append([x.clone() for x in (plan.w, plan.e, *plan.density_and_slope(mu))])
            single = LevelPlan(m, 0.1, dtype=torch.float64)
            single.chunk = chunk
            n1, dn1 = single.bind(G[1:2]).density_and_slope(mu[1:2])
            np.testing.assert_allclose(n1[0].numpy(), out[-1][2][1].numpy(), atol=1e-12)
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
