"""Open-cluster refinement of a level model (cdwdata.ml.cluster).

Cross-checked against a direct construction of the cluster Hamiltonian from Q; exact limits
(no hopping, weights summing to one); D4 invariance at fixed mu (to rounding, as the level model itself); the selection;
the spec's validation; and, through the shipped model that uses it, electron conservation in
Langevin steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdwdata import HolsteinParams, Lattice, ModelError
from cdwdata.ml.cluster import ClusterLevels, ClusterSpec
from cdwdata.ml.forcefield import load_model
from cdwdata.ml.levels import LevelModel, LevelPlan

L = 8
pytestmark = pytest.mark.usefixtures("one_torch_thread")
PARAMS = HolsteinParams()


def _direct_cluster_density(Q: np.ndarray, mu: float, T: float, r2: float) -> np.ndarray:
    """n_i of the open cluster |r - r_i|^2 <= r2 around every site, built from Q directly
    (the open-cluster oracle of the benchmarks, an independent construction)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cluster_oracle import cluster_density

    return cluster_density(Q, mu, T, PARAMS, r2)


def _features(Q: np.ndarray) -> torch.Tensor:
    from cdwdata.descriptor import features_torch

    return features_torch(torch.as_tensor(Q, dtype=torch.float64))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), r2=st.sampled_from([1.0, 2.0, 4.0, 5.0, 8.0, 13.0]),
       mu=st.floats(-4.0, 4.0), T=st.floats(0.05, 0.3))
def test_cluster_levels_from_the_features_are_the_open_cluster_of_the_neighbourhood(
        seed, r2, mu, T):
    Q = np.random.default_rng(seed).normal(0.0, 1.5, (L, L))
    cl = ClusterLevels(ClusterSpec(r2=r2), PARAMS.g, PARAMS.t, 0.1, dtype=torch.float64)
    w, e = cl.levels(_features(Q).reshape(-1, 45))
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, atol=1e-12)
    n = (w * torch.sigmoid((mu - e) / T)).sum(-1).reshape(L, L).numpy()
    np.testing.assert_allclose(n, _direct_cluster_density(Q, mu, T, r2),
                               atol=1e-10)
    assert cl.M == ClusterSpec(r2=r2).sites


def test_without_hopping_the_cluster_is_the_bare_site(rng):
    Q = rng.normal(0.0, 1.0, (L, L))
    cl = ClusterLevels(ClusterSpec(r2=5.0), PARAMS.g, 0.0, 0.1, dtype=torch.float64)
    w, e = cl.levels(_features(Q).reshape(-1, 45))
    top = w.argmax(-1)
    np.testing.assert_allclose(w.max(-1).values.numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(e.gather(1, top[:, None]).squeeze(1).numpy(),
                               -PARAMS.g * Q.ravel(), atol=1e-12)


def _random_level_model(K: int = 48) -> LevelModel:
    torch.manual_seed(1)
    m = LevelModel(hidden=(16, 8), components=K).double()
    with torch.no_grad():
        for p in m.mlp.parameters():
            p.normal_(0.0, 0.5)
    return m.eval()


def _refined_plan(m, spec) -> LevelPlan:
    return LevelPlan(m, 0.1, dtype=torch.float64,
                     cluster=ClusterLevels(spec, PARAMS.g, PARAMS.t, 0.1, dtype=torch.float64))


def test_refinement_replaces_the_selected_sites_and_is_d4_invariant(rng):
    m = _random_level_model()
    spec = ClusterSpec(r2=8.0, window_T=5.0, weight=0.05)
    Q = rng.normal(0.0, 1.5, (L, L))
    mu = torch.tensor([0.3], dtype=torch.float64)
    plain = LevelPlan(m, 0.1, dtype=torch.float64).bind(_features(Q[None]))
    n_net = plain.density(mu)[0].numpy()
    plan = _refined_plan(m, spec).bind(_features(Q[None]))
    count = plan.refine(mu)
    n = plan.density(mu)[0].numpy()
    exact = _direct_cluster_density(Q, 0.3, 0.1, 8.0)
    picked = np.abs(n - n_net) > 0
    assert 0 < count < L * L and picked.sum() <= count
    np.testing.assert_allclose(n[picked], exact[picked], atol=1e-10)
    lat = Lattice(L)
    for op in range(8):
        rot = _refined_plan(m, spec).bind(_features(lat.apply_d4(Q, op)[None]))
        assert rot.refine(mu) == count
        np.testing.assert_allclose(rot.density(mu)[0].numpy(), lat.apply_d4(n, op),
                                   atol=1e-12)


def test_the_selection_follows_the_window_and_the_weight(rng):
    m = _random_level_model()
    Q = rng.normal(0.0, 1.5, (L, L))
    mu = torch.tensor([0.0], dtype=torch.float64)
    every = _refined_plan(m, ClusterSpec(r2=5.0, window_T=1e4, weight=0.0))
    every.bind(_features(Q[None]))
    assert every.refine(mu) == L * L
    np.testing.assert_allclose(every.density(mu)[0].numpy(),
                               _direct_cluster_density(Q, 0.0, 0.1, 5.0),
                               atol=1e-10)
    none = _refined_plan(m, ClusterSpec(r2=5.0, window_T=1e-8, weight=0.5))
    none.bind(_features(Q[None]))
    assert none.refine(mu) == 0
    with pytest.raises(ModelError, match="needs at least 21 levels"):
        _refined_plan(_random_level_model(K=16), ClusterSpec(r2=5.0))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), window=st.sampled_from([1.0, 3.0, 5.0]),
       weight=st.sampled_from([0.001, 0.01, 0.1]), mu=st.floats(-1.0, 1.0))
def test_selecting_among_the_steep_sites_picks_the_same_sites_and_densities(
        seed, window, weight, mu):
    """The warm solve's shortcut (select only where the slope allows) against the plain
    refinement (scan every site) followed by the Fermi sum."""
    r = np.random.default_rng(seed)
    m = _random_level_model()
    spec = ClusterSpec(r2=5.0, window_T=window, weight=weight)
    G = _features(r.normal(0.0, 1.5, (2, L, L)))
    mus = torch.tensor([mu, mu + 0.1], dtype=torch.float64)
    plain = _refined_plan(m, spec).bind(G)
    count = plain.refine(mus)
    n, dn = plain.density_and_slope(mus)
    rows = [x.clone() for x in plain.cluster.last_rows]
    fast = _refined_plan(m, spec).bind(G)
    n2, dn2 = fast.refined_density_and_slope(mus)
    assert fast.cluster.last_count == count
    for a, b in zip(rows, fast.cluster.last_rows, strict=True):
        assert torch.equal(torch.sort(a).values, torch.sort(b).values)
    np.testing.assert_allclose(n2.numpy(), n.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dn2.numpy(), dn.numpy(), rtol=0, atol=1e-12)
    # the bound: every selected site is steeper than it
    for b, rows_b in enumerate(rows):
        assert bool((dn_network(m, G, mus)[b].reshape(-1)[rows_b]
                     > fast.cluster.slope_bound).all())


def dn_network(m, G, mus):
    return LevelPlan(m, 0.1, dtype=torch.float64).bind(G).density_and_slope(mus)[1]


@settings(max_examples=40, deadline=None)
@given(r2=st.floats(-5.0, 30.0), window=st.floats(-1.0, 8.0), weight=st.floats(-0.5, 1.5))
def test_cluster_spec_accepts_only_what_it_can_do(r2, window, weight):
    ok = 1.0 <= r2 <= 13.0 and window > 0.0 and 0.0 <= weight < 1.0
    if ok:
        spec = ClusterSpec(r2=r2, window_T=window, weight=weight)
        assert ClusterSpec.from_card(spec.to_dict()) == spec
    else:
        with pytest.raises(ModelError):
            ClusterSpec(r2=r2, window_T=window, weight=weight)
    assert ClusterSpec.from_card(None) is None


def test_the_shipped_refined_model_conserves_electrons_and_records_its_cluster():
    from cdwdata import dynamics

    ff = load_model("holstein", f=0.4, T=0.1)
    assert ff.cluster is not None and ff.attrs()["ml_cluster"] == ff.cluster.to_dict()
    assert load_model("holstein", f=0.4, cluster=False).cluster is None
    n = 12
    keys = [3, 4]
    Q, v = dynamics.hot_start(keys, n, PARAMS, dtype=torch.float32, T_init=0.3)
    state = dynamics.init_state(ff, Q, v, keys)
    refined = []
    for _ in range(6):
        state = dynamics.step(state, ff, 0.1, PARAMS)
        total = state.n.double().sum((-2, -1))
        assert float((total - 0.4 * n * n).abs().max()) <= 1e-6 * 0.4 * n * n
        refined.append(ff.plan().cluster.last_count)
    assert max(refined) > 0  # a hot start has levels near mu


def test_refined_densities_at_fixed_mu_rise_with_mu(rng):
    ff = load_model("holstein", f=0.5, T=0.1)
    Q = rng.normal(0.0, 1.5, (2, 12, 12))
    mu = np.array([0.1, -0.2])
    lo = ff.density_at(Q, mu - 0.01, select_mu=mu)
    hi = ff.density_at(Q, mu + 0.01, select_mu=mu)
    assert (hi - lo).min() >= -1e-6
    with pytest.raises(ModelError, match="own T"):
        ff.density_at(Q, mu, T=0.2)


def test_cdw_refine_writes_the_same_network_with_a_cluster_in_its_card(tmp_path, capsys):
    from cdwdata.cli import main
    from cdwdata.ml import modelfile

    out = tmp_path / "v10-c5"
    assert main(["refine", "holstein-gc-v10", "--out", str(out), "--r2", "5",
                 "--window-T", "2", "--weight", "0.05"]) == 0
    assert "21-site open cluster" in capsys.readouterr().out
    card, _ = modelfile.read_card(out)
    assert card["inference"]["cluster"] == {"r2": 5.0, "window_T": 2.0, "weight": 0.05,
                                            "sites": 21}
    assert card["derived_from"]["name"] == "holstein-gc-v10"
    ff = load_model(out, f=0.5)
    assert ff.cluster == ClusterSpec(r2=5.0, window_T=2.0, weight=0.05)
    plain = load_model("holstein-gc-v10", f=0.5)
    assert plain.cluster is None
    for a, b in zip(ff.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert main(["refine", "holstein-gc-v9", "--out", str(tmp_path / "x")]) == 2
    assert "only level models" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cluster_levels_on_cuda_match_the_cpu(rng):
    Q = rng.normal(0.0, 1.5, (L, L))
    G = _features(Q).reshape(-1, 45)
    spec = ClusterSpec(r2=8.0)
    w, e = ClusterLevels(spec, PARAMS.g, PARAMS.t, 0.1, dtype=torch.float64).levels(G)
    wc, ec = ClusterLevels(spec, PARAMS.g, PARAMS.t, 0.1, dtype=torch.float64,
                           device="cuda").levels(G.cuda())
    np.testing.assert_allclose(ec.cpu().numpy(), e.numpy(), atol=1e-10)
    mu, T = 0.2, 0.1
    n = (w * torch.sigmoid((mu - e) / T)).sum(-1)
    nc = (wc * torch.sigmoid((mu - ec) / T)).sum(-1).cpu()
    np.testing.assert_allclose(nc.numpy(), n.numpy(), atol=1e-10)


def test_a_batch_without_chunks_gives_each_runs_own_forces(rng):
    """The GPU's way on the CPU: a batch of runs in one tensor and an unchunked plan (one
    network call, one selection and eigh, one Fermi sum of the active sites for all runs)
    against each run evaluated alone, through the warm solve of the shipped refined model."""
    Q = torch.as_tensor(rng.normal(0.0, 1.5, (3, 24, 24)), dtype=torch.float64)
    alone = load_model("holstein-gc-v12", f=0.45, dtype=torch.float64)
    F1, n1, mu1 = zip(*(alone.evaluate_with_mu(Q[b:b + 1]) for b in range(3)), strict=True)
    batch = load_model("holstein-gc-v12", f=0.45, dtype=torch.float64)
    batch.plan().chunk = None
    F, n, mu = batch.evaluate_with_mu(Q)
    np.testing.assert_allclose(mu.numpy(), torch.cat(mu1).numpy(), atol=1e-9)
    np.testing.assert_allclose(n.numpy(), torch.cat(n1).numpy(), atol=1e-9)
    np.testing.assert_allclose(F.numpy(), torch.cat(F1).numpy(), atol=1e-9)
    # warm, from hints at and off each run's mu: the Newton iterations (a run stops at its
    # own convergence, however many its batch mates need) and the refinement
    hint = mu + torch.tensor([0.0, -0.03, 0.005], dtype=torch.float64)
    Fw, nw, muw = batch.evaluate_with_mu(Q, mu_hint=hint)
    assert batch.last_solve == "warm" and batch.plan().cluster.last_count > 0
    for b in range(3):
        Fb, nb, mub = alone.evaluate_with_mu(Q[b:b + 1], mu_hint=hint[b:b + 1])
        np.testing.assert_allclose(nw[b].numpy(), nb[0].numpy(), atol=1e-9)
        np.testing.assert_allclose(Fw[b].numpy(), Fb[0].numpy(), atol=1e-9)
        assert abs(float(muw[b]) - float(mub[0])) < 1e-9


def test_batched_eigh_over_threads_equals_one_thread_and_raises_a_threads_error(
        monkeypatch):
    from cdwdata.ml import cluster

    g = torch.Generator().manual_seed(3)
    A = torch.randn(3 * cluster.EIGH_PER_THREAD + 7, 9, 9, generator=g, dtype=torch.float64)
    A = A + A.transpose(1, 2)
    e1, V1 = torch.linalg.eigh(A)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        e2, V2 = cluster.batched_eigh(A)
        np.testing.assert_allclose(e2.numpy(), e1.numpy(), rtol=0, atol=1e-12)
        # eigenvectors up to sign: the site weights |V|^2 are what the model uses
        np.testing.assert_allclose(V2.square().numpy(), V1.square().numpy(), atol=1e-12)
        plain = torch.linalg.eigh

        def failing(H):  # the last part, solved in another thread, fails
            if H.shape[0] < A.shape[0] and bool((H[-1] == A[-1]).all()):
                raise torch.linalg.LinAlgError("from a worker")
            return plain(H)

        monkeypatch.setattr(torch.linalg, "eigh", failing)
        with pytest.raises(torch.linalg.LinAlgError, match="from a worker"):
            cluster.batched_eigh(A)
    finally:
        torch.set_num_threads(threads)
