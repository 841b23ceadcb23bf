"""Langevin dynamics of the lattice (paper eq. 2) as small named sub-steps.

One step is velocity Verlet followed by an exact Ornstein-Uhlenbeck velocity update
(docs/conventions.md, "Langevin dynamics")::

    Q  <- Q + v dt + F/(2m) dt^2                      drift
    F' <- F(Q)                                          force
    v  <- v + (F + F') dt / (2m)                        kick
    v  <- a v + sqrt((1 - a^2) T / m) xi                thermostat, a = exp(-gamma dt)

The state is an immutable :class:`LangevinState` of torch tensors batched over independent
runs ``(R, L, L)``; it carries the run keys, so the thermal noise of step s is a pure function
of (key, s) and any step can be recomputed or resumed bit for bit. The integrator never knows
which :class:`~cdwdata.forcefields.ForceField` it drives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from cdwdata import noise
from cdwdata.params import HOT_START_T, HolsteinParams, check_temperature


@dataclass(frozen=True)
class LangevinState:
    """Positions, velocities, forces and densities of R runs at one step.

    Attributes
    ----------
    Q, v, F, n : torch.Tensor, (R, L, L)
    step : int
        Number of steps taken since the quench.
    keys : tuple of int
        Per-run RNG keys (see :func:`cdwdata.noise.run_key`).
    mu : torch.Tensor (R,) or None
        Chemical potential of each run's electrons, where the force field solves for it.
    """

    Q: torch.Tensor
    v: torch.Tensor
    F: torch.Tensor
    n: torch.Tensor
    step: int
    keys: tuple[int, ...]
    mu: torch.Tensor | None = None


def evaluate(forcefield, Q, mu_hint=None):
    """``(F, n, mu)`` of a force field; ``mu`` is None where it has no chemical potential.

    ``mu_hint`` (the previous step's mu) lets a force field that solves for mu start there.
    """
    full = getattr(forcefield, "evaluate_with_mu", None)
    if full is None:
        F, n = forcefield.evaluate(Q)
        return F, n, None
    if mu_hint is not None and getattr(forcefield, "accepts_mu_hint", False):
        return full(Q, mu_hint=mu_hint)
    return full(Q)


def hot_start(keys, L: int, params: HolsteinParams, device: Any = "cpu",
              dtype: torch.dtype = torch.float64, T_init: float = HOT_START_T):
    """Random initial ``(Q, v)``: ``Q ~ N(0, T_init/kappa)``, ``v ~ N(0, T_init/m)``.

    Variances (not standard deviations) are ``T_init/kappa`` and ``T_init/m``.
    """
    sq = math.sqrt(T_init / abs(params.kappa)) if params.kappa else math.sqrt(T_init / params.k)
    sv = math.sqrt(T_init / params.mass)
    Q = sq * noise.normal(keys, noise.INIT_Q, 0, (L, L), device, dtype)
    v = sv * noise.normal(keys, noise.INIT_V, 0, (L, L), device, dtype)
    return Q, v


def init_state(forcefield, Q: torch.Tensor, v: torch.Tensor, keys, step: int = 0) -> LangevinState:
    """Evaluate forces and densities at ``Q`` and pack a state."""
    F, n, mu = evaluate(forcefield, Q)
    return LangevinState(Q=Q, v=v, F=F, n=n, step=int(step), keys=tuple(int(k) for k in keys),
                         mu=mu)


def drift(Q, v, F, dt: float, mass: float, out=None):
    """Position update of velocity Verlet: ``Q + v dt + F dt^2 / (2m)`` (into ``out`` if
    given, which may be ``Q`` itself)."""
    out = Q.clone() if out is None else (out if out is Q else out.copy_(Q))
    return out.add_(v, alpha=dt).add_(F, alpha=dt * dt / (2.0 * mass))


def kick(v, F_old, F_new, dt: float, mass: float, out=None):
    """Velocity update of velocity Verlet: ``v + (F + F') dt / (2m)`` (into ``out``)."""
    out = v.clone() if out is None else (out if out is v else out.copy_(v))
    h = dt / (2.0 * mass)
    return out.add_(F_old, alpha=h).add_(F_new, alpha=h)


def thermostat(v, xi, T: float, gamma: float, dt: float, mass: float, out=None):
    """Exact Ornstein-Uhlenbeck update ``a v + sqrt((1 - a^2) T / m) xi``, ``a = exp(-gamma dt)``
    (into ``out``)."""
    a = math.exp(-gamma * dt)
    out = v.clone() if out is None else (out if out is v else out.copy_(v))
    return out.mul_(a).add_(xi, alpha=math.sqrt((1.0 - a * a) * T / mass))


def step(state: LangevinState, forcefield, T: float, params: HolsteinParams,
         inplace: bool = False, noise_buffer=None) -> LangevinState:
    """Advance every run by one Langevin step at bath temperature ``T``.

    With ``inplace`` the state's ``Q`` and ``v`` are updated in place (the caller owns them,
    as the quench loop does) and the thermal noise is drawn into ``noise_buffer``; the
    arithmetic is the same either way, so both give the same bits.
    """
    p = params
    Q = drift(state.Q, state.v, state.F, p.dt, p.mass, out=state.Q if inplace else None)
    F, n, mu = evaluate(forcefield, Q, state.mu)
    v = kick(state.v, state.F, F, p.dt, p.mass, out=state.v if inplace else None)
    if T > 0 and p.gamma > 0:
        xi = noise.normal(state.keys, noise.THERMAL, state.step, Q.shape[-2:], Q.device, Q.dtype,
                          out=noise_buffer if inplace else None)
        thermostat(v, xi, T, p.gamma, p.dt, p.mass, out=v)
    elif p.gamma > 0:
        v.mul_(math.exp(-p.gamma * p.dt))
    return replace(state, Q=Q, v=v, F=F, n=n, step=state.step + 1, mu=mu)


def run(state: LangevinState, forcefield, T: float, params: HolsteinParams, n_steps: int,
        callback=None, every: int = 1) -> LangevinState:
    """Take ``n_steps`` steps; call ``callback(state)`` whenever ``state.step % every == 0``."""
    T = check_temperature(T)
    with torch.no_grad():
        for _ in range(int(n_steps)):
            state = step(state, forcefield, T, params)
            if callback is not None and state.step % every == 0:
                callback(state)
    return state


def kinetic_energy(state: LangevinState, params: HolsteinParams) -> torch.Tensor:
    """Kinetic energy per run, ``sum m v^2 / 2``, shape (R,)."""
    return 0.5 * params.mass * (state.v * state.v).sum((-2, -1))
