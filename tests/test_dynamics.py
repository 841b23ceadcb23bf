"""Langevin dynamics: thermostat physics, integrator accuracy, determinism, resume.

Most tests drive a tiny harmonic force field (the g = 0 Holstein lattice, where the electrons
decouple) because it is exact and fast; a few short runs use the real ED force field.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdwdata import HolsteinParams, ed, noise
from cdwdata import dynamics as dyn
from cdwdata.forcefields import EDForceField, ForceField


class HarmonicForceField(ForceField):
    """The g = 0 lattice: ``F = -k Q - kappa sum_nn Q`` and uniform density ``n = f``.

    Identical (to rounding) to ``EDForceField`` with ``g = 0`` (checked below), without the
    cost of a diagonalisation per step.
    """

    name = "harmonic"

    def __init__(self, params: HolsteinParams, f: float = 0.5) -> None:
        self.params = params
        self.f = f

    def evaluate(self, Q):
        return ed.elastic_force(Q, self.params), torch.full_like(Q, self.f)


def _keys(n: int, seed: int = 11, T: float = 0.3, f: float = 0.5) -> list[int]:
    return [noise.run_key(seed, T, f, r) for r in range(n)]


def _start(ff, keys, L, params, T_init=dyn.HOT_START_T):
    Q, v = dyn.hot_start(keys, L, params, T_init=T_init)
    return dyn.init_state(ff, Q, v, keys)


def _harmonic_potential(Q: np.ndarray, p: HolsteinParams) -> np.ndarray:
    """U = (k/2) sum Q^2 + kappa sum_<ij> Q_i Q_j = -(1/2) Q . F_elastic, per run."""
    return -0.5 * (Q * ed.elastic_force(Q, p)).sum((-2, -1))


def _kinetic(state, p: HolsteinParams) -> np.ndarray:
    return dyn.kinetic_energy(state, p).numpy()


def _same_state(a, b) -> bool:
    return (
        all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("Q", "v", "F", "n"))
        and a.step == b.step and a.keys == b.keys
    )


def test_harmonic_toy_is_the_g0_limit_of_ed(rng):
    p = HolsteinParams(g=0.0)
    Q = torch.from_numpy(rng.normal(size=(3, 6, 6)))
    F_ed, n_ed = EDForceField(0.1, 0.4, p).evaluate(Q)
    F_h, n_h = HarmonicForceField(p, 0.4).evaluate(Q)
    assert torch.allclose(F_ed, F_h, atol=1e-12)
    assert torch.allclose(n_ed, n_h, atol=1e-12)


# ------------------------------------------------------------------ thermal equilibrium


def _exact_harmonic_correlations(L: int, T: float, p: HolsteinParams) -> tuple[float, float]:
    """Exact <Q_i^2> and <Q_i Q_{i+x}> of the harmonic lattice in equilibrium at T.

    U = (1/2) Q^T K Q with K = k 1 + kappa A, A the nearest-neighbour adjacency matrix of the
    periodic L x L lattice.  The Boltzmann weight exp(-U/T) is Gaussian with covariance
    <Q_i Q_j> = T (K^-1)_ij.  Plane waves diagonalise A with eigenvalues
    lambda_q = 2 (cos qx + cos qy), q = 2 pi (m1, m2) / L, so
    <Q_i Q_{i+r}> = (1/N) sum_q T cos(q.r) / (k + kappa lambda_q);  r = 0 gives <Q^2>.
    (Momenta are independent: <m v_i^2> = T, equipartition.)
    """
    q = 2 * np.pi * np.arange(L) / L
    qx, qy = np.meshgrid(q, q, indexing="ij")
    denom = p.k + p.kappa * 2 * (np.cos(qx) + np.cos(qy))
    return float(np.mean(T / denom)), float(np.mean(T * np.cos(qx) / denom))


def _mean_and_error(series: np.ndarray) -> tuple[float, float]:
    """Mean of (n_steps, R) samples and an honest standard error.

    Two estimates, the larger is returned: (a) scatter of the R independent per-run time
    averages; (b) per-run integrated autocorrelation time (Sokal window) pooled over runs.
    """
    n, R = series.shape
    per_run = series.mean(0)
    err_scatter = per_run.std(ddof=1) / math.sqrt(R)
    x = series - per_run
    var = (x * x).mean()
    tau = 1.0
    for lag in range(1, n // 4):
        rho = (x[:-lag] * x[lag:]).mean() / var
        tau += 2 * rho
        if lag >= 5 * tau:
            break
    err_autocorr = math.sqrt(var * tau / (n * R))
    return float(per_run.mean()), max(err_scatter, err_autocorr)


@pytest.mark.slow
def test_langevin_samples_equipartition_and_exact_harmonic_fluctuations():
    """R = 12 independent runs of a 6 x 6 harmonic lattice at T = 0.3.

    gamma = 1 with m = 1 damps every normal mode at rate gamma/2 = 0.5 (omega_q^2 >= 0.28
    > gamma^2/4, all underdamped), so correlations die within ~2 time units (40 steps) and
    400 burn-in steps forget the hot start (e^-10 in amplitude).
    """
    p = HolsteinParams(g=0.0, mass=1.0, k=1.0, kappa=0.18, gamma=1.0, dt=0.05)
    T, L, R = 0.3, 6, 12
    ff = HarmonicForceField(p)
    state = _start(ff, _keys(R, T=T), L, p)
    state = dyn.run(state, ff, T, p, 400)

    mv2, q2, qq = [], [], []

    def measure(s):
        mv2.append((p.mass * s.v * s.v).mean((-2, -1)))
        q2.append((s.Q * s.Q).mean((-2, -1)))
        qq.append((s.Q * torch.roll(s.Q, 1, -2)).mean((-2, -1)))

    dyn.run(state, ff, T, p, 5000, callback=measure)
    exact_q2, exact_qq = _exact_harmonic_correlations(L, T, p)
    checks = {
        "<m v^2>": (torch.stack(mv2).numpy(), T),
        "<Q^2>": (torch.stack(q2).numpy(), exact_q2),
        "<Q_i Q_i+x>": (torch.stack(qq).numpy(), exact_qq),
    }
    report = {}
    for name, (series, exact) in checks.items():
        mean, err = _mean_and_error(series)
        report[name] = (mean / exact, err / abs(exact))
    for name, (ratio, rel_err) in report.items():
        assert rel_err < 0.05, f"{name}: error bar {rel_err:.3f} too large to test anything"
        assert abs(ratio - 1) < 4 * rel_err, f"{name}: ratio {ratio:.4f} +- {rel_err:.4f}"
    # Equal-time velocities of neighbours are uncorrelated, positions are anti-correlated.
    assert exact_qq < 0


def test_thermostat_keeps_maxwell_distribution_stationary():
    """One exact OU update maps N(0, T/m) to N(0, T/m) and v = 0 to N(0, (1 - a^2) T/m)."""
    T, gamma, dt, m = 0.7, 0.4, 0.1, 2.0
    keys = _keys(40)
    xi0 = noise.normal(keys, 99, 0, (25, 25))
    xi1 = noise.normal(keys, 99, 1, (25, 25))
    v = math.sqrt(T / m) * xi0
    v1 = dyn.thermostat(v, xi1, T, gamma, dt, m)
    n = v1.numel()
    var = float((v1 * v1).mean())
    assert abs(var / (T / m) - 1) < 5 * math.sqrt(2 / n)
    a = math.exp(-gamma * dt)
    # Correlation with the old velocity is a.
    corr = float((v1 * v).mean() / (v * v).mean())
    assert abs(corr - a) < 5 / math.sqrt(n)
    v0 = dyn.thermostat(torch.zeros_like(xi1), xi1, T, gamma, dt, m)
    assert torch.allclose(v0, math.sqrt((1 - a * a) * T / m) * xi1, rtol=1e-14, atol=0)


def test_sub_steps_follow_the_contract_formulas(rng):
    Q, v, F, F2, xi = (torch.from_numpy(rng.normal(size=(2, 4, 4))) for _ in range(5))
    dt, m, T, gamma = 0.05, 5.0, 0.2, 0.3
    assert torch.allclose(dyn.drift(Q, v, F, dt, m), Q + v * dt + F / (2 * m) * dt**2,
                          rtol=1e-15, atol=1e-15)
    assert torch.allclose(dyn.kick(v, F, F2, dt, m), v + (F + F2) * dt / (2 * m),
                          rtol=1e-15, atol=1e-15)
    a = math.exp(-gamma * dt)
    assert torch.allclose(dyn.thermostat(v, xi, T, gamma, dt, m),
                          a * v + math.sqrt((1 - a * a) * T / m) * xi, rtol=1e-15, atol=1e-15)
    assert torch.equal(dyn.thermostat(v, xi, T, 0.0, dt, m), v)  # gamma = 0: no bath
    assert torch.allclose(dyn.thermostat(v, xi, 0.0, gamma, dt, m), a * v, rtol=1e-15)


@pytest.mark.parametrize(("T", "gamma"), [(0.3, 0.5), (0.0, 0.5), (0.3, 0.0), (0.0, 0.0)])
def test_one_step_is_velocity_verlet_then_ornstein_uhlenbeck(T, gamma, rng):
    """Compare dynamics.step with the update written out in docs/conventions.md."""
    p = HolsteinParams(g=0.0, gamma=gamma, mass=2.0, dt=0.1)
    ff = HarmonicForceField(p)
    keys = _keys(3)
    Q = torch.from_numpy(rng.normal(size=(3, 6, 6)))
    v = torch.from_numpy(rng.normal(size=(3, 6, 6)))
    state = dyn.init_state(ff, Q, v, keys, step=17)
    new = dyn.step(state, ff, T, p)

    dt, m = p.dt, p.mass
    F = ed.elastic_force(Q, p)
    Q1 = Q + v * dt + F / (2 * m) * dt**2
    F1 = ed.elastic_force(Q1, p)
    v1 = v + (F + F1) * dt / (2 * m)
    a = math.exp(-gamma * dt)
    xi = noise.normal(keys, noise.THERMAL, 17, (6, 6))  # noise of step s is (THERMAL, s)
    v1 = a * v1 + math.sqrt((1 - a * a) * T / m) * xi
    assert torch.allclose(new.Q, Q1, rtol=1e-14, atol=1e-14)
    assert torch.allclose(new.F, F1, rtol=1e-14, atol=1e-14)
    assert torch.allclose(new.v, v1, rtol=1e-14, atol=1e-14)
    assert new.step == 18 and new.keys == state.keys
    # The old state is untouched (states are values, so a resume can reuse them).
    assert torch.equal(state.Q, Q) and torch.equal(state.v, v)


# ------------------------------------------------------------------ energy conservation


def _max_energy_error(ff, p, L, duration, energy, T_init, R):
    state = _start(ff, _keys(R, seed=5, T=0.0), L, p, T_init=T_init)
    energies = [energy(state)]
    dyn.run(state, ff, 0.0, p, round(duration / p.dt), callback=lambda s: energies.append(energy(s)))
    E = np.array(energies)
    return np.abs(E - E[0]).max(0), np.abs(E[0])


def test_velocity_verlet_energy_error_scales_as_dt_squared_harmonic():
    """gamma = 0, T = 0: velocity Verlet conserves a shadow energy, |E - E0| = O(dt^2)."""
    errors = {}
    for dt in (0.1, 0.05):
        p = HolsteinParams(g=0.0, gamma=0.0, dt=dt)

        def energy(s, p=p):
            return _kinetic(s, p) + _harmonic_potential(s.Q.numpy(), p)

        errors[dt], E0 = _max_energy_error(HarmonicForceField(p), p, 6, 40.0, energy, 1.0, 4)
        assert np.all(errors[dt] < 1e-3 * E0)  # small ...
    ratio = errors[0.1] / errors[0.05]
    assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio  # ... and shrinking as dt^2


@pytest.mark.slow
def test_velocity_verlet_energy_error_scales_as_dt_squared_ed():
    """Same with the ED force field (L = 4): E = kinetic + ED free energy A(Q) at T_e = 0.1.

    The bath is off (gamma = 0, T = 0), the electrons stay at T_e = 0.1 so that A is smooth.
    """
    errors = {}
    for dt in (0.05, 0.025):
        p = HolsteinParams(gamma=0.0, dt=dt)
        ff = EDForceField(0.1, 0.5, p)

        def energy(s, p=p):
            return _kinetic(s, p) + ed.free_energy(s.Q.numpy(), 0.1, 0.5, p)

        errors[dt], E0 = _max_energy_error(ff, p, 4, 10.0, energy, 0.3, 2)
        assert np.all(errors[dt] < 1e-3 * E0)
    ratio = errors[0.05] / errors[0.025]
    assert np.all((ratio > 3.5) & (ratio < 4.5)), ratio


def test_damping_without_noise_drains_energy():
    p = HolsteinParams(g=0.0, gamma=1.0, mass=1.0, dt=0.1)  # every mode decays at rate 0.5
    ff = HarmonicForceField(p)
    state = _start(ff, _keys(2), 6, p, T_init=1.0)

    def energy(s):
        return _kinetic(s, p) + _harmonic_potential(s.Q.numpy(), p)

    E0 = energy(state)
    end = dyn.run(state, ff, 0.0, p, 300)
    assert np.all(energy(end) < 1e-3 * E0)


def test_ed_force_field_at_zero_electron_temperature_drives_dynamics():
    p = HolsteinParams()
    ff = EDForceField(0.0, 0.5, p)
    state = _start(ff, _keys(2, T=0.0), 4, p, T_init=0.5)
    end = dyn.run(state, ff, 0.0, p, 5)
    assert end.step == 5
    assert torch.allclose(end.n.sum((-2, -1)), torch.full((2,), 8.0, dtype=torch.float64))
    assert torch.allclose(end.F, torch.from_numpy(ed.forces(end.Q.numpy(), 0.0, 0.5, p)),
                          atol=1e-12)


@pytest.mark.requires_cuda
def test_ed_force_field_at_zero_electron_temperature_on_gpu():
    p = HolsteinParams()
    ff = EDForceField(0.0, 0.5, p, device="cuda")
    Q, v = dyn.hot_start(_keys(2, T=0.0), 4, p, device="cuda", T_init=0.5)
    end = dyn.run(dyn.init_state(ff, Q, v, _keys(2, T=0.0)), ff, 0.0, p, 5)
    assert torch.allclose(end.n.sum((-2, -1)).cpu(), torch.full((2,), 8.0, dtype=torch.float64))


# ---------------------------------------------------------------- determinism & resume


def _harmonic_setup():
    p = HolsteinParams(g=0.0, gamma=0.5, dt=0.05)
    return p, HarmonicForceField(p)


def _ed_setup():
    p = HolsteinParams(gamma=0.5, dt=0.05)
    return p, EDForceField(0.1, 0.5, p)


SETUPS = {"harmonic": (_harmonic_setup, 6, 60), "ed": (_ed_setup, 4, 15)}


@pytest.mark.parametrize("which", sorted(SETUPS))
def test_same_keys_give_bit_identical_trajectories(which):
    make, L, n_steps = SETUPS[which]
    p, ff = make()
    keys = _keys(2)
    a = dyn.run(_start(ff, keys, L, p, T_init=1.0), ff, 0.3, p, n_steps)
    b = dyn.run(_start(ff, list(keys), L, p, T_init=1.0), ff, 0.3, p, n_steps)
    assert _same_state(a, b)


@pytest.mark.parametrize("which", sorted(SETUPS))
def test_in_place_steps_equal_functional_steps(which):
    """The quench loop's in-place steps (Q, v and the noise buffer reused) give the bits of
    the functional steps, and leave no alias to an earlier state behind."""
    make, L, n_steps = SETUPS[which]
    p, ff = make()
    keys = _keys(2)
    ref = dyn.run(_start(ff, keys, L, p, T_init=1.0), ff, 0.3, p, n_steps)
    state = _start(ff, keys, L, p, T_init=1.0)
    Q0 = state.Q.clone()
    first = state
    buf = torch.empty_like(state.Q)
    Q_id, v_id = state.Q.data_ptr(), state.v.data_ptr()
    for _ in range(n_steps):
        state = dyn.step(state, ff, 0.3, p, inplace=True, noise_buffer=buf)
    assert _same_state(state, ref)
    assert state.Q.data_ptr() == Q_id and state.v.data_ptr() == v_id
    assert not torch.equal(first.Q, Q0)  # the owner's tensors were updated, not copied


def test_different_keys_give_different_trajectories():
    p, ff = _harmonic_setup()
    a = dyn.run(_start(ff, _keys(1, seed=1), 6, p), ff, 0.3, p, 20)
    b = dyn.run(_start(ff, _keys(1, seed=2), 6, p), ff, 0.3, p, 20)
    assert not torch.allclose(a.Q, b.Q)
    # Same initial state, different keys: the thermal noise alone must differ.
    Q, v = dyn.hot_start(_keys(1), 6, p)
    s1 = dyn.init_state(ff, Q, v, _keys(1, seed=1))
    s2 = dyn.init_state(ff, Q, v, _keys(1, seed=2))
    v1 = dyn.step(s1, ff, 0.3, p).v
    v2 = dyn.step(s2, ff, 0.3, p).v
    assert not torch.allclose(v1, v2)
    # Within one batch the runs differ from each other too.
    two = dyn.run(_start(ff, _keys(2), 6, p), ff, 0.3, p, 5)
    assert not torch.allclose(two.Q[0], two.Q[1])


@pytest.mark.parametrize("which", [
    "harmonic",
    "ed",
])
def test_batched_runs_equal_each_run_alone(which):
    make, L, n_steps = SETUPS[which]
    p, ff = make()
    keys = _keys(2)
    both = dyn.run(_start(ff, keys, L, p, T_init=1.0), ff, 0.3, p, n_steps)
    for r, key in enumerate(keys):
        alone = dyn.run(_start(ff, [key], L, p, T_init=1.0), ff, 0.3, p, n_steps)
        for name in ("Q", "v", "F", "n"):
            assert torch.equal(getattr(both, name)[r], getattr(alone, name)[0]), (r, name)


@pytest.mark.parametrize("which", sorted(SETUPS))
def test_resume_from_intermediate_state_is_bit_identical(which):
    make, L, n_steps = SETUPS[which]
    p, ff = make()
    keys = _keys(3)
    start = _start(ff, keys, L, p, T_init=1.0)
    full = dyn.run(start, ff, 0.3, p, n_steps)
    mid = dyn.run(start, ff, 0.3, p, n_steps // 3)
    # Rebuild the state from plain data, as a checkpoint on disk would.
    rebuilt = dyn.LangevinState(
        Q=torch.from_numpy(mid.Q.numpy().copy()), v=torch.from_numpy(mid.v.numpy().copy()),
        F=torch.from_numpy(mid.F.numpy().copy()), n=torch.from_numpy(mid.n.numpy().copy()),
        step=int(mid.step), keys=tuple(int(k) for k in mid.keys),
    )
    resumed = dyn.run(rebuilt, ff, 0.3, p, n_steps - n_steps // 3)
    assert _same_state(resumed, full)
    # Re-evaluating F and n from (Q, v) instead of storing them gives the same result.
    reinit = dyn.init_state(ff, mid.Q.clone(), mid.v.clone(), mid.keys, step=mid.step)
    assert _same_state(dyn.run(reinit, ff, 0.3, p, n_steps - n_steps // 3), full)


def test_resume_with_wrong_step_counter_differs():
    """Control for the resume test: the noise really depends on the step counter."""
    p, ff = _harmonic_setup()
    start = _start(ff, _keys(1), 6, p)
    mid = dyn.run(start, ff, 0.3, p, 10)
    full = dyn.run(mid, ff, 0.3, p, 10)
    wrong = dyn.run(dyn.LangevinState(mid.Q, mid.v, mid.F, mid.n, 0, mid.keys), ff, 0.3, p, 10)
    assert not torch.equal(wrong.Q, full.Q)


def test_run_calls_back_every_nth_step_and_counts_steps():
    p, ff = _harmonic_setup()
    seen = []
    end = dyn.run(_start(ff, _keys(1), 4, p), ff, 0.3, p, 10,
                  callback=lambda s: seen.append(s.step), every=3)
    assert seen == [3, 6, 9]
    assert end.step == 10


def test_run_rejects_negative_temperature():
    p, ff = _harmonic_setup()
    with pytest.raises(ValueError, match="T"):
        dyn.run(_start(ff, _keys(1), 4, p), ff, -0.1, p, 1)


@pytest.mark.requires_cuda
def test_cuda_trajectories_are_reproducible():
    p, ff = _harmonic_setup()
    keys = _keys(2)
    out = []
    for _ in range(2):
        Q, v = dyn.hot_start(keys, 6, p, device="cuda")
        out.append(dyn.run(dyn.init_state(ff, Q, v, keys), ff, 0.3, p, 20))
    assert out[0].Q.device.type == "cuda"
    assert _same_state(*out)


# ---------------------------------------------------------------------------- hot start


def test_hot_start_has_contract_variances(params):
    """Q ~ N(0, 5/kappa), v ~ N(0, 5/m), independent, over 64 runs x 144 sites."""
    keys = _keys(64, seed=3)
    Q, v = dyn.hot_start(keys, 12, params)
    assert Q.shape == v.shape == (64, 12, 12)
    assert Q.dtype == v.dtype == torch.float64
    n = Q.numel()
    for x, var in ((Q, 5.0 / params.kappa), (v, 5.0 / params.mass)):
        x = x.numpy().ravel()
        assert abs(x.mean()) < 4.5 * math.sqrt(var / n)
        assert abs(x.var() / var - 1) < 4.5 * math.sqrt(2 / n)
        # Gaussian: fourth moment 3 var^2.
        assert abs((x**4).mean() / var**2 - 3) < 4.5 * math.sqrt(96 / n)
    corr = float((Q * v).mean() / (Q.std() * v.std()))
    assert abs(corr) < 4.5 / math.sqrt(n)
    # Different sites and runs are independent: neighbour correlation ~ 0.
    nn = float((Q * torch.roll(Q, 1, -1)).mean() / Q.var())
    assert abs(nn) < 4.5 / math.sqrt(n)


def test_hot_start_is_reproducible_and_independent_of_the_batch(params):
    keys = _keys(4)
    Q, v = dyn.hot_start(keys, 6, params)
    Q2, v2 = dyn.hot_start(keys, 6, params)
    assert torch.equal(Q, Q2) and torch.equal(v, v2)
    Q3, v3 = dyn.hot_start([keys[2]], 6, params)
    assert torch.equal(Q3[0], Q[2]) and torch.equal(v3[0], v[2])
    assert not torch.allclose(Q[0], Q[1])
    # T_init scales the standard deviations as sqrt(T_init).
    Qc, vc = dyn.hot_start(keys, 6, params, T_init=1.25)
    assert torch.allclose(Qc, Q * 0.5, rtol=1e-14) and torch.allclose(vc, v * 0.5, rtol=1e-14)
