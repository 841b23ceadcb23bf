"""ML force field behind the :class:`~cdwdata.forcefields.ForceField` interface.

The network predicts the total force ``F_i``; the local density follows from the force law
``F_i = F_elastic,i + g (n_i - 1/2)`` (paper eqs. 4-7) as ``n_i = (F_i - F_elastic,i)/g + 1/2``
with the elastic force ``-k Q_i - kappa sum_nn Q_j`` computed exactly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from cdwdata.errors import ModelError, ParameterError
from cdwdata.forcefields import ForceField
from cdwdata.ml import modelfile
from cdwdata.ml.options import GC_KINDS
from cdwdata.params import HolsteinParams, check_filling, check_lattice_shape

#: Folder of the models shipped with the package.
MODELS_DIR = Path(__file__).resolve().parent / "models"

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32,
           "double": torch.float64}


def list_models(folder: str | os.PathLike | None = None) -> list[str]:
    """Names of the complete models (card + weights) in ``folder`` (default: shipped ones)."""
    d = Path(folder) if folder is not None else MODELS_DIR
    if not d.is_dir():
        return []
    names = {p.stem for p in d.glob("*" + modelfile.CARD_SUFFIX)
             if p.with_suffix(modelfile.WEIGHTS_SUFFIX).exists()}
    if folder is None:
        names |= {k for k in aliases() if "{f}" not in k}
    return sorted(names)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Model stem for a shipped model name or a path (with or without suffix).

    A bare name (no directory part) is looked up among the shipped models first, then as a
    path relative to the working directory. Raises ModelError listing the shipped models.
    """
    s = str(name_or_path)
    p = modelfile.stem(s)
    if os.sep not in s and "/" not in s:
        shipped = MODELS_DIR / p.name
        if modelfile.exists(shipped):
            return shipped
    if modelfile.exists(p):
        return p
    available = ", ".join(list_models()) or "none shipped yet"
    raise ModelError(f"no model {s!r}: not a shipped model (available: {available}) and no "
                     f"{p}{modelfile.CARD_SUFFIX} / {p}{modelfile.WEIGHTS_SUFFIX} on disk")


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ParameterError(f"dtype={dtype} is not supported: use torch.float32 or "
                                 "float64")
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ParameterError(f"dtype={dtype!r} is not supported: use 'float32' or "
                             "'float64'") from None


def _device(device) -> torch.device:
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} asked for, but torch sees no CUDA GPU; "
                         "use device='cpu'")
    return dev


class MLForceField(ForceField):
    """A trained :class:`~cdwdata.ml.model.ForceModel` as a force field.

    Use :func:`load_model` to build one. ``evaluate`` takes torch tensors ``(..., L, L)`` for
    any even ``L >= 4`` and returns ``(F, n)`` in the input's dtype and device; the network
    itself runs in ``dtype`` (float32 by default) on ``device``.

    Attributes
    ----------
    name : str
        Model name (from the card).
    params : HolsteinParams
    f : float
    electron_T : float or None
        Electron temperature of the training labels.
    card : dict
        The model card.
    card_sha256 : str
        sha256 of the card file (identifies the model exactly, together with its weights).
    model : ForceModel
    """

    def __init__(self, model, card: dict[str, Any], card_sha256: str, device: Any = None,
                 dtype: Any = torch.float32, path: str | os.PathLike | None = None) -> None:
        self.card = card
        self.card_sha256 = card_sha256
        self.name = str(card["name"])
        self.kind = str(card["kind"])
        self.params = HolsteinParams.from_dict(card["params"])
        self.f = check_filling(card["filling"])
        T = card.get("electron_T")
        self.electron_T = None if T is None else float(T)
        self.path = None if path is None else str(path)
        self._device = _device(device)
        self.dtype = _dtype(dtype)
        self.model = model.to(device=self._device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return (f"MLForceField(name={self.name!r}, kind={self.kind!r}, f={self.f}, "
                f"device={str(self._device)!r}, dtype={self.dtype})")

    def predict(self, Q: torch.Tensor) -> torch.Tensor:
        """Network force in the model's dtype and device, ``(..., L, L)``."""
        check_lattice_shape(Q.shape)
        Qm = Q.detach().to(device=self._device, dtype=self.dtype)
        if self.kind == "force":
            with torch.no_grad():
                return self.model(Qm)
        return self.model(Qm).detach()

    def evaluate(self, Q: torch.Tensor):
        """``(F, n)`` for configurations ``Q (..., L, L)``, same dtype and device as ``Q``.

        ``n = (F - F_elastic)/g + 1/2``. For ``g == 0`` the electrons decouple and
        ``n_i = f`` exactly (translation invariance), which is what is returned.
        """
        F = self.predict(Q).to(device=Q.device, dtype=Q.dtype)
        return F, self.params.density_from_force(F, Q.detach(), self.f)

    def density(self, Q: Any):
        """Local density ``(F - F_elastic)/g + 1/2`` for numpy ``Q (..., L, L)``."""
        if self.params.g == 0:
            raise ModelError(f"model {self.name!r} has g = 0: the density cannot be recovered "
                             "from the force (n = (F - F_elastic)/g + 1/2)")
        return super().density(Q)

    def energy(self, Q: Any):
        """Total ML energy per configuration (kind "energy" models only), numpy in/out."""
        import numpy as np

        from cdwdata.params import check_configuration

        if self.kind != "energy":
            raise ModelError(f"model {self.name!r} is a direct-force model; it has no energy")
        Qn = check_configuration(Q)
        with torch.no_grad():
            E = self.model.energy(torch.as_tensor(Qn, dtype=self.dtype, device=self._device))
        return E.cpu().numpy().astype(np.float64)

    def attrs(self) -> dict[str, Any]:
        out = {"forcefield": self.name, "model": self.name, "model_kind": self.kind,
               "model_card_sha256": self.card_sha256,
               "model_weights_sha256": self.card["weights_sha256"], "f": self.f,
               "ml_dtype": str(self.dtype).removeprefix("torch.")}
        if self.electron_T is not None:
            out["electron_T"] = self.electron_T
        return out


class GrandCanonicalForceField(MLForceField):
    """A grand-canonical density model (:mod:`cdwdata.ml.gcmodel`) at filling ``f`` and
    electron temperature ``T``.

    Every call computes the descriptor once per configuration and solves the filling equation
    ``sum_i n_i(mu) = f N`` for each configuration (:func:`~cdwdata.ml.gcmodel.solve_mu`,
    relative tolerance :data:`~cdwdata.ml.gcmodel.FILLING_RTOL`); the densities and forces
    are those at the solved mu, which :attr:`last_mu` keeps (one per configuration) for the
    caller to store. Calls are pure functions of their arguments: the solve starts from the
    card's mu for this filling, or from an explicit ``mu_hint`` (the Langevin integrator passes
    the previous step's mu, which the trajectory stores, so a resumed run is bit-identical).
    """

    def __init__(self, model, card, card_sha256, f: float, T: float, device: Any = None,
                 dtype: Any = torch.float32, path=None, precision: str = "float32",
                 cluster: Any = None, compile: bool = False) -> None:
        super().__init__(model, card, card_sha256, device=device, dtype=dtype, path=path)
        from cdwdata.ml.cluster import ClusterSpec
        from cdwdata.ml.options import check_precision
        from cdwdata.params import check_temperature

        check_precision(precision, self.dtype)
        self.precision = precision
        #: open-cluster refinement (:mod:`cdwdata.ml.cluster`): the card's, unless overridden
        if cluster is None:
            cluster = ClusterSpec.from_card(card.get("inference", {}).get("cluster"))
        elif cluster is False:
            cluster = None
        elif isinstance(cluster, dict):
            cluster = ClusterSpec(**cluster)
        if cluster is not None and model.kind != "levels":
            raise ModelError(f"model {self.name!r} ({model.kind}) has no levels to refine "
                             f"with a cluster")
        self.cluster = cluster
        if compile and model.kind != "levels":
            raise ModelError(f"compile=True is built for level models; {self.name!r} is a "
                             f"{model.kind!r} model")
        #: torch.compile'd network and Fermi sum (:mod:`cdwdata.ml.compiled`)
        self.compile = bool(compile)

        self.f = check_filling(f)
        self.T = check_temperature(T)
        self.electron_T = self.T
        lo, hi = card["filling_range"]
        if not lo - 1e-9 <= self.f <= hi + 1e-9:
            raise ModelError(f"model {self.name!r} was trained on fillings {lo:.3g}..{hi:.3g}; "
                             f"f={self.f} is outside that range")
        lo, hi = card["temperature_range"]
        if not lo - 1e-9 <= self.T <= hi + 1e-9:
            raise ModelError(f"model {self.name!r} was trained on electron temperatures "
                             f"{lo:.3g}..{hi:.3g}; T={self.T} is outside that range")
        import numpy as np

        table = np.asarray(card["mu_by_filling"], dtype=float)
        self.mu_start = float(np.interp(self.f, table[:, 0], table[:, 1]))
        self.last_mu = None
        self.last_residual = None
        self.last_iterations = 0
        #: how the last solve ended: "warm" (Newton from the hint) or "bracketed"
        self.last_solve = ""
        self._plan = None

    def __repr__(self) -> str:
        return (f"GrandCanonicalForceField(name={self.name!r}, f={self.f}, T={self.T}, "
                f"device={str(self._device)!r}, dtype={self.dtype})")

    #: The dynamics may pass the previous step's mu as the start of the solve.
    accepts_mu_hint = True

    def plan(self):
        """The inference plan (:class:`~cdwdata.ml.inference.DensityPlan`) of this model at
        this temperature, precision, dtype and device; made once, its buffers reused."""
        if self._plan is None:
            if self.model.kind == "levels":
                from cdwdata.ml.levels import LevelPlan as Plan
            else:
                from cdwdata.ml.inference import DensityPlan as Plan

            extra = {}
            if self.cluster is not None:
                from cdwdata.ml.cluster import ClusterLevels

                extra["cluster"] = ClusterLevels(self.cluster, self.params.g, self.params.t,
                                                 self.T, dtype=self.dtype,
                                                 device=self._device)
            if self.compile:
                extra["compile"] = True
            self._plan = Plan(self.model, self.T, self.precision, self.dtype, self._device,
                              **extra)
        return self._plan

    def solve(self, Q: torch.Tensor, mu_hint=None):
        """``(n, mu, residual)`` for ``Q (..., L, L)`` at this filling and temperature.

        The solve starts at ``mu_hint`` (one per configuration, e.g. the previous Langevin
        step's) or, by default, at the card's mu for this filling.

        From a hint, one evaluation gives ``n(mu0)`` and the exact slope ``n'(mu0)`` (forward
        mode); Newton steps ``dmu = (fN - N(mu)) / N'(mu)`` follow (at most
        :data:`NEWTON_STEPS`), each evaluating the network and its slope only at the sites with
        ``|n'(mu0)| > ACTIVE_SLOPE`` (the others in linear response from ``mu0``). Once the
        next step is small, the densities are ``n(mu) + n'(mu) dmu``: the electron count is
        exact, and they differ from the network at ``mu + dmu`` by ``~ n'' dmu^2 / 2``, kept
        below :data:`LINEAR_TOL` with the Fermi-function bound ``|n''| <= 0.1 / T^2``
        (measured in benchmarks/README.md).
        Between Langevin steps mu moves by 1e-3..1e-2, so a step costs one evaluation with the
        slope and one or two on the active sites (``last_iterations`` counts evaluations in
        whole-lattice units). Cold starts and failed
        iterations use the bracketed secant solve (:data:`~cdwdata.ml.gcmodel.FILLING_RTOL`).
        """

        check_lattice_shape(Q.shape)
        lead, L1, L2 = Q.shape[:-2], Q.shape[-2], Q.shape[-1]
        Qm = Q.detach().to(device=self._device, dtype=self.dtype).reshape(-1, L1, L2)
        B = Qm.shape[0]
        with torch.no_grad():
            plan = self.plan()
            evaluations = plan.evaluations  # a level plan evaluates its network in bind
            plan.bind(self.model.features(Qm, plan.feature_buffer(Qm.shape)))
            target = torch.full((B,), self.f * L1 * L2, dtype=torch.float64, device=self._device)
            done = first = None
            if mu_hint is not None:
                mu0 = torch.as_tensor(mu_hint, dtype=torch.float64).to(self._device).reshape(B)
            if self.cluster is not None and mu_hint is not None:
                # the sites to refine are chosen around the hint, among those whose slope
                # there allows it (the first step of the warm solve computes the slope)
                first = plan.refined_density_and_slope(mu0)
            elif self.cluster is not None:  # ... or around the network's own mu
                ref = self._bracketed(plan, torch.full((B,), self.mu_start, dtype=torch.float64,
                                                       device=self._device), target)[1]
                plan.refine(ref)
            if mu_hint is not None:
                done = self._linear_step(plan, mu0, target, first)
                self.last_solve = "warm"
                start = mu0
            else:
                start = torch.full((B,), self.mu_start, dtype=torch.float64, device=self._device)
            if done is None:
                done = self._bracketed(plan, start, target)
                self.last_solve = "bracketed"
            n, mu, res = done
        self.last_mu = mu.reshape(lead)
        self.last_residual = res.reshape(lead)
        self.last_iterations = plan.evaluations - evaluations
        return n.reshape(*lead, L1, L2), self.last_mu, self.last_residual

    def _linear_step(self, plan, mu0, target, first=None):
        """Newton iterations from ``mu0`` with exact slopes, finished in linear response once
        its error estimate is below ``LINEAR_TOL``; None when they do not get there.

        After the first (whole-lattice) evaluation, the iterations re-evaluate the network and
        its slope only at the sites with ``|n'(mu0)| > ACTIVE_SLOPE``
        (:meth:`DensityPlan.density_near`); the others stay in linear response from ``mu0``
        within ``|mu - mu0| <= T``. ``first``: ``(n, dn/dmu)`` at ``mu0`` if already
        computed."""
        n0, dn0 = first if first is not None else plan.density_and_slope(mu0)
        active = None
        n, dn = n0, dn0
        # the few numbers per configuration are Python floats (the same IEEE double
        # arithmetic as float64 tensors, without a tensor call each), fetched together (one
        # device-to-host copy each time on a GPU)
        goal, mu_start = torch.stack([target, mu0.to(target.device)]).tolist()
        mu = list(mu_start)
        curvature = 0.05 / self.T ** 2
        # each configuration of a batch stops iterating once its own estimate is good, so
        # its result does not depend on how many iterations its batch mates need
        pending, out, mu_out = list(range(len(goal))), None, list(mu_start)
        for k in range(NEWTON_STEPS + 1):
            slope, count = torch.stack([dn.sum((-2, -1), dtype=torch.float64),
                                        n.sum((-2, -1), dtype=torch.float64)]).tolist()
            dmu = {}
            for b in pending:
                if not slope[b] > 0:
                    return None
                dmu[b] = (goal[b] - count[b]) / slope[b]
                if not math.isfinite(dmu[b]):
                    return None
            # error of the linear finish ~ n'' dmu^2 / 2, with |n''| <= 0.1 / T^2
            ready = [b for b in pending if curvature * (dmu[b] * dmu[b]) <= LINEAR_TOL]
            if ready:
                shift = torch.tensor([dmu[b] for b in ready], dtype=n.dtype, device=n.device)
                if out is None and len(ready) == len(goal):  # all at once: the whole batch
                    out = torch.addcmul(n, dn, shift[:, None, None]).clamp_(0.0, 1.0)
                else:
                    out = torch.empty_like(n0) if out is None else out
                    rows = torch.tensor(ready, device=n.device)
                    out[rows] = torch.addcmul(n[rows], dn[rows],
                                              shift[:, None, None]).clamp_(0.0, 1.0)
                for b in ready:
                    mu_out[b] = mu[b] + dmu[b]
                pending = [b for b in pending if b not in ready]
            if not pending:
                mu_out = torch.tensor(mu_out, dtype=torch.float64, device=target.device)
                return out, mu_out, out.sum((-2, -1), dtype=torch.float64) - target
            if k == NEWTON_STEPS:
                return None
            for b in pending:
                mu[b] = mu[b] + min(max(dmu[b], -self.T), self.T)
                if abs(mu[b] - mu_start[b]) > self.T:
                    return None
            if active is None:  # flat (configuration, site) indices of the iterating ones
                steep = dn0.abs() > ACTIVE_SLOPE
                if len(pending) < len(goal):
                    keep = torch.zeros(len(goal), dtype=torch.bool, device=steep.device)
                    keep[pending] = True
                    steep &= keep.view(-1, *([1] * (steep.ndim - 1)))
                active = torch.nonzero(steep.reshape(-1)).reshape(-1)
            n, dn = plan.density_near(torch.tensor(mu, dtype=torch.float64), mu0, n0, dn0,
                                      active)

    def _bracketed(self, plan, mu0, target):
        """The bracketed secant solve of the filling equation from ``mu0``."""
        from cdwdata.ml.gcmodel import FILLING_RTOL, solve_mu

        def count(mu):
            n = plan.density(mu.to(self.dtype)).clone()
            return n.sum((-2, -1), dtype=torch.float64), n

        def slope(n):
            nd = n.double()
            return (nd * (1.0 - nd)).sum((-2, -1)) / self.T + 1e-3 * n[0].numel()

        rtol = BF16_RTOL if self.precision == "bf16" else FILLING_RTOL
        mu, n, res, it = solve_mu(count, target, mu0, slope, rtol=rtol)
        if bool((res.abs() > 1e-2 * target).any()):
            worst = float(res.abs().max())
            raise ModelError(
                f"model {self.name!r} cannot reach filling f={self.f} at T={self.T} in this "
                f"configuration (best electron count off by {worst:.3g} after {it} "
                f"iterations, mu={mu.tolist()[:4]})")
        # n(mu) of a finite-precision network is a staircase on a fine scale (bf16 hidden
        # layers: ~1e-6 relative; a steep float32 site can leave ~1e-4): what the solve
        # cannot remove is removed in linear response, every level shifted by the same
        # d mu (dn_i = n_i (1 - n_i) d mu / T), so the electron count is exact
        left = res.abs() > FILLING_RTOL * target
        if bool(left.any()):
            w = (n.double() * (1.0 - n.double())).clamp_min(1e-12)
            shift = torch.where(left, res / w.sum((-2, -1)), torch.zeros_like(res))
            n = (n.double() - w * shift[:, None, None]).clamp(0.0, 1.0).to(n.dtype)
            res = n.sum((-2, -1), dtype=torch.float64) - target
        return n, mu, res

    def evaluate(self, Q: torch.Tensor):
        """``(F, n)`` at the solved chemical potential, same dtype and device as ``Q``."""
        F, n, _ = self.evaluate_with_mu(Q)
        return F, n

    def evaluate_with_mu(self, Q: torch.Tensor, mu_hint=None):
        """``(F, n, mu)``; ``mu`` float64 of shape ``Q.shape[:-2]``."""
        n, mu, _ = self.solve(Q, mu_hint)
        n = n.to(device=Q.device, dtype=Q.dtype)
        F = self.params.g * (n - 0.5) + self.params.elastic_force(Q.detach())
        return F, n, mu.to(Q.device)

    def density_at(self, Q: Any, mu, T: float | None = None, select_mu=None):
        """Model densities at a fixed chemical potential, numpy ``(..., L, L)`` in and out.

        With a cluster refinement the refined sites are chosen around ``select_mu`` (default:
        ``mu``); at one choice of sites every density is non-decreasing in mu."""
        import numpy as np

        from cdwdata.params import check_configuration

        Qn = check_configuration(Q)
        if self.cluster is not None:
            return self._refined_density_at(Qn, mu, T, mu if select_mu is None else select_mu)
        with torch.no_grad():
            n = self.model.density_at(torch.as_tensor(Qn, dtype=self.dtype, device=self._device),
                                      torch.as_tensor(np.broadcast_to(mu, Qn.shape[:-2]).copy()),
                                      self.T if T is None else float(T))
        return n.cpu().numpy().astype(np.float64)

    def _refined_density_at(self, Qn, mu, T, select_mu):
        """:meth:`density_at` through the plan, with the cluster refinement at ``mu``."""
        import numpy as np

        if T is not None and not math.isclose(float(T), self.T):
            raise ModelError(f"{self.name!r} refines at its own T={self.T}; asked for T={T}")
        lead, shape = Qn.shape[:-2], Qn.shape[-2:]
        Qm = torch.as_tensor(Qn, dtype=self.dtype, device=self._device).reshape(-1, *shape)

        def per_config(x):
            return torch.as_tensor(np.broadcast_to(x, lead).copy(),
                                   dtype=torch.float64).reshape(-1)

        mu = per_config(mu)
        with torch.no_grad():
            plan = self.plan()
            plan.bind(self.model.features(Qm, plan.feature_buffer(Qm.shape)))
            plan.refine(per_config(select_mu))
            n = plan.density(mu.to(self.dtype))
        return n.reshape(Qn.shape).cpu().numpy().astype(np.float64)

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        out.update({"electron_T": self.T, "grand_canonical": 1,
                    "ml_precision": self.precision})
        if self.compile:
            out["ml_compile"] = 1
        if self.cluster is not None:
            out["ml_cluster"] = self.cluster.to_dict()
        return out


#: Largest error in n allowed to the linear-response finish of a warm-started solve (see
#: :meth:`GrandCanonicalForceField.solve`); 3.5e-4 in the force at g = 3.5, below bf16 rounding.
LINEAR_TOL = 1e-4
#: Newton iterations tried from a warm start before the bracketed solve takes over.
NEWTON_STEPS = 3
#: Sites whose slope |dn_i/dmu| at the warm start is at most this stay in linear response
#: during the Newton iterations (measured error of that: benchmarks/README.md, "mu solve").
ACTIVE_SLOPE = 1e-3

#: Filling tolerance of the mu solve with bf16 hidden layers (the rest is removed in linear
#: response, see :meth:`GrandCanonicalForceField.solve`).
BF16_RTOL = 2e-5

#: Shipped names that select a grand-canonical model (see :func:`_alias`).
ALIASES_FILE = "aliases.json"


def _alias(name: str):
    """``(model stem, f or None)`` if ``name`` is a shipped alias, else None.

    ``aliases.json`` in the models folder maps names to model files; a ``{f}`` in a name
    matches any filling (``holstein-f{f}``: ``holstein-f0.35`` is that model at f = 0.35).
    """
    import json
    import re

    p = MODELS_DIR / ALIASES_FILE
    if os.sep in name or "/" in name or not p.exists():
        return None
    stem_name = modelfile.stem(name).name
    for key, target in json.loads(p.read_text()).items():
        if "{f}" in key:
            m = re.fullmatch(re.escape(key).replace(r"\{f\}", r"(0?\.\d+)"), stem_name)
            if m:
                return MODELS_DIR / target, float(m.group(1))
        elif key == stem_name:
            return MODELS_DIR / target, None
    return None


def model_file(name_or_path: str | os.PathLike) -> Path:
    """The model stem behind a shipped name, an alias (``holstein-f0.4``) or a path."""
    alias = _alias(str(name_or_path))
    return alias[0] if alias is not None else resolve(name_or_path)


def aliases() -> dict[str, str]:
    """The shipped alias table (name -> model file)."""
    import json

    p = MODELS_DIR / ALIASES_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def load_model(name_or_path: str | os.PathLike, params: HolsteinParams | None = None,
               f: float | None = None, device: Any = None,
               dtype: Any = torch.float32, T: float | None = None,
               precision: str = "float32", cluster: Any = None,
               compile: bool = False) -> MLForceField:
    """Load a shipped or saved ML force field.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model name (``"holstein-f0.5"``, see :func:`list_models`) or the path of a
        saved model, with or without the ``.json`` / ``.safetensors`` suffix. The shipped
        names ``holstein-f0.5``, ``-f0.4``, ``-f0.3`` select the grand-canonical model at that
        filling (``aliases.json`` in the models folder says which model file).
    params : HolsteinParams, optional
        If given, must match the card's parameters (else ModelError naming the difference).
    f : float, optional
        Filling. A grand-canonical model solves mu for it (default: the alias's filling, else
        the card's); a canonical model must have been trained for it.
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"`` (only when a GPU is present).
    dtype : torch.float32 (default) or torch.float64
        Precision of the network evaluation.
    T : float, optional
        Electron temperature of a grand-canonical model (default 0.1, the paper's); must lie
        in the card's trained range. Canonical models carry theirs in the card.
    precision : {"float32", "bf16"}
        Grand-canonical models: precision of the hidden-to-hidden layers (the layers that see
        mu and the output stay float32).
    cluster : None, False, dict or ClusterSpec
        Level models: exact open-cluster levels at the sites with a level near mu
        (:mod:`cdwdata.ml.cluster`). None (default) uses the card's ``inference.cluster``
        entry, False turns it off, a dict or :class:`~cdwdata.ml.cluster.ClusterSpec` sets it.
    compile : bool
        Level models: run the network and the whole-lattice Fermi sum as torch.compile'd
        kernels (:mod:`cdwdata.ml.compiled`; rounds differently from the eager default).

    Returns
    -------
    MLForceField (or GrandCanonicalForceField)
    """
    alias = _alias(str(name_or_path))
    path = alias[0] if alias is not None else resolve(name_or_path)
    model, card, card_hash = modelfile.load(path)
    if card["kind"] in GC_KINDS:
        f_alias = alias[1] if alias is not None else None
        if f is not None and f_alias is not None and not math.isclose(
                check_filling(f), f_alias, abs_tol=1e-9):
            raise ModelError(f"model name {name_or_path!r} means f={f_alias:g}, asked for f={f}")
        f_use = check_filling(f) if f is not None else (
            f_alias if f_alias is not None else float(card["filling"]))
        ff = GrandCanonicalForceField(model, card, card_hash, f=f_use,
                                      T=0.1 if T is None else T, device=device, dtype=dtype,
                                      path=path, precision=precision, cluster=cluster,
                                      compile=compile)
        if alias is not None:
            ff.name = modelfile.stem(str(name_or_path)).name
            ff.model_file = card["name"]
    else:
        if compile:
            raise ModelError(f"compile=True is built for grand-canonical level models; "
                             f"{name_or_path!r} is a {card['kind']!r} model")
        ff = MLForceField(model, card, card_hash, device=device, dtype=dtype, path=path)
    if params is not None:
        if not isinstance(params, HolsteinParams):
            raise ModelError(f"params must be a HolsteinParams, got {type(params).__name__}")
        if not ff.params.matches(params):
            mine, theirs = ff.params.to_dict(), params.to_dict()
            diff = ", ".join(f"{k}={theirs[k]} (model: {mine[k]})" for k in mine
                             if not math.isclose(mine[k], theirs[k], rel_tol=1e-9,
                                                 abs_tol=1e-15))
            raise ModelError(f"model {ff.name!r} was trained for other parameters: asked for "
                             f"{diff}")
    if f is not None and card["kind"] not in GC_KINDS:
        f = check_filling(f)
        if not math.isclose(f, ff.f, rel_tol=0.0, abs_tol=1e-9):
            raise ModelError(f"model {ff.name!r} was trained for filling f={ff.f}, asked for "
                             f"f={f}")
    return ff
