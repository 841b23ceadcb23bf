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

from cdwdata.errors import ModelError
from cdwdata.forcefields import ForceField
from cdwdata.ml import modelfile
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
    return sorted(p.stem for p in d.glob("*" + modelfile.CARD_SUFFIX)
                  if p.with_suffix(modelfile.WEIGHTS_SUFFIX).exists())


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
            raise ModelError(f"dtype={dtype} is not supported: use torch.float32 or float64")
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ModelError(f"dtype={dtype!r} is not supported: use 'float32' or 'float64'") \
            from None


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
    conserve_filling : bool
        Enforce the sum rule ``sum_i n_i = f N`` of the exact electrons (see :meth:`evaluate`).
    """

    def __init__(self, model, card: dict[str, Any], card_sha256: str, device: Any = None,
                 dtype: Any = torch.float32, path: str | os.PathLike | None = None,
                 conserve_filling: bool = False) -> None:
        self.conserve_filling = bool(conserve_filling)
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

        With ``conserve_filling`` the densities are corrected so that ``sum_i n_i = f N`` in
        every configuration, as for the exact electrons, whose chemical potential is fixed by
        that count: ``n_i += delta w_i`` with ``w_i = n_i (1 - n_i)`` (``n`` clipped to [0, 1];
        the shape of ``dn_i/dmu`` for a level near mu, so the sites at mu take the
        correction) and one ``delta`` per configuration, and the force moves by
        ``g delta w_i``. A local model cannot know mu; without this, doped (f != 1/2) ML
        dynamics drifts in total density (benchmarks/README.md). The correction is a global
        sum, O(N), and keeps the D4 and translation covariance.
        """
        F = self.predict(Q).to(device=Q.device, dtype=Q.dtype)
        if self.params.g == 0:
            return F, torch.full_like(F, self.f)
        from cdwdata.ed import elastic_force

        n = (F - elastic_force(Q.detach(), self.params)) / self.params.g + 0.5
        if self.conserve_filling:
            w = n.clamp(0.0, 1.0)
            w = w * (1.0 - w) + 1e-6  # no site fractional: spread evenly
            N = Q.shape[-1] * Q.shape[-2]
            delta = (self.f * N - n.sum((-2, -1), keepdim=True)) / w.sum((-2, -1), keepdim=True)
            n = n + delta * w
            F = F + self.params.g * delta * w
        return F, n

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
        if self.conserve_filling:
            out["conserve_filling"] = 1
        if self.electron_T is not None:
            out["electron_T"] = self.electron_T
        return out


def load_model(name_or_path: str | os.PathLike, params: HolsteinParams | None = None,
               f: float | None = None, device: Any = None,
               dtype: Any = torch.float32, conserve_filling: bool = False) -> MLForceField:
    """Load a shipped or saved ML force field.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model name (``"holstein-f0.5"``, see :func:`list_models`) or the path of a
        saved model, with or without the ``.json`` / ``.safetensors`` suffix.
    params : HolsteinParams, optional
        If given, must match the card's parameters (else ModelError naming the difference).
    f : float, optional
        If given, must equal the card's filling.
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"`` (only when a GPU is present).
    dtype : torch.float32 (default) or torch.float64
        Precision of the network evaluation.
    conserve_filling : bool
        Correct the densities so that ``sum_i n_i = f N`` exactly (see
        :meth:`MLForceField.evaluate`); off by default (the paper's plain model).

    Returns
    -------
    MLForceField
    """
    path = resolve(name_or_path)
    model, card, card_hash = modelfile.load(path)
    ff = MLForceField(model, card, card_hash, device=device, dtype=dtype, path=path,
                      conserve_filling=conserve_filling)
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
    if f is not None:
        f = check_filling(f)
        if not math.isclose(f, ff.f, rel_tol=0.0, abs_tol=1e-9):
            raise ModelError(f"model {ff.name!r} was trained for filling f={ff.f}, asked for "
                             f"f={f}")
    return ff
