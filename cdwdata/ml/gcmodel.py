"""Grand-canonical ML model: local densities n_i(neighbourhood; mu, T) and the filling equation.

At fixed chemical potential ``mu`` and electron temperature ``T`` the local density is a
local function of the lattice (measured: benchmarks/README.md, "Locality at fixed mu"); the
filling is one global equation
``sum_i n_i(mu) = f N`` for mu. The model learns the local map and solves the equation.

How mu and T enter
------------------
Only ``H - mu`` matters: ``n_i(Q; mu) = n_i(Q + mu/g; 0)``. The descriptor is linear in a
uniform shift of Q (a uniform shift only moves the A1 shell sums; the reference frames are
built from staggered and dipole sums, which a uniform shift leaves untouched), so
``G(Q + c) = G(Q) + c a`` with a fixed D4-invariant vector ``a`` (:func:`shift_direction`).
The network input is ``G(Q) + (mu/g) a`` followed by ``T``; the descriptor is computed once
per configuration, and every mu of the solve only re-runs the MLP (fast path:
:class:`cdwdata.ml.inference.DensityPlan`). D4 invariance is exact:
``G`` is invariant bit for bit and ``a``, ``mu``, ``T`` are scalars under D4.

Output: ``n_i = sigmoid(MLP)`` in (0, 1); the force is ``g (n_i - 1/2)`` plus the exact
elastic force ``-k Q_i - kappa sum_nn Q_j``.

The filling equation
--------------------
:func:`solve_mu` finds, per configuration, mu with ``|sum_i n_i - f N| <= rtol f N``: a
bracketed secant iteration (regula falsi with the Illinois modification once the root is
bracketed, bisection when a step leaves the bracket). Exact electrons have
``dn_i/dmu >= 0`` at every site, so ``sum_i n_i(mu)`` has one root; the model's monotonicity
is measured in the validation report, and the bracket keeps the solve safe where it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from cdwdata.errors import ModelError
from cdwdata.ml.model import MLP, Normalizer

KIND = "density"
#: Default hidden widths of the grand-canonical network.
HIDDEN: tuple[int, ...] = (256, 128, 64)
#: Named hidden widths (``cdw train --arch``); "paper" is the paper's MLP 512x256x64x16.
ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "paper": (512, 256, 64, 16), "wide": (256, 128, 64), "medium": (128, 64),
    "small": (64, 32), "narrow": (32, 32), "single": (32,),
}
ACTIVATION = "silu"
#: Relative tolerance of the filling equation.
FILLING_RTOL = 1e-7


@lru_cache(maxsize=4)
def _shift_direction(dtype: torch.dtype) -> torch.Tensor:
    from cdwdata import descriptor

    Q = torch.zeros(1, 8, 8, dtype=torch.float64)
    a = descriptor.features_torch(Q + 1.0)[0, 0, 0] - descriptor.features_torch(Q)[0, 0, 0]
    return a.to(dtype)


def shift_direction() -> torch.Tensor:
    """``a`` with ``G(Q + c) = G(Q) + c a`` for a uniform shift ``c`` (float64, (n_features,))."""
    return _shift_direction(torch.float64).clone()


class DensityModel(nn.Module):
    """Descriptor + (mu, T) + MLP + sigmoid: local densities at a fixed chemical potential.

    Parameters
    ----------
    hidden : sequence of int
        Hidden widths (SiLU); input ``n_features + 1`` (features and T), output 1.
    params : HolsteinParams, optional
        ``g`` (the mu shift), ``k`` and ``kappa`` are buffers, checked against the card on
        loading; the force field adds the exact elastic force (``cdwdata.ed.elastic_force``).
    """

    kind = KIND
    target = "electronic"

    def __init__(self, hidden: Sequence[int] = HIDDEN, params=None) -> None:
        super().__init__()
        from cdwdata import descriptor
        from cdwdata.params import HolsteinParams

        p = params or HolsteinParams()
        if p.g == 0:
            raise ModelError("a grand-canonical model needs g != 0 (mu enters as Q + mu/g)")
        self.n_features = int(descriptor.N_FEATURES)
        self.r_cut = float(descriptor.R_CUT)
        self.descriptor = descriptor.Descriptor()
        self.activation = ACTIVATION
        self.input_norm = Normalizer(self.n_features + 1)
        self.mlp = MLP([self.n_features + 1, *(int(h) for h in hidden), 1], ACTIVATION)
        self.register_buffer("coupling", torch.tensor([p.g, p.k, p.kappa], dtype=torch.float64))
        self.register_buffer("shift", shift_direction())

    @property
    def sizes(self) -> list[int]:
        return self.mlp.sizes

    def architecture(self) -> dict:
        return {"kind": self.kind, "layers": self.sizes, "activation": self.activation,
                "target": self.target, "descriptor": "cdwdata.descriptor.Descriptor",
                "n_features": self.n_features, "r_cut": self.r_cut,
                "inputs": "descriptor(Q) + (mu/g) a, T", "output": "sigmoid -> n_i"}

    # --- pieces ---------------------------------------------------------------------------
    def features(self, Q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Descriptor of ``Q`` (..., L, L, n_features), computed once per configuration
        (into ``out`` when it is a buffer of that shape and dtype)."""
        return self.descriptor(Q, out)

    def logits(self, G: torch.Tensor, mu: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output for features ``G (B, ..., F)``, ``mu`` and ``T`` per batch entry
        (shape ``(B,)`` or broadcastable to ``G.shape[:-1]``)."""
        g = self.coupling[0].to(G.dtype)
        mu = torch.as_tensor(mu, dtype=G.dtype, device=G.device)
        T = torch.as_tensor(T, dtype=G.dtype, device=G.device)
        extra = G.ndim - 1 - mu.ndim
        mu = mu.reshape(*mu.shape, *([1] * extra))
        T = T.reshape(*T.shape, *([1] * (G.ndim - 1 - T.ndim)))
        x = G + (mu / g).unsqueeze(-1) * self.shift.to(G.dtype)
        Tcol = T.expand(G.shape[:-1]).unsqueeze(-1)
        return self.logits_from_inputs(torch.cat([x, Tcol], dim=-1))

    def logits_from_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output for raw inputs ``[G + (mu/g) a, T]`` (..., n_features + 1)."""
        return self.mlp(self.input_norm(x)).squeeze(-1)

    def site_density_from_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits_from_inputs(x))

    def site_density(self, G: torch.Tensor, mu, T) -> torch.Tensor:
        """``n_i`` for features ``G`` at ``mu``, ``T`` (see :meth:`logits`)."""
        return torch.sigmoid(self.logits(G, mu, T))

    def density_at(self, Q: torch.Tensor, mu, T) -> torch.Tensor:
        """``n_i(Q; mu, T)``, ``(..., L, L)``; ``mu`` and ``T`` scalars or one per configuration."""
        return self.site_density(self.features(Q), mu, T)

    # --- weights (descriptor excluded, as for ForceModel) ------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("descriptor.")}

    def widen_from(self, smaller: DensityModel) -> None:
        """Start as the function of ``smaller`` (same depth, no wider layers; see
        :meth:`cdwdata.ml.model.MLP.embed`): its input statistics, and its weights in the
        leading blocks of every layer."""
        try:
            self.mlp.embed(smaller.mlp)
        except ValueError as e:
            raise ModelError(str(e)) from None
        if not torch.equal(self.coupling, smaller.coupling):
            raise ModelError("cannot widen a model made for other (g, k, kappa)")
        self.input_norm.load_state_dict(smaller.input_norm.state_dict())

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        check_weights(self, tensors)

    # --- training -------------------------------------------------------------------------
    def log_occupation(self, G: torch.Tensor, mu, T) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log n, log(1 - n))`` at ``mu``, ``T`` (see :meth:`logits`), for the loss."""
        z = self.logits(G, mu, T)
        return nn.functional.logsigmoid(z), nn.functional.logsigmoid(-z)

    def fit_normalization(self, G: torch.Tensor, mu: torch.Tensor, T: torch.Tensor) -> None:
        """Input statistics from sample rows ``G (N, F)`` at their ``mu``, ``T`` (N,)."""
        a = self.shift.to(G.dtype)
        x = torch.cat([G + (mu / float(self.coupling[0])).unsqueeze(-1) * a, T.unsqueeze(-1)],
                      dim=-1).double()
        self.input_norm.set(x.mean(0), x.std(0))


def check_weights(model, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``tensors`` into a grand-canonical ``model`` after checking names and shapes, and
    that its mu-shift vector is the installed descriptor's."""
    expected = model.weights()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelError(f"weights do not fit the architecture {model.sizes}: missing "
                         f"{missing[:4]}, unexpected {extra[:4]}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise ModelError(f"weights do not fit the architecture {model.sizes}: {k} has "
                             f"shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}")
    state = dict(model.state_dict())
    state.update({k: tensors[k].to(v.dtype) for k, v in expected.items()})
    model.load_state_dict(state)
    if not torch.allclose(model.shift, shift_direction().to(model.shift.dtype)):
        raise ModelError("the model's mu-shift vector differs from the installed "
                         "descriptor's: it was made for another descriptor; retrain it")


def solve_mu(count, target: torch.Tensor, mu0: torch.Tensor, slope,
             rtol: float = FILLING_RTOL, max_iter: int = 60, max_step: float = 2.0):
    """Solve ``count(mu) = target`` per batch entry by a bracketed secant iteration.

    Parameters
    ----------
    count : callable
        ``count(mu (B,) float64) -> (N (B,) float64, payload)``; ``payload`` is any tensor
        with leading dim B (the densities), returned for the final mu of each entry.
    target : (B,) float64
    mu0 : (B,) float64 starting point.
    slope : callable
        ``slope(payload) -> (B,)``: an estimate of dN/dmu > 0 at mu0 (first step only).

    Returns
    -------
    mu (B,), payload at mu, residual (B,) = N(mu) - target, iterations used.
    """
    tol = rtol * target.abs().clamp_min(1.0)
    inf = torch.full_like(mu0, float("inf"))
    lo, hi = -inf, inf.clone()
    r_lo = torch.full_like(mu0, float("nan"))
    r_hi = r_lo.clone()
    last = torch.zeros_like(mu0)  # +1: the last point moved lo, -1: it moved hi
    x = mu0.clone()
    N, payload = count(x)
    r = N - target
    best_x, best_r, best_pay = x.clone(), r.clone(), payload.clone()
    slope0 = slope(payload)
    done = r.abs() <= tol
    x_prev = r_prev = None
    iterations = 0
    for _ in range(max_iter):
        if bool(done.all()):
            break
        iterations += 1
        moved_lo = r < 0
        # Illinois: an end kept twice in a row has its residual halved
        r_hi = torch.where(moved_lo & (last > 0), 0.5 * r_hi, r_hi)
        r_lo = torch.where(~moved_lo & (last < 0), 0.5 * r_lo, r_lo)
        lo, r_lo = torch.where(moved_lo, x, lo), torch.where(moved_lo, r, r_lo)
        hi, r_hi = torch.where(moved_lo, hi, x), torch.where(moved_lo, r_hi, r)
        last = torch.where(moved_lo, torch.ones_like(last), -torch.ones_like(last))
        bracketed = torch.isfinite(lo) & torch.isfinite(hi)
        # not bracketed yet: secant (first step: slope0), at most max_step
        step = -r / slope0.clamp_min(1e-12)
        if x_prev is not None:
            denom = r - r_prev
            ok = (denom * (x - x_prev)) > 0  # a secant slope of the right sign
            # no usable secant (a flat count: mu inside a gap): double the last step
            grow = torch.sign(-r) * torch.maximum(step.abs(), 2.0 * (x - x_prev).abs())
            step = torch.where(ok, -r * (x - x_prev) / torch.where(ok, denom, 1.0), grow)
        free = x + step.clamp(-max_step, max_step)
        # bracketed: regula falsi, bisection if it fails to land strictly inside
        rf = lo - r_lo * (hi - lo) / (r_hi - r_lo)
        rf = torch.where(torch.isfinite(rf) & (rf > lo) & (rf < hi), rf, 0.5 * (lo + hi))
        x_new = torch.where(done, x, torch.where(bracketed, rf, free))
        x_prev, r_prev = x, r
        x = x_new
        N, payload = count(x)
        r = N - target
        better = (r.abs() < best_r.abs()) & ~done
        best_x = torch.where(better, x, best_x)
        best_r = torch.where(better, r, best_r)
        best_pay = torch.where(better.reshape((-1,) + (1,) * (payload.ndim - 1)), payload,
                               best_pay)
        narrow = bracketed & ((hi - lo) <= 1e-13 * (1.0 + x.abs()))
        done = done | (r.abs() <= tol) | narrow
    return best_x, best_pay, best_r, iterations
