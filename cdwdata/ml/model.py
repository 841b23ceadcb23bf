"""The ML force-field network: descriptor -> feature normaliser -> MLP -> force (paper Fig. 1).

Two kinds share the same pieces (paper section III):

``kind="force"`` (the paper's model)
    The MLP maps the D4-invariant features ``G_i`` (:mod:`cdwdata.descriptor`) of site ``i``
    directly to the total force ``F_i``. Features are normalised with the training-set mean
    and standard deviation, and the MLP output is de-normalised with the force mean and
    standard deviation; all four are buffers of the model, so they travel with the weights.

``kind="energy"`` (Behler-Parrinello)
    The same MLP gives a site energy ``e_i = sigma_F * MLP(G_i) - mu_F * Q_i``; the total
    energy is ``E = sum_i e_i`` and the force is ``F = -dE/dQ`` by autograd through the
    descriptor. The ``- mu_F Q_i`` term is the constant mean force written as an energy.

Two targets (what the MLP output stands for):

``target="total"`` (the paper)
    The network output is the total force ``F_i``.
``target="electronic"``
    The network output is only the electronic force ``g (n_i - 1/2)``; the elastic force
    ``-k Q_i - kappa sum_{j nn i} Q_j`` (paper eq. 5), which is known exactly, is added
    analytically (kind "energy": the elastic energy ``k Q_i^2/2 + kappa Q_i sum_j Q_j / 2`` is
    added to each site energy). The model still returns the total force. The learned part is
    bounded by ``g/2`` instead of growing with ``|Q|``, so the same network spends its
    precision on the electrons. ``k`` and ``kappa`` are a buffer of the model (saved with the
    weights) and must equal the model card's HolsteinParams.

Architecture (paper appendix B): ``N_FEATURES x 512 x 256 x 64 x 16 x 1``, i.e.
``45 x 512 x 256 x 64 x 16 x 1`` for the default cutoff ``r_c = sqrt(13)``; the hidden layers
use ReLU (the paper's) in kind "force" models and SiLU in kind "energy" models (see
``ACTIVATIONS``). The grand-canonical density model is :mod:`cdwdata.ml.gcmodel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cdwdata.errors import ModelError
from cdwdata.ml.options import KINDS, TARGETS
from cdwdata.params import HolsteinParams, check_choice, elastic_force, elastic_site_energy

#: Hidden layer widths of the paper's network (appendix B).
HIDDEN: tuple[int, ...] = (512, 256, 64, 16)
#: Prefix of the state-dict keys that are NOT saved (the descriptor is code, not weights).
_DESCRIPTOR_PREFIX = "descriptor."


def layer_sizes(n_features: int, hidden: Sequence[int] = HIDDEN) -> list[int]:
    """Widths of every layer, input to output: ``[n_features, *hidden, 1]``."""
    return [int(n_features), *(int(h) for h in hidden), 1]


#: Hidden-layer activation of each model kind. The direct-force model uses the paper's ReLU.
#: The energy model uses SiLU: with ReLU its energy is piecewise linear in Q, so its force
#: -dE/dQ is piecewise constant and cannot follow the (locally linear) forces of localised
#: sites -- measured: a ReLU energy model stalled at RMSE ~1.2 where the force model reached 0.11.
ACTIVATIONS = {"force": "relu", "energy": "silu"}
_ACTIVATION_MODULES = {"relu": nn.ReLU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """Fully connected network ``sizes[0] x sizes[1] x ... x 1`` (no output activation).

    Input ``(..., sizes[0])`` -> output ``(..., 1)``; ``activation`` is "relu" or "silu".
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu") -> None:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATION_MODULES[activation]())
        super().__init__(*layers)

    @property
    def sizes(self) -> list[int]:
        lin = [m for m in self if isinstance(m, nn.Linear)]
        return [lin[0].in_features] + [m.out_features for m in lin]

    def embed(self, smaller: MLP) -> None:
        """Make this network compute exactly what ``smaller`` computes (net2net widening).

        ``smaller`` has the same depth, input and output and no wider hidden layers. Its
        weights go into the leading blocks; the units this network has in addition keep their
        random incoming weights, and their outgoing weights into the units of ``smaller`` (and
        into the output) are zero, so the function is unchanged and training starts from it
        with the extra capacity free to grow.
        """
        mine, theirs = self.sizes, smaller.sizes
        if (len(mine) != len(theirs) or mine[0] != theirs[0] or mine[-1] != theirs[-1]
                or any(a < b for a, b in zip(mine, theirs, strict=True))):
            raise ValueError(f"cannot embed layers {theirs} in {mine}: same depth, input and "
                             "output, and no wider hidden layer needed")
        big = [m for m in self if isinstance(m, nn.Linear)]
        small = [m for m in smaller if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for a, b in zip(big, small, strict=True):
                o, i = b.weight.shape
                a.weight[:o, i:] = 0.0
                a.weight[:o, :i] = b.weight
                a.bias[:o] = b.bias


class Normalizer(nn.Module):
    """Affine map ``(x - mean) / std`` with ``mean`` and ``std`` stored as buffers.

    Parameters
    ----------
    size : int
        Length of the last axis (1 for a scalar target).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    def set(self, mean, std, min_std: float = 1e-6) -> None:
        """Set the statistics; a (near-)constant component gets ``std = 1``."""
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(self.mean.shape)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(self.std.shape)
        std = torch.where(std > min_std, std, torch.ones_like(std))
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


def _descriptor():
    """The lattice descriptor module and its constants (imported lazily)."""
    from cdwdata import descriptor

    return descriptor


class ForceModel(nn.Module):
    """Descriptor + normaliser + MLP: configurations ``(..., L, L)`` -> forces ``(..., L, L)``.

    Parameters
    ----------
    kind : {"force", "energy"}
        Direct force regression (paper) or Behler-Parrinello site energies.
    hidden : sequence of int
        Hidden layer widths (default: the paper's 512, 256, 64, 16).
    n_features : int, optional
        Input width; must equal ``cdwdata.descriptor.N_FEATURES`` (the default).
    target : {"total", "electronic"}
        Whether the network learns the total force (paper) or only the electronic force, the
        elastic force being added exactly.
    params : HolsteinParams, optional
        Gives ``k`` and ``kappa`` of the elastic part (target "electronic" only; default
        HolsteinParams()).
    """

    def __init__(self, kind: str = "force", hidden: Sequence[int] = HIDDEN,
                 n_features: int | None = None, target: str = "total", params=None) -> None:
        super().__init__()
        check_choice("kind", kind, KINDS)
        check_choice("target", target, TARGETS)
        desc = _descriptor()
        if n_features is not None and int(n_features) != desc.N_FEATURES:
            raise ModelError(
                f"model expects {n_features} features but cdwdata.descriptor gives "
                f"{desc.N_FEATURES} (r_cut={desc.R_CUT}); the model was made for another "
                "descriptor: retrain it"
            )
        self.kind = kind
        self.n_features = int(desc.N_FEATURES)
        self.r_cut = float(desc.R_CUT)
        self.descriptor = desc.Descriptor()
        self.input_norm = Normalizer(self.n_features)
        self.output_norm = Normalizer(1)
        self.activation = ACTIVATIONS[kind]
        self.mlp = MLP(layer_sizes(self.n_features, hidden), self.activation)
        self.target = target
        if target == "electronic":
            p = params or HolsteinParams()
            self.register_buffer("elastic", torch.tensor([p.k, p.kappa], dtype=torch.float64))

    # --- architecture -----------------------------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        """Layer widths, input to output (``[45, 512, 256, 64, 16, 1]`` for the paper)."""
        return self.mlp.sizes

    def architecture(self) -> dict:
        """JSON-able description used by the model card and to rebuild the model."""
        return {"kind": self.kind, "layers": self.sizes, "activation": self.activation,
                "target": self.target, "descriptor": "cdwdata.descriptor.Descriptor",
                "n_features": self.n_features, "r_cut": self.r_cut}

    # --- the exact elastic part (target "electronic") ----------------------------------------
    def elastic_force(self, Q: torch.Tensor) -> torch.Tensor:
        """``-k Q_i - kappa sum_{j nn i} Q_j`` for target "electronic", zero for "total"."""
        if self.target == "total":
            return torch.zeros_like(Q)
        return elastic_force(Q, *self.elastic.to(Q.dtype))

    def elastic_site_energy(self, Q: torch.Tensor) -> torch.Tensor:
        """``k Q_i^2 / 2 + kappa Q_i sum_{j nn i} Q_j / 2`` (its gradient is minus
        :meth:`elastic_force`); zero for target "total"."""
        if self.target == "total":
            return torch.zeros_like(Q)
        return elastic_site_energy(Q, *self.elastic.to(Q.dtype))

    # --- the pieces ----------------------------------------------------------------------
    def features(self, Q: torch.Tensor) -> torch.Tensor:
        """Descriptor features ``(..., L, L, n_features)``."""
        return self.descriptor(Q)

    def head(self, G: torch.Tensor) -> torch.Tensor:
        """Per-site network output from raw features: the learned force (the total force, or the
        electronic force for target "electronic"; kind "force") or scaled site energy.

        ``G (..., n_features)`` -> ``(...)``; for kind "energy" this is ``sigma_F * MLP``
        without the mean-force term (see :meth:`site_energy`).
        """
        y = self.mlp(self.input_norm(G)).squeeze(-1)
        if self.kind == "force":
            return self.output_norm.inverse(y)
        return y * self.output_norm.std

    def site_energy(self, Q: torch.Tensor) -> torch.Tensor:
        """Behler-Parrinello site energies ``e_i`` (..., L, L) (kind "energy" only)."""
        if self.kind != "energy":
            raise ModelError("site energies exist only for kind='energy' models")
        return (self.head(self.features(Q)) - self.output_norm.mean * Q
                + self.elastic_site_energy(Q))

    def energy(self, Q: torch.Tensor) -> torch.Tensor:
        """Total energy ``E = sum_i e_i``, shape ``Q.shape[:-2]`` (kind "energy" only)."""
        return self.site_energy(Q).sum((-2, -1))

    def forward(self, Q: torch.Tensor) -> torch.Tensor:
        """Total force on every site, ``(..., L, L)`` -> ``(..., L, L)``.

        For kind "energy" the force is ``-dE/dQ``; the autograd graph is kept (for training)
        when gradients are enabled by the caller, and dropped under ``torch.no_grad()``.
        """
        if self.kind == "force":
            return self.head(self.features(Q)) + self.elastic_force(Q)
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            Qg = Q if Q.requires_grad else Q.detach().requires_grad_(True)
            E = self.energy(Qg).sum()
            (grad,) = torch.autograd.grad(E, Qg, create_graph=keep_graph)
        return -grad

    # --- weights without the descriptor ---------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """Trainable weights and normalisation buffers (no descriptor state), contiguous."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if not k.startswith(_DESCRIPTOR_PREFIX)}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load :meth:`weights` output; raises ModelError on missing/extra keys or shapes."""
        expected = self.weights()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ModelError(
                f"weights do not fit the architecture {self.sizes}: missing {missing[:4]}, "
                f"unexpected {extra[:4]}"
            )
        for k, v in expected.items():
            if tuple(tensors[k].shape) != tuple(v.shape):
                raise ModelError(
                    f"weights do not fit the architecture {self.sizes}: {k} has shape "
                    f"{tuple(tensors[k].shape)}, expected {tuple(v.shape)}"
                )
        state = dict(self.state_dict())
        state.update({k: t.to(v.dtype) for k, (t, v) in
                      ((k, (tensors[k], expected[k])) for k in expected)})
        self.load_state_dict(state)
