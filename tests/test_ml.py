"""ML force field: network, symmetry, model files, training, validation, CLI (paper sec. III).

Every test states a property: architecture of appendix B, D4 and translation covariance of
the predicted forces, forces of the energy model = -grad of its energy, density recovered
from the force law, bit-identical retraining with a seed, model files that refuse to load
anything wrong (and never unpickle). Everything is CI-sized: L = 4..12, 1-4 epochs.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdwdata import HolsteinParams, InputError, Lattice, ModelError, ParameterError, ed, store
from cdwdata.ml import modelfile
from cdwdata.ml.forcefield import MLForceField, list_models, load_model
from cdwdata.ml.model import ForceModel
from cdwdata.trainset import TrainsetConfig, random_configuration

L_TRAIN = 8
F_FILL = 0.5
T_EL = 0.1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_model(kind: str = "force", seed: int = 0, dtype=torch.float64) -> ForceModel:
    """Randomly initialised model with non-trivial normalisation buffers."""
    torch.manual_seed(seed)
    m = ForceModel(kind=kind)
    g = torch.Generator().manual_seed(seed + 1)
    m.input_norm.set(0.1 * torch.randn(45, generator=g), 0.5 + torch.rand(45, generator=g))
    m.output_norm.set(torch.tensor(0.2), torch.tensor(1.7))
    return m.to(dtype).eval()


def _save_toy(tmp_path, kind="force", name="toy", **card):
    m = _toy_model(kind, dtype=torch.float32)
    base = {"params": HolsteinParams().to_dict(), "filling": F_FILL, "electron_T": T_EL}
    base.update(card)
    modelfile.save(m, tmp_path / name, base)
    return m, tmp_path / name


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    """Tiny ED training set, L = 8, f = 1/2: 16 random + 8 'quench' snapshots in 4 runs."""
    path = tmp_path_factory.mktemp("ml") / "ts.zarr"
    cfg = TrainsetConfig(L=L_TRAIN, fillings=(F_FILL,), T=T_EL, n_random=16, quench_runs=0)
    sources = ["random"] * 16 + ["quench"] * 8
    runs = list(range(16)) + [0, 0, 1, 1, 2, 2, 3, 3]
    steps = [-1] * 16 + [10, 20] * 4
    store.create_trainset(path, L_TRAIN, (F_FILL,), sources, runs, steps, T_EL,
                          cfg.attrs("test"))
    w = store.TrainsetWriter(path)
    Q = np.stack([random_configuration(cfg, F_FILL, s) for s in range(24)])
    res = ed.solve(Q, T_EL, F_FILL, cfg.params)
    for s in range(24):
        w.write_sample(0, s, {"Q": Q[s], "F": res.F[s], "n": res.n[s]})
    return path


@pytest.fixture(scope="module")
def trained(trainset, tmp_path_factory):
    """A direct-force model trained for 4 epochs on the tiny set."""
    from cdwdata.ml.train import train

    out = tmp_path_factory.mktemp("models") / "tiny-f0.5"
    res = train(trainset, F_FILL, out, epochs=4, batch_size=128, seed=3, progress=False)
    return res


# ------------------------------------------------------------------ architecture


def test_mlp_architecture_is_the_papers():
    m = ForceModel()
    assert m.sizes == [45, 512, 256, 64, 16, 1]
    lin = [x for x in m.mlp if isinstance(x, torch.nn.Linear)]
    relu = [x for x in m.mlp if isinstance(x, torch.nn.ReLU)]
    assert len(lin) == 5 and len(relu) == 4 and isinstance(m.mlp[-1], torch.nn.Linear)
    n_params = sum(p.numel() for p in m.mlp.parameters())
    assert n_params == 45 * 512 + 512 + 512 * 256 + 256 + 256 * 64 + 64 + 64 * 16 + 16 + 17
    # normalisation lives in buffers, so it is saved with the weights
    w = m.weights()
    assert w["input_norm.mean"].shape == (45,) and w["output_norm.std"].shape == (1,)
    assert not any(k.startswith("descriptor.") for k in w)


def test_unknown_kind_raises():
    with pytest.raises(ParameterError, match="kind"):
        ForceModel(kind="charge")


# ------------------------------------------------------------------ symmetry


@pytest.mark.parametrize("kind", ["force", "energy"])
@pytest.mark.parametrize("L", [8, 10])
def test_forces_are_d4_and_translation_covariant(kind, L, rng):
    m = _toy_model(kind)
    lat = Lattice(L)
    Q = rng.normal(0.0, 0.8, (L, L)) + 0.5 * lat.sign
    F = m(torch.from_numpy(Q)).detach().numpy()
    for op in range(8):
        Qt = lat.apply_d4(Q, op, (0, 0))
        Ft = m(torch.from_numpy(Qt)).detach().numpy()
        np.testing.assert_allclose(Ft, lat.apply_d4(F, op, (0, 0)), atol=1e-10, rtol=0)
    for dx, dy in ((1, 0), (0, 3), (2, 5)):
        Ft = m(torch.from_numpy(lat.translate(Q, dx, dy))).detach().numpy()
        np.testing.assert_allclose(Ft, lat.translate(F, dx, dy), atol=1e-10, rtol=0)


# ------------------------------------------------------------------ energy variant


def test_energy_model_forces_are_minus_gradient_of_its_energy(rng):
    m = _toy_model("energy")
    L = 8
    Q = rng.normal(0.0, 0.8, (L, L))
    F = m(torch.from_numpy(Q)).detach().numpy().ravel()
    h = 1e-6
    sites = [0, 9, 27, 63]
    batch = []
    for i in sites:
        for s in (1.0, -1.0):
            Qs = Q.copy().ravel()
            Qs[i] += s * h
            batch.append(Qs.reshape(L, L))
    with torch.no_grad():
        E = m.energy(torch.from_numpy(np.stack(batch))).numpy().reshape(len(sites), 2)
    fd = -(E[:, 0] - E[:, 1]) / (2 * h)
    np.testing.assert_allclose(F[sites], fd, rtol=1e-6, atol=1e-7)


def test_energy_model_gradient_is_finite_on_symmetric_configurations():
    """Uniform, checkerboard and stripes: zero-reference branch points of the descriptor."""
    m = _toy_model("energy")
    L = 8
    lat = Lattice(L)
    x = np.indices((L, L))[0]
    for Q in (np.zeros((L, L)), 0.7 * np.ones((L, L)), 0.9 * lat.sign,
              np.where(x % 4 < 2, 1.0, -1.0)):
        F = m(torch.from_numpy(Q)).detach().numpy()
        assert np.isfinite(F).all()


def test_energy_variant_through_the_forcefield(tmp_path, rng):
    _, path = _save_toy(tmp_path, kind="energy", name="bp")
    ff = load_model(path, dtype=torch.float64)
    Q = rng.normal(0.0, 0.6, (2, 6, 6))
    F = ff.forces(Q)
    E = ff.energy(Q)
    assert E.shape == (2,)
    h = 1e-6
    Qp, Qm = Q.copy(), Q.copy()
    Qp[1, 2, 3] += h
    Qm[1, 2, 3] -= h
    fd = -(ff.energy(Qp)[1] - ff.energy(Qm)[1]) / (2 * h)
    assert abs(F[1, 2, 3] - fd) < 1e-6 * max(1.0, abs(fd))
    with pytest.raises(ModelError, match="direct-force"):
        load_model(_save_toy(tmp_path, name="direct")[1]).energy(Q)


# ------------------------------------------------------------------ force field


def test_density_follows_from_the_force_law(tmp_path, rng):
    _, path = _save_toy(tmp_path)
    ff = load_model(path, dtype=torch.float64)
    Q = rng.normal(0.0, 0.7, (3, 8, 8))
    F, n = ff.forces(Q), ff.density(Q)
    p = ff.params
    np.testing.assert_allclose(n, (F - ed.elastic_force(Q, p)) / p.g + 0.5, atol=1e-12)
    Ft, nt = ff.evaluate(torch.from_numpy(Q))
    assert Ft.dtype == torch.float64 and nt.dtype == torch.float64
    np.testing.assert_allclose(nt.numpy(), n, atol=1e-12)


def test_density_with_g_zero_raises(tmp_path, rng):
    params = HolsteinParams(g=0.0).to_dict()
    _, path = _save_toy(tmp_path, params=params)
    ff = load_model(path)
    with pytest.raises(ModelError, match="g = 0"):
        ff.density(rng.normal(size=(4, 4)))
    _, n = ff.evaluate(torch.zeros(4, 4, dtype=torch.float64))
    assert torch.all(n == F_FILL)


@pytest.mark.parametrize("shape", [(4, 4), (6, 6), (12, 12), (3, 8, 8), (2, 3, 10, 10)])
def test_any_even_L_and_batched_shapes(tmp_path, shape, rng):
    _, path = _save_toy(tmp_path)
    ff = load_model(path)
    Q = rng.normal(0.0, 0.7, shape)
    F, n = ff.forces(Q), ff.density(Q)
    assert F.shape == shape and n.shape == shape and F.dtype == np.float64
    flat = Q.reshape(-1, *shape[-2:])
    single = np.stack([ff.forces(q) for q in flat]).reshape(shape)
    np.testing.assert_allclose(F, single, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((5, 5)), np.zeros((2, 2)), np.zeros((4, 6)),
                                 np.full((4, 4), np.nan)])
def test_bad_configurations_raise(tmp_path, bad):
    ff = load_model(_save_toy(tmp_path)[1])
    with pytest.raises(ValueError):
        ff.forces(bad)


def test_float32_and_float64_inference_agree(trained, rng):
    f32 = load_model(trained["path"])
    f64 = load_model(trained["path"], dtype=torch.float64)
    Q = rng.normal(0.0, 1.0, (8, 12, 12))
    F32, F64 = f32.forces(Q), f64.forces(Q)
    diff = float(np.abs(F32 - F64).max())
    scale = float(np.abs(F64).max())
    print(f"\nfloat32 vs float64 max |dF| = {diff:.3g} (max |F| = {scale:.3g})")
    assert diff < 1e-4 * max(scale, 1.0)


def test_forcefield_drives_langevin_dynamics(trained):
    from cdwdata import dynamics
    from cdwdata.forcefields import ForceField

    ff = load_model(trained["path"])
    assert isinstance(ff, MLForceField) and isinstance(ff, ForceField)
    p = ff.params
    keys = [11, 12]
    Q, v = dynamics.hot_start(keys, L_TRAIN, p)
    state = dynamics.init_state(ff, Q, v, keys)
    state = dynamics.run(state, ff, 0.1, p, 5)
    assert state.step == 5 and state.Q.dtype == torch.float64
    for t in (state.Q, state.v, state.F, state.n):
        assert t.shape == (2, L_TRAIN, L_TRAIN) and torch.isfinite(t).all()
    assert ff.attrs()["model"] == ff.name and len(ff.attrs()["model_card_sha256"]) == 64


@pytest.mark.requires_cuda
def test_cuda_matches_cpu(trained, rng):
    Q = rng.normal(0.0, 1.0, (2, 8, 8))
    cpu = load_model(trained["path"], dtype=torch.float64).forces(Q)
    gpu = load_model(trained["path"], device="cuda", dtype=torch.float64)
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.forces(Q), cpu, atol=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_raises(tmp_path):
    with pytest.raises(ModelError, match="CUDA"):
        load_model(_save_toy(tmp_path)[1], device="cuda")


# ------------------------------------------------------------------ model files


def test_save_load_round_trip_is_exact(tmp_path, rng):
    m, path = _save_toy(tmp_path)
    Q = rng.normal(0.0, 0.7, (2, 8, 8))
    with torch.no_grad():
        ref = m(torch.as_tensor(Q, dtype=torch.float32)).double().numpy()
    ff = load_model(str(path) + ".safetensors")  # with a suffix works too
    np.testing.assert_array_equal(ff.forces(Q), ref)
    card = json.loads((tmp_path / "toy.json").read_text())
    assert card["weights_sha256"] == modelfile.sha256_file(tmp_path / "toy.safetensors")
    assert card["architecture"]["layers"] == [45, 512, 256, 64, 16, 1]


def test_params_or_filling_mismatch_raises(tmp_path):
    _, path = _save_toy(tmp_path)
    load_model(path, params=HolsteinParams(), f=F_FILL)  # matching: fine
    with pytest.raises(ModelError, match=r"g=2\.0 \(model: 3\.5\)"):
        load_model(path, params=HolsteinParams(g=2.0))
    with pytest.raises(ModelError, match=r"f=0\.5, asked for f=0\.4"):
        load_model(path, f=0.4)


def test_unknown_name_lists_available_models():
    with pytest.raises(ModelError, match="available") as err:
        load_model("holstein-f0.99-no-such-model")
    for name in list_models():
        assert name in str(err.value)


def test_truncated_weights_raise(tmp_path):
    _, path = _save_toy(tmp_path)
    w = tmp_path / "toy.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ModelError, match="toy.safetensors"):
        load_model(path)
    # even when the card's hash is made to match, a truncated file does not parse
    card = json.loads((tmp_path / "toy.json").read_text())
    card["weights_sha256"] = modelfile.sha256_file(w)
    (tmp_path / "toy.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a valid safetensors"):
        load_model(path)


class _Evil:
    """Unpickling this creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_never_unpickled(tmp_path, monkeypatch):
    _, path = _save_toy(tmp_path)
    marker = tmp_path / "pwned"
    w = tmp_path / "toy.safetensors"
    w.write_bytes(pickle.dumps({"mlp.0.weight": _Evil(str(marker))}))
    card = json.loads((tmp_path / "toy.json").read_text())
    card["weights_sha256"] = modelfile.sha256_file(w)
    (tmp_path / "toy.json").write_text(json.dumps(card))

    def refuse(*a, **k):
        raise AssertionError("the loader tried to unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ModelError):
        load_model(path)
    assert not marker.exists()


def test_card_that_does_not_match_weights_raises(tmp_path):
    _, path = _save_toy(tmp_path)
    cpath = tmp_path / "toy.json"
    card = json.loads(cpath.read_text())
    bad = dict(card, architecture=dict(card["architecture"], layers=[45, 256, 256, 64, 16, 1]))
    cpath.write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="architecture|shapes"):
        load_model(path)
    shapes = dict(card["weight_shapes"], **{"mlp.0.weight": [256, 45]})
    cpath.write_text(json.dumps(dict(card, weight_shapes=shapes)))
    with pytest.raises(ModelError, match="shapes"):
        load_model(path)
    cpath.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(path)


def test_missing_files_raise(tmp_path):
    _, path = _save_toy(tmp_path)
    (tmp_path / "toy.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(path)
    _, path = _save_toy(tmp_path, name="other")
    (tmp_path / "other.json").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(path)


def test_save_refuses_to_overwrite(tmp_path):
    m, path = _save_toy(tmp_path)
    with pytest.raises(ModelError, match="already exists"):
        modelfile.save(m, path, {"params": {}, "filling": F_FILL})


# ------------------------------------------------------------------ training


def test_training_writes_a_complete_card(trained, trainset):
    from cdwdata.ml.data import load_trainset

    card = trained["card"]
    td = load_trainset(trainset, F_FILL)
    assert card["trainset"]["sha256"] == modelfile.dataset_hash(td.Q, td.F)
    assert card["filling"] == F_FILL and card["electron_T"] == T_EL
    assert HolsteinParams.from_dict(card["params"]).matches(HolsteinParams())
    assert card["descriptor"] == {"module": "cdwdata.descriptor", "r_cut": 13 ** 0.5,
                                  "n_features": 45}
    split = card["split"]
    assert split["test_by"] == "run" and split["val_by"] == "run"
    test = set(split["test"])
    assert test and test <= set(range(16, 24))  # quench snapshots only
    assert not test & set(split["train"]) and not set(split["val"]) & set(split["train"])
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(24))
    tr = card["training"]
    assert tr["batch_size"] == 128 and tr["seed"] == 3 and tr["lr"] == 1e-3
    assert len(tr["history"]) == tr["epochs_run"] and tr["sites_per_s"] > 0
    for key in ("val", "test"):
        assert {"rmse", "mae", "max_abs"} <= set(card["metrics"][key])
    assert card["code_version"] and card["created"]


def test_training_loss_decreases(trained):
    hist = trained["card"]["training"]["history"]
    assert hist[-1]["train_rmse"] < hist[0]["train_rmse"]
    std = trained["card"]["normalisation"]["force_std"]
    assert trained["metrics"]["train"]["rmse"] < std  # better than predicting the mean


def test_training_is_deterministic_with_a_seed(trainset, tmp_path):
    from cdwdata.ml.train import train

    kw = dict(epochs=1, batch_size=256, progress=False)
    a = train(trainset, F_FILL, tmp_path / "a", seed=5, **kw)
    b = train(trainset, F_FILL, tmp_path / "b", seed=5, **kw)
    c = train(trainset, F_FILL, tmp_path / "c", seed=6, **kw)
    wa, wb = modelfile.read_weights(tmp_path / "a"), modelfile.read_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["card"]["weights_sha256"] == b["card"]["weights_sha256"]  # file bytes too
    assert a["card"]["split"] == b["card"]["split"]
    assert a["card"]["weights_sha256"] != c["card"]["weights_sha256"]


def test_energy_training_runs(trainset, tmp_path):
    from cdwdata.ml.train import train

    res = train(trainset, F_FILL, tmp_path / "bp", kind="energy", epochs=1, batch_size=256,
                progress=False)
    assert res["card"]["kind"] == "energy" and np.isfinite(res["metrics"]["val"]["rmse"])
    ff = load_model(tmp_path / "bp")
    assert ff.kind == "energy" and np.isfinite(ff.forces(np.zeros((8, 8)))).all()


@settings(max_examples=60, deadline=None)
@given(n_random=st.integers(0, 12), runs=st.integers(0, 9), per_run=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_split_is_a_partition_and_whole_runs_stay_together(n_random, runs, per_run, seed):
    from cdwdata.ml.data import split_samples

    source = np.array(["random"] * n_random + ["quench"] * (runs * per_run))
    run = np.array(list(range(n_random)) + [r for r in range(runs) for _ in range(per_run)])
    if len(source) < 2:
        return
    try:
        sp = split_samples(source, run, seed)
    except ValueError:  # nothing left to train on: only for tiny sets
        assert len(source) <= 3
        return
    parts = [set(sp[k].tolist()) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(source) and set.union(*parts) == set(range(len(source)))
    qruns = {k: set(run[sp[k]][source[sp[k]] == "quench"].tolist()) for k in sp if
             k in ("train", "val", "test")}
    if sp["test_by"] == "run":
        assert not qruns["test"] & (qruns["train"] | qruns["val"])
    if sp["val_by"] == "run":
        assert not qruns["val"] & qruns["train"]
        assert len(qruns["val"]) >= 1 and len(qruns["train"]) >= 1


# ------------------------------------------------------------------ electronic target


@pytest.mark.parametrize("kind", ["force", "energy"])
def test_electronic_target_adds_the_exact_elastic_force(kind, rng):
    """With the network's last layer zeroed, the model force is the exact elastic force plus
    a constant (the output mean): the elastic part is analytic, not learned."""
    params = HolsteinParams(k=1.3, kappa=0.25)
    torch.manual_seed(0)
    m = ForceModel(kind=kind, target="electronic", params=params).double().eval()
    m.output_norm.set(torch.tensor(0.4, dtype=torch.float64), torch.tensor(2.0))
    last = [x for x in m.mlp if isinstance(x, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    Q = rng.normal(size=(2, 8, 8))
    F = m(torch.as_tensor(Q)).detach().numpy()
    np.testing.assert_allclose(F, ed.elastic_force(Q, params) + 0.4, atol=1e-12)


def test_elastic_site_energy_is_minus_the_elastic_force_potential(rng):
    m = ForceModel(target="electronic", params=HolsteinParams(kappa=0.22)).double()
    Q = torch.as_tensor(rng.normal(size=(6, 6)), dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(m.elastic_site_energy(Q).sum(), Q)
    np.testing.assert_allclose(-grad.numpy(), m.elastic_force(Q).detach().numpy(), atol=1e-12)


def test_electronic_target_trains_saves_and_scores_the_total_force(trainset, tmp_path):
    from cdwdata.ml.data import load_trainset
    from cdwdata.ml.train import train

    res = train(trainset, F_FILL, tmp_path / "el", target="electronic", epochs=2,
                batch_size=128, seed=1, progress=False)
    card = res["card"]
    assert card["architecture"]["target"] == "electronic"
    assert card["training"]["target"] == "electronic"
    ff = load_model(tmp_path / "el")
    td = load_trainset(trainset, F_FILL)
    pos = np.flatnonzero(np.isin(td.sample, card["split"]["test"]))
    F_ml = ff.forces(td.Q[pos])
    rmse = float(np.sqrt(np.mean((F_ml - td.F[pos]) ** 2)))  # scored on the TOTAL force
    assert rmse == pytest.approx(card["metrics"]["test"]["rmse"], rel=1e-4, abs=1e-5)
    # the density recovered from the force law is the network's electronic output
    n = ff.density(td.Q[pos])
    np.testing.assert_allclose((n - 0.5) * td.params.g,
                               F_ml - ed.elastic_force(td.Q[pos], td.params), atol=1e-4)


def test_electronic_model_with_other_elastic_constants_refuses_to_load(tmp_path):
    m = ForceModel(target="electronic", params=HolsteinParams(k=2.0)).float().eval()
    modelfile.save(m, tmp_path / "el", {"params": HolsteinParams().to_dict(),
                                        "filling": F_FILL, "electron_T": T_EL})
    with pytest.raises(ModelError, match="elastic constants"):
        load_model(tmp_path / "el")


def test_unknown_target_raises():
    with pytest.raises(ParameterError, match="target"):
        ForceModel(target="charge")


def test_training_for_a_missing_filling_raises(trainset, tmp_path):
    from cdwdata.ml.train import train

    with pytest.raises(ValueError, match=r"f=0\.3"):
        train(trainset, 0.3, tmp_path / "x", epochs=1, progress=False)


# ------------------------------------------------------------------ validation + CLI


def test_validate_uses_the_cards_test_split(trained, trainset, tmp_path):
    from cdwdata.ml.validate import validate

    rep = validate(trained["path"], trainset, out_dir=tmp_path)
    assert rep["selection"] == "test split of the model card"
    assert rep["samples"] == trained["card"]["split"]["test"]
    np.testing.assert_allclose(rep["force"]["rmse"], trained["metrics"]["test"]["rmse"],
                               rtol=1e-5)
    # per-step RMSEs recombine into the total (equal sites per snapshot)
    by = rep["force_by_step"]
    assert [b["step"] for b in by] == sorted({b["step"] for b in by})
    td = __import__("cdwdata.ml.data", fromlist=["x"]).load_trainset(trainset, F_FILL)
    counts = [int(np.sum(np.isin(td.sample, rep["samples"]) & (td.step == b["step"])))
              for b in by]
    total = np.sqrt(sum(c * b["rmse"] ** 2 for c, b in zip(counts, by, strict=True)) / sum(counts))
    np.testing.assert_allclose(total, rep["force"]["rmse"], rtol=1e-9)
    assert rep["force_late"]["n_sites"] > 0 and rep["late_steps"][1] == by[-1]["step"]


def _memory_store(Q, params: HolsteinParams, T: float = T_EL):
    """In-memory ED 'store' (xarray) of quench snapshots Q (S, L, L)."""
    import xarray as xr

    res = ed.solve(Q, T, F_FILL, params)
    dims = ("f", "sample", "x", "y")
    S = len(Q)
    return xr.Dataset({"Q": (dims, Q[None]), "F": (dims, res.F[None]), "n": (dims, res.n[None])},
                      coords={"f": [F_FILL], "sample": np.arange(S),
                              "source": ("sample", ["quench"] * S)},
                      attrs=dict(params.to_dict(), electron_T=T))


def test_validate_on_a_separate_store(trained, tmp_path, rng):
    from cdwdata.ml.validate import validate

    Q = rng.normal(0.0, 0.7, (3, 10, 10))
    rep = validate(trained["path"], _memory_store(Q, HolsteinParams()), out_dir=tmp_path,
                   plots=False)
    assert rep["selection"] == "all quench snapshots of the store"
    assert rep["n_snapshots"] == 3 and rep["force"]["n_sites"] == 300
    assert rep["density"]["n_sites"] == 300
    with pytest.raises(ModelError, match="trained for"):
        validate(trained["path"], _memory_store(Q, HolsteinParams(g=3.0)), out_dir=tmp_path)
    with pytest.raises(ModelError, match="T=0.1"):
        validate(trained["path"], _memory_store(Q, HolsteinParams(), T=0.3), out_dir=tmp_path)


def test_bare_output_name_goes_to_the_shipped_models_folder(tmp_path):
    from cdwdata.ml.forcefield import MODELS_DIR
    from cdwdata.ml.train import output_path

    assert output_path("holstein-f0.5") == MODELS_DIR / "holstein-f0.5"
    assert output_path(tmp_path / "m.json") == tmp_path / "m"
    assert output_path("m.safetensors") == modelfile.stem("m.safetensors")


def test_loading_does_not_touch_the_global_rng(tmp_path):
    _, path = _save_toy(tmp_path)
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    load_model(path)
    assert torch.equal(torch.rand(3), a)


def test_cli_train_and_validate_end_to_end(trainset, tmp_path):
    from cdwdata.cli import main

    out = tmp_path / "cli-model"
    common = ["--data", str(trainset), "--f", "0.5", "--epochs", "1", "--batch-size", "512",
              "--seed", "1", "--no-progress", "--threads", "1"]
    assert main(["train", *common, "--out", str(out)]) == 0
    assert (tmp_path / "cli-model.safetensors").exists() and (tmp_path / "cli-model.json").exists()
    assert main(["train", *common, "--out", str(out)]) == 2  # refuses to overwrite
    assert main(["train", *common, "--out", str(tmp_path / "cli-bp"), "--kind", "energy"]) == 0
    rep_dir = tmp_path / "report"
    assert main(["validate", str(out), "--data", str(trainset), "--out", str(rep_dir),
                 "--compare", str(tmp_path / "cli-bp")]) == 0
    for name in ("cli-model-parity.png", "cli-model-error-hist.png",
                 "cli-model-validation.json"):
        assert (rep_dir / name).stat().st_size > 0
    assert (rep_dir / "cli-model-parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((rep_dir / "cli-model-validation.json").read_text())
    assert rep["kind"] == "force" and rep["compare"]["kind"] == "energy"
    assert rep["compare"]["same_trainset"] and rep["compare"]["same_test_split"]
    for r in (rep, rep["compare"]):
        assert {"rmse", "mae", "max_abs", "std"} <= set(r["force"])
    # default output folder: next to the model card
    assert main(["validate", str(out), "--data", str(trainset), "--no-plots"]) == 0
    assert (tmp_path / "cli-model-validation.json").exists()


def test_import_cdwdata_ml_is_light():
    code = "import sys, cdwdata.ml; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ several stores


def _memory_trainset(rng, params=None, runs=3, per_run=2, n_random=2, L=L_TRAIN):
    """In-memory training set: ``n_random`` random + ``runs`` x ``per_run`` quench snapshots."""
    import xarray as xr

    params = params or HolsteinParams()
    S = n_random + runs * per_run
    Q = rng.normal(0.0, 0.8, (S, L, L))
    res = ed.solve(Q, T_EL, F_FILL, params)
    dims = ("f", "sample", "x", "y")
    return xr.Dataset(
        {"Q": (dims, Q[None]), "F": (dims, res.F[None]), "n": (dims, res.n[None])},
        coords={"f": [F_FILL], "sample": np.arange(S),
                "source": ("sample", ["random"] * n_random + ["quench"] * (runs * per_run)),
                "run": ("sample", list(range(n_random))
                        + [r for r in range(runs) for _ in range(per_run)]),
                "step": ("sample", [-1] * n_random + [10 * (i + 1) for _ in range(runs)
                                                      for i in range(per_run)])},
        attrs=dict(params.to_dict(), electron_T=T_EL, quench_forcefield="holstein-f{f}"))


def test_two_stores_are_split_each_as_if_alone(trainset, rng):
    from cdwdata.ml.data import load_trainset, split_parts, split_samples

    other = _memory_trainset(rng)
    td = load_trainset([trainset, other], F_FILL)
    one = load_trainset(trainset, F_FILL)
    assert len(td.Q) == len(one.Q) + 8 and len(np.unique(td.sample)) == len(td.sample)
    q = td.source == "quench"
    assert not set(td.run[q & (td.part == 0)]) & set(td.run[q & (td.part == 1)])
    assert [p["quench_forcefield"] for p in td.parts] == ["ed", "holstein-f{f}"]
    sp, sp1 = split_parts(td, seed=3), split_samples(one.source, one.run, 3)
    for key in ("train", "val", "test"):
        mine = sp[key][td.part[sp[key]] == 0]
        np.testing.assert_array_equal(td.sample[mine], one.sample[sp1[key]])
        assert (td.part[sp[key]] == 1).any()  # the second store is split too
    with pytest.raises(InputError, match="made with"):
        load_trainset([trainset, _memory_trainset(rng, HolsteinParams(g=3.0))], F_FILL)


def test_train_and_validate_on_two_stores(trainset, tmp_path, rng):
    from cdwdata.ml.train import train
    from cdwdata.ml.validate import validate

    data = [trainset, _memory_trainset(rng)]
    res = train(data, F_FILL, tmp_path / "two", epochs=1, batch_size=256, seed=3,
                progress=False)
    parts = res["card"]["trainset"]["parts"]
    assert len(parts) == 2 and sum(p["n_samples"] for p in parts) == \
        res["card"]["trainset"]["n_samples"]
    rep = validate(res["path"], data, out_dir=tmp_path, plots=False)
    assert rep["selection"] == "test split of the model card"
    np.testing.assert_allclose(rep["force"]["rmse"], res["metrics"]["test"]["rmse"], rtol=1e-5)
    by = rep["by_store"]
    assert sum(b["n_snapshots"] for b in by) == rep["n_snapshots"]
    sites = [b["force"]["n_sites"] for b in by]
    total = np.sqrt(sum(n * b["force"]["rmse"] ** 2 for n, b in zip(sites, by, strict=True))
                    / sum(sites))
    np.testing.assert_allclose(total, rep["force"]["rmse"], rtol=1e-9)


# ------------------------------------------------------------------ error statistics


def test_sigma_fit_is_the_gaussian_core_width_not_moved_by_tails():
    from cdwdata.ml.metrics import errors

    rng = np.random.default_rng(5)
    d = rng.normal(0.003, 0.01, 200_000)
    clean = errors(d, np.zeros_like(d))
    np.testing.assert_allclose(clean["sigma_fit"], d.std(), rtol=0.02)
    assert clean["tail_fraction"] < 1e-4
    d[:1000] = rng.choice([-3.0, 3.0], 1000)  # 0.5% of sites off by ~g: the RMSE explodes
    tailed = errors(d, np.zeros_like(d))
    np.testing.assert_allclose(tailed["sigma_fit"], 0.01, rtol=0.03)
    np.testing.assert_allclose(tailed["tail_fraction"], 0.005, rtol=0.02)
    assert tailed["rmse"] > 15 * tailed["sigma_fit"]


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-4, 1e3), seed=st.integers(0, 2**16))
def test_sigma_fit_scales_with_the_errors(scale, seed):
    from cdwdata.ml.metrics import sigma_fit

    d = np.random.default_rng(seed).standard_t(3, 5000)  # heavy tails
    m1, s1 = sigma_fit(d)
    m2, s2 = sigma_fit(scale * d)
    # equal up to the least-squares fit's own tolerance
    np.testing.assert_allclose(s2, scale * s1, rtol=1e-4)
    np.testing.assert_allclose(m2, scale * m1, rtol=1e-4, atol=1e-4 * scale * s1)


def test_sigma_fit_of_few_or_equal_values_is_the_plain_std():
    from cdwdata.ml.metrics import sigma_fit

    assert sigma_fit(np.array([1.0, 2.0, 4.0])) == (7 / 3, np.std([1.0, 2.0, 4.0]))
    assert sigma_fit(np.r_[np.zeros(30), 1.0])[1] == np.std(np.r_[np.zeros(30), 1.0])


def test_huber_loss_option_is_recorded_and_selects_on_mae(trainset, tmp_path):
    from cdwdata.ml.train import train

    res = train(trainset, F_FILL, tmp_path / "hub", epochs=3, batch_size=128, seed=3,
                progress=False, loss="huber", huber_delta=0.1)
    t = res["card"]["training"]
    assert (t["loss_function"], t["huber_delta"], t["selected_on"]) == (
        "huber", 0.1, "validation MAE")
    assert t["loss"].startswith("Huber")
    maes = [h["val_mae"] for h in t["history"]]
    assert t["best_epoch"] == 1 + int(np.argmin(maes))
    for bad in ({"loss": "l1"}, {"loss": "huber", "huber_delta": 0.0}, {"schedule": "step"},
                {"kind": "charge"}, {"target": "charge"}, {"epochs": 0}):
        with pytest.raises(ParameterError):  # one kind of mistake, one error class
            train(trainset, F_FILL, tmp_path / "bad", **{"epochs": 1, "progress": False, **bad})
