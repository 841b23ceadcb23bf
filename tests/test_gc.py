"""Grand-canonical electrons and the grand-canonical ML model (docs/conventions.md, locality).

Exact physics first: densities at a fixed mu from one diagonalisation equal the canonical
ones at the canonical mu; n_i(Q; mu) = n_i(Q + mu/g; 0); dn_i/dmu >= 0 at every site;
particle-hole symmetry n_i(-Q; -mu) = 1 - n_i(Q; mu). Then the model: the descriptor shifts
linearly under a uniform shift of Q, the model is D4-invariant with mu solved, the filling
equation holds to its tolerance in every Langevin step, model files carry their (f, T) range,
training sets resume and hold exact labels, and the held-out judge gives zero error for ED.
Everything is CI-sized (L = 8..12, tiny networks, a few epochs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdwdata import HolsteinParams, Lattice, ModelError, ParameterError, descriptor, ed, store
from cdwdata.ml import modelfile
from cdwdata.ml.forcefield import NEWTON_STEPS, GrandCanonicalForceField, load_model
from cdwdata.ml.gcmodel import DensityModel, shift_direction, solve_mu

L = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- exact electrons at a fixed chemical potential ---------------------------------------

def test_fixed_mu_density_at_the_canonical_mu_is_the_canonical_density(rng):
    Q = rng.normal(0, 1.2, (3, L, L))
    for T, f in ((0.1, 0.3), (0.25, 0.5)):
        res = ed.solve(Q, T, f)
        np.testing.assert_allclose(ed.density_at(Q, res.mu, T), res.n, atol=1e-12)
        sp = ed.spectrum(Q)
        mu = sp.chemical_potential(np.full((3, 1), T), np.full((3, 1), f))[:, 0]
        np.testing.assert_allclose(mu, res.mu, atol=1e-10)


def test_only_h_minus_mu_matters(rng, params):
    Q = rng.normal(0, 1.0, (2, L, L))
    mu = np.array([-1.3, 0.7])
    shifted = Q + (mu / params.g)[:, None, None]
    np.testing.assert_allclose(ed.density_at(Q, mu, 0.15), ed.density_at(shifted, 0.0, 0.15),
                               atol=1e-12)


def test_density_is_non_decreasing_in_mu_at_every_site(rng):
    Q = rng.normal(0, 1.5, (2, L, L))
    sp = ed.spectrum(Q)
    mus = np.linspace(-6, 6, 41)
    n = sp.density(np.tile(mus, (2, 1)), np.full((2, 41), 0.1))  # (B, K, L, L)
    assert (np.diff(n, axis=1) >= -1e-12).all()


def test_particle_hole_symmetry(rng):
    Q = rng.normal(0, 1.0, (L, L))
    n = ed.density_at(Q, 0.8, 0.2)
    np.testing.assert_allclose(ed.density_at(-Q, -0.8, 0.2), 1.0 - n, atol=1e-12)


def test_float32_eigensolver_changes_densities_by_single_precision_rounding_only(rng):
    Q = rng.normal(0, 1.0, (2, L, L))
    a = ed.solve(Q, 0.1, 0.4)
    b = ed.solve(Q, 0.1, 0.4, eig_dtype="float32")
    assert np.abs(a.n - b.n).max() < 1e-5
    assert np.abs(a.mu - b.mu).max() < 1e-5


# --- the model's inputs ----------------------------------------------------------------------

def test_descriptor_shifts_linearly_under_a_uniform_shift(rng):
    Q = torch.as_tensor(rng.normal(0, 2.0, (3, 12, 12)))
    a = shift_direction()
    for c in (-2.5, 0.4, 3.0):
        d = descriptor.features_torch(Q + c) - descriptor.features_torch(Q) - c * a
        assert float(d.abs().max()) < 1e-12
    # only the A1 features (centre and eight shell sums) move
    assert (a[9:] == 0).all() and (a[:9] > 0).all()


def _toy(seed=0, hidden=(16, 8), dtype=torch.float64) -> DensityModel:
    torch.manual_seed(seed)
    m = DensityModel(hidden=hidden)
    gen = torch.Generator().manual_seed(seed + 1)
    m.input_norm.set(0.1 * torch.randn(46, generator=gen), 1.0 + torch.rand(46, generator=gen))
    return m.to(dtype).eval()


def _card(**extra):
    card = {"params": HolsteinParams().to_dict(), "filling": 0.5, "grand_canonical": True,
            "filling_range": [0.25, 0.55], "temperature_range": [0.1, 0.3],
            "mu_range": [-8.0, 3.0], "mu_by_filling": [[0.25, -3.0], [0.55, 0.5]]}
    card.update(extra)
    return card


@pytest.fixture()
def toy_path(tmp_path):
    modelfile.save(_toy(dtype=torch.float32), tmp_path / "gc", _card())
    return tmp_path / "gc"


def test_model_is_d4_invariant_with_mu_solved(trained, rng):
    ff = load_model(trained, f=0.4, T=0.1, dtype=torch.float64)
    Q = rng.normal(0, 1.5, (L, L))
    n0 = ff.density(Q)
    mu0 = float(ff.last_mu)
    lat = Lattice(L)
    for op in range(8):
        Qr = lat.apply_d4(Q, op)
        np.testing.assert_allclose(ff.density(Qr), lat.apply_d4(n0, op), atol=1e-12)
        assert abs(float(ff.last_mu) - mu0) < 1e-9


def test_filling_equation_holds_in_every_langevin_step(trained, params):
    from cdwdata import dynamics

    ff = load_model(trained, f=0.3, T=0.1, dtype=torch.float32)
    keys = [11, 12]
    Q, v = dynamics.hot_start(keys, 12, params, dtype=torch.float32, T_init=0.3)
    state = dynamics.init_state(ff, Q, v, keys)
    N = 0.3 * 144
    for _ in range(20):
        state = dynamics.step(state, ff, 0.1, params)
        total = state.n.double().sum((-2, -1))
        assert float((total - N).abs().max()) <= 1e-6 * N
        assert float(ff.last_residual.abs().max()) <= 1e-7 * N


def test_solve_mu_brackets_a_gap_and_finds_the_root():
    eps = torch.cat([torch.linspace(-4, -1, 50), torch.linspace(1, 4, 50)]).double()[None]
    eps = eps.repeat(3, 1)

    def count(mu):
        n = torch.sigmoid((mu[:, None] - eps) / 0.1)
        return n.sum(-1), n

    target = torch.tensor([30.0, 50.0, 80.0], dtype=torch.float64)
    mu, n, res, _ = solve_mu(count, target, torch.full((3,), 3.0, dtype=torch.float64),
                             lambda n: (n * (1 - n)).sum(-1) / 0.1 + 0.1)
    assert float(res.abs().max()) <= 1e-7 * 80
    assert abs(float(mu[1])) < 1.0  # half filling: inside the gap


def test_card_range_is_enforced(toy_path):
    with pytest.raises(ModelError, match="fillings"):
        load_model(toy_path, f=0.7, T=0.1)
    with pytest.raises(ModelError, match="temperatures"):
        load_model(toy_path, f=0.4, T=0.5)
    ff = load_model(toy_path, f=0.4, T=0.3)
    assert isinstance(ff, GrandCanonicalForceField) and ff.attrs()["electron_T"] == 0.3


def test_model_file_round_trip_and_tampering(toy_path, rng):
    a = load_model(toy_path, f=0.45, T=0.2, dtype=torch.float64)
    Q = rng.normal(0, 1.0, (2, L, L))
    ref = _toy().float().double()
    with torch.no_grad():
        n_ref = ref.density_at(torch.as_tensor(Q), torch.tensor([0.3, -0.2]), 0.2).numpy()
    np.testing.assert_allclose(a.density_at(Q, [0.3, -0.2]), n_ref, atol=1e-6)
    w, _ = modelfile.paths(toy_path)
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ModelError):
        load_model(toy_path, f=0.4)


# --- training sets and training --------------------------------------------------------------

def _script(tmp_path, body: str) -> None:
    """Dask's local workers re-import __main__: run set generation from a file."""
    import subprocess
    import sys

    p = tmp_path / "job.py"
    p.write_text("if __name__ == '__main__':\n" + "\n".join("    " + s for s in
                                                             body.strip().splitlines()) + "\n")
    subprocess.run([sys.executable, str(p)], check=True, cwd=tmp_path, timeout=1200)


@pytest.fixture(scope="module")
def gcset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gcset")
    _script(tmp, f"""
from cdwdata.gcdata import GCSetConfig, generate
from cdwdata.quench import QuenchConfig, run_quench
run_quench(QuenchConfig(L={L}, temperatures=(0.1,), fillings=(0.5, 0.3), runs=3, steps=40,
           save_every=10, seed=5, forcefield='ed'), 'q.zarr', progress=False)
c = GCSetConfig(L={L}, n_random=6, frames=('q.zarr',), n_labels=5, seed=2)
generate('gc.zarr', c, n_workers=1, progress=False)
""")
    return tmp


def test_gc_labels_are_exact_at_their_mu_and_cover_the_asked_fillings(gcset):
    ds = store.open_dataset(gcset / "gc.zarr")
    assert ds.sizes["sample"] == 6 + 2 * 3 * 4
    assert bool(ds.sample_done.values.all())
    Q, n, mu, T = (ds[k].values for k in ("Q", "n", "mu", "T_e"))
    for s in (0, 7, 20):
        for k in range(n.shape[1]):
            np.testing.assert_allclose(ed.density_at(Q[s], mu[s, k], T[s, k]), n[s, k],
                                       atol=2e-7)
    fill = n.mean((-2, -1))
    assert fill.min() >= 0.25 - 1e-5 and fill.max() <= 0.55 + 1e-5
    assert set(np.unique(T)) <= {0.1, 0.2, 0.3}


def test_gc_set_resume_redoes_nothing(gcset):
    from cdwdata.gcdata import GCSetConfig, label_task

    c = GCSetConfig(L=L, n_random=6, frames=(str(gcset / "q.zarr"),), n_labels=5, seed=2)
    assert label_task(str(gcset / "gc.zarr"), c, list(range(30))) == 0


def test_gc_set_can_take_only_some_runs_of_a_store(gcset):
    from cdwdata.gcdata import GCSetConfig

    q = str(gcset / "q.zarr")
    every = GCSetConfig(L=L, frames=(q,), frame_fillings=(0.3,)).plan()
    some = GCSetConfig(L=L, frames=(q,), frame_fillings=(0.3,), frame_runs=(2, 1)).plan()
    assert set(every["run"]) == {0, 1, 2} and set(some["run"]) == {1, 2}
    keep = every["run"] != 0
    for key in ("run", "frame", "step", "f0"):
        np.testing.assert_array_equal(some[key], every[key][keep])
    with pytest.raises(ParameterError):
        GCSetConfig(L=L, frames=(q,), frame_runs=(-1,))


@pytest.fixture(scope="module")
def trained(gcset):
    from cdwdata.ml import gctrain

    gctrain.train([gcset / "gc.zarr"], gcset / "m", hidden=(16, 8), epochs=40, batch_size=256,
                  threads=1, progress=False)
    return gcset / "m"


def test_training_gives_a_loadable_model_with_its_ranges(trained, rng):
    card, _ = modelfile.read_card(trained)
    assert card["kind"] == "density" and card["architecture"]["layers"] == [46, 16, 8, 1]
    assert 0.25 <= card["filling_range"][0] < card["filling_range"][1] <= 0.55 + 1e-6
    assert card["temperature_range"] == [0.1, 0.3]
    assert card["training"]["val_configurations"] > 0
    ff = load_model(trained, f=0.4, T=0.1)
    n = ff.density(rng.normal(0, 1, (L, L)))
    assert abs(n.mean() - 0.4) < 1e-6


def test_heldout_judge_gives_zero_error_for_exact_forces(gcset):
    from cdwdata.forcefields import EDForceField
    from cdwdata.ml import heldout

    rep = heldout.evaluate(lambda f, T: EDForceField(T, f), gcset / "q.zarr",
                           step_range=(10, 40))
    for e in rep["by_f"].values():
        assert e["rmse"] < 1e-9 and e["n_frames"] == 3 * 4
    assert rep["frames"]["rmse"].shape == (1, 2, 3, 4)


def test_ml_quench_stores_mu_conserves_electrons_and_is_deterministic(trained, tmp_path):
    from cdwdata.quench import QuenchConfig, run_quench

    config = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.4,), runs=2, steps=30,
                          save_every=10, seed=3, forcefield=str(trained), hot_start_T=0.3,
                          frame_vars=("Q", "n"), compute_dtype="float32")
    for name in ("a.zarr", "b.zarr"):
        run_quench(config, tmp_path / name, progress=False)
    a, b = (store.open_dataset(tmp_path / n) for n in ("a.zarr", "b.zarr"))
    assert np.isfinite(a.mu.values).all()
    np.testing.assert_array_equal(a.Q.values, b.Q.values)
    np.testing.assert_array_equal(a.mu.values, b.mu.values)
    total = a.n.values.astype(float).sum((-2, -1))
    assert np.abs(total - 0.4 * L * L).max() <= 1e-6 * 0.4 * L * L
    assert a.attrs["models"] == {"0.4": str(trained)}


def test_warm_started_quench_resumes_bit_identically(trained, tmp_path):
    from cdwdata.quench import QuenchConfig, prepare_store, run_quench, run_segment

    class Kill(Exception):
        pass

    def kill_at_2(frame, runs):
        if frame == 2:
            raise Kill

    config = QuenchConfig(L=L, temperatures=(0.1,), fillings=(0.3,), runs=1, steps=40,
                          save_every=10, seed=4, forcefield=str(trained), hot_start_T=0.3,
                          frame_vars=("Q", "n"), compute_dtype="float32")
    run_quench(config, tmp_path / "full.zarr", progress=False)
    prepare_store(tmp_path / "cut.zarr", config)
    with pytest.raises(Kill):
        run_segment(tmp_path / "cut.zarr", config, 0, 0, on_frame=kill_at_2)
    assert store.frames_done(tmp_path / "cut.zarr").tolist() == [[[3]]]
    run_segment(tmp_path / "cut.zarr", config, 0, 0)
    a, b = (store.open_dataset(tmp_path / n) for n in ("full.zarr", "cut.zarr"))
    np.testing.assert_array_equal(a.Q.values, b.Q.values)
    np.testing.assert_array_equal(a.mu.values, b.mu.values)


@pytest.mark.parametrize("chunk", [7, 64, None])
def test_inference_plan_equals_the_plain_network(trained, rng, chunk):
    """The folded, chunked, buffer-reusing plan gives the network's n and, by forward mode,
    its exact dn/dmu (against a central difference of the plain network)."""
    from cdwdata.ml.inference import DensityPlan

    ff = load_model(trained, f=0.4, T=0.2, dtype=torch.float64)
    G = ff.model.features(torch.as_tensor(rng.normal(0, 1, (2, L, L))))
    mu = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    plan = DensityPlan(ff.model, 0.2, dtype=torch.float64, chunk=chunk).bind(G)
    for _ in range(2):  # buffers reused: the second call gives the same numbers
        n, dn = plan.density_and_slope(mu)
        np.testing.assert_allclose(n.numpy(), ff.model.site_density(G, mu, 0.2).numpy(),
                                   atol=1e-12)
        np.testing.assert_allclose(plan.density(mu).numpy(), n.numpy(), atol=1e-15)
    eps = 1e-6
    fd = (ff.model.site_density(G, mu + eps, 0.2) - ff.model.site_density(G, mu - eps, 0.2))
    np.testing.assert_allclose(dn.numpy(), fd.numpy() / (2 * eps), atol=1e-7)
    bf = load_model(trained, f=0.4, T=0.2, precision="bf16")
    Q = rng.normal(0, 1, (L, L))
    assert np.abs(bf.density(Q) - ff.density(Q)).max() < 0.05
    assert bf.attrs()["ml_precision"] == "bf16"


def test_warm_linear_step_equals_the_full_solve(trained, rng):
    """From a nearby mu (a Langevin step away), one evaluation plus a Newton step in linear
    response gives the exact electron count and the densities of the full bracketed solve."""
    ff = load_model(trained, f=0.4, T=0.2, dtype=torch.float64)
    Q = torch.as_tensor(rng.normal(0, 1, (L, L)))[None]
    n_ref, mu_ref, _ = ff.solve(Q)
    assert ff.last_iterations >= 2
    for offset in (1e-5, -5e-5):
        n, mu, res = ff.solve(Q, mu_hint=mu_ref + offset)
        assert ff.last_iterations == 1
        assert abs(float(res[0])) < 1e-9 * L * L
        assert abs(float(mu[0] - mu_ref[0])) < 1e-8
        np.testing.assert_allclose(n.numpy(), n_ref.numpy(), atol=1e-8)
    # a hint too far away for linear response falls back to the bracketed solve
    n, mu, res = ff.solve(Q, mu_hint=mu_ref + 0.5)
    assert ff.last_iterations >= 2
    assert abs(float(res[0])) < 1e-6 * L * L
    np.testing.assert_allclose(n.numpy(), n_ref.numpy(), atol=1e-4)


def test_density_near_is_the_network_on_active_sites_and_linear_response_elsewhere(trained,
                                                                                    rng):
    from cdwdata.ml.inference import DensityPlan

    ff = load_model(trained, f=0.4, T=0.2, dtype=torch.float64)
    G = ff.model.features(torch.as_tensor(rng.normal(0, 1, (2, L, L))))
    plan = DensityPlan(ff.model, 0.2, dtype=torch.float64, chunk=7).bind(G)
    mu0 = torch.tensor([-0.3, 0.2], dtype=torch.float64)
    mu = mu0 + torch.tensor([0.03, -0.02], dtype=torch.float64)
    n0, dn0 = (t.clone() for t in plan.density_and_slope(mu0))
    exact, exact_slope = (t.clone() for t in plan.density_and_slope(mu))
    every = [torch.arange(L * L), torch.arange(L * L)]
    n_all, slope_all = plan.density_near(mu, mu0, n0, dn0, every)
    np.testing.assert_allclose(n_all.numpy(), exact.numpy(), atol=1e-14)
    np.testing.assert_allclose(slope_all.numpy(), exact_slope.numpy(), atol=1e-12)
    some = [torch.tensor([0, 5, L * L - 1]), torch.tensor([], dtype=torch.int64)]
    before = plan.evaluations
    got, slope = plan.density_near(mu, mu0, n0, dn0, some)
    got = got.reshape(2, -1).numpy()
    assert plan.evaluations - before == pytest.approx(3 / (2 * L * L))
    lin = (n0 + dn0 * (mu - mu0)[:, None, None]).reshape(2, -1).numpy()
    flat = exact.reshape(2, -1).numpy()
    np.testing.assert_allclose(got[0, [0, 5, L * L - 1]], flat[0, [0, 5, L * L - 1]], atol=1e-14)
    mask = np.ones(L * L, bool)
    mask[[0, 5, L * L - 1]] = False
    np.testing.assert_allclose(got[0, mask], lin[0, mask], atol=1e-14)
    np.testing.assert_allclose(got[1], lin[1], atol=1e-14)
    slope = slope.reshape(2, -1).numpy()
    np.testing.assert_allclose(slope[0, [0, 5, L * L - 1]],
                               exact_slope.reshape(2, -1).numpy()[0, [0, 5, L * L - 1]],
                               atol=1e-12)
    np.testing.assert_array_equal(slope[0, mask], dn0.reshape(2, -1).numpy()[0, mask])


def test_warm_newton_steps_on_active_sites_match_the_full_solve(trained, rng):
    """A hint a few Langevin steps away needs Newton steps; they evaluate only the sites with
    a non-negligible slope and still give the full solve's densities and an exact count."""
    ff = load_model(trained, f=0.4, T=0.2, dtype=torch.float64)
    Q = torch.as_tensor(rng.normal(0, 1, (2, L, L)))
    n_ref, mu_ref, _ = ff.solve(Q)
    for offset in (0.02, -0.03):
        n, mu, res = ff.solve(Q, mu_hint=mu_ref + offset)
        assert 1 < ff.last_iterations < 1 + NEWTON_STEPS
        assert float(res.abs().max()) < 1e-9 * L * L
        np.testing.assert_allclose(mu.numpy(), mu_ref.numpy(), atol=1e-4)
        np.testing.assert_allclose(n.numpy(), n_ref.numpy(), atol=2e-4)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), f=st.floats(0.05, 0.95), T=st.floats(0.02, 0.5),
       start=st.floats(-20, 20), gap=st.floats(0.0, 4.0))
@example(seed=323, f=0.609375, T=0.03125, start=-4.0, gap=4.0)  # a start deep in a wide gap
def test_solve_mu_finds_the_filling_of_any_monotone_count(seed, f, T, start, gap):
    """Property: for level sets with or without a gap, any start and any T, the bracketed
    secant iteration meets the tolerance (the exact count is monotone in mu)."""
    g = torch.Generator().manual_seed(seed)
    eps = 3 * torch.randn(2, 200, generator=g, dtype=torch.float64)
    eps = eps + gap * torch.sign(eps)

    def count(mu):
        n = torch.sigmoid((mu[:, None] - eps) / T)
        return n.sum(-1), n

    target = torch.full((2,), f * 200, dtype=torch.float64)
    mu, n, res, _ = solve_mu(count, target, torch.full((2,), start, dtype=torch.float64),
                             lambda n: (n * (1 - n)).sum(-1) / T + 0.2)
    assert float(res.abs().max()) <= 1e-7 * f * 200
    np.testing.assert_allclose(n.sum(-1).numpy(), target.numpy(), rtol=1e-7)


def test_fine_tuning_starts_from_the_saved_weights(gcset, trained, tmp_path):
    from cdwdata.ml import gctrain

    card = gctrain.train([gcset / "gc.zarr"], tmp_path / "ft", hidden=(16, 8), epochs=1,
                         batch_size=256, lr=1e-9, threads=1, progress=False, init=str(trained))
    a, _, _ = modelfile.load(trained)
    b, _, _ = modelfile.load(tmp_path / "ft")
    for k, v in a.weights().items():  # lr ~ 0: the weights are the starting ones
        assert torch.allclose(v, b.weights()[k], atol=1e-6), k
    assert card["training"]["init"] == str(trained)
    with pytest.raises(ModelError, match="layers"):
        gctrain.train([gcset / "gc.zarr"], tmp_path / "bad", hidden=(8,), epochs=1,
                      threads=1, progress=False, init=str(trained))


def test_a_wider_network_starts_as_the_narrower_ones_function(gcset, trained, rng, tmp_path):
    from cdwdata.ml import gctrain

    small, _, _ = modelfile.load(trained)
    torch.manual_seed(3)
    wide = DensityModel(hidden=(40, 24))
    wide.widen_from(small)
    G = torch.as_tensor(rng.normal(0, 1, (2, 6, 6, descriptor.N_FEATURES)), dtype=torch.float32)
    mu, T = torch.tensor([-0.3, 0.4]), torch.tensor([0.1, 0.25])
    before = small.site_density(G, mu, T)
    assert torch.allclose(wide.site_density(G, mu, T), before, atol=1e-6)
    # the extra units are live: one gradient step moves the function
    wide.logits(G, mu, T).sum().backward()
    extra = wide.mlp[-1].weight.grad[0, 8:]
    assert extra.abs().max() > 0
    for hidden in [(8, 4), (16,), (16, 8, 4)]:  # narrower, or another depth: refused
        with pytest.raises(ModelError, match="cannot embed"):
            DensityModel(hidden=hidden).widen_from(small)
    card = gctrain.train([gcset / "gc.zarr"], tmp_path / "w", hidden=(40, 24), epochs=1,
                         batch_size=256, lr=1e-9, threads=1, progress=False, init=str(trained))
    assert card["architecture"]["layers"] == [46, 40, 24, 1]
    w, _, _ = modelfile.load(tmp_path / "w")
    assert torch.allclose(w.site_density(G, mu, T), before, atol=1e-5)


def test_heldout_report_of_a_grand_canonical_model(gcset, trained):
    from cdwdata.ml import heldout

    rep = heldout.evaluate(str(trained), gcset / "q.zarr", step_range=(10, 40),
                           keep_forces=True)
    for key, e in rep["by_f"].items():
        assert 0 <= e["dn_dmu_negative_fraction"] <= 1
        assert e["rmse"] > 0 and e["worst_site"]["step"] in (10, 20, 30, 40)
        F_ex, F_ml = rep["forces"][key]  # the forces behind the statistics (Fig. 2)
        assert F_ex.shape == F_ml.shape == (e["n_frames"], L, L)
        assert np.sqrt(np.mean((F_ml - F_ex) ** 2)) == pytest.approx(e["rmse"], rel=1e-12)
    assert np.isfinite(rep["frames"]["mu"].values).all()


def test_validate_heldout_writes_the_report_and_the_fig2_plots(gcset, trained, tmp_path):
    from cdwdata.cli import main

    assert main(["validate", str(trained), "--heldout", str(gcset / "q.zarr"), "--steps", "10",
                 "40", "--out", str(tmp_path)]) == 0
    name = f"{trained.name}-heldout"
    for suffix in (".json", "-parity.png", "-errors.png"):
        assert (tmp_path / f"{name}{suffix}").stat().st_size > 0
