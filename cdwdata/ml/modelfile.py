"""Models on disk: ``<name>.safetensors`` (weights) + ``<name>.json`` (model card).

The weights file holds the MLP weights and the normalisation buffers (never the descriptor,
which is code). The card says everything needed to trust and reproduce the model: kind and
architecture, HolsteinParams, filling, electron temperature and data sources, descriptor
cutoff and feature count, training set (path + sha256 of its Q and F arrays), training
settings, validation metrics, timing, code version, creation time, and the sha256 of the
weights file.

Loading never unpickles: weights are parsed by ``safetensors`` only. A missing file, a
truncated or modified weights file, or a card that does not match its weights raise
:class:`~cdwdata.errors.ModelError` with a one-line message.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cdwdata.errors import ModelError
from cdwdata.ml.options import GC_KINDS

#: Identifies the card format; bump when its meaning changes.
CARD_FORMAT = "cdwdata-model/1"
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
#: Keys every card must have.
REQUIRED_KEYS = ("format", "name", "kind", "architecture", "params", "filling",
                 "weights_sha256")


def stem(path: str | os.PathLike) -> Path:
    """``path`` without a ``.json`` / ``.safetensors`` suffix (ModelError if it names no file)."""
    p = Path(path)
    if not str(path).strip() or not p.name:
        raise ModelError(f"model {str(path)!r} names no model: give a shipped model name "
                         "(cdwdata.ml.list_models()) or the path of a saved model")
    if p.suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        p = p.with_suffix("")
    return p


def paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, card)`` file paths of the model at ``path`` (with or without suffix)."""
    s = stem(path)
    return s.with_name(s.name + WEIGHTS_SUFFIX), s.with_name(s.name + CARD_SUFFIX)


def exists(path: str | os.PathLike) -> bool:
    """True if either file of the model at ``path`` exists."""
    w, c = paths(path)
    return w.exists() or c.exists()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_hash(Q: Any, F: Any) -> str:
    """Content hash of a training set: sha256 over the shapes and float64 bytes of Q and F."""
    h = hashlib.sha256()
    for arr in (Q, F):
        a = np.ascontiguousarray(np.asarray(arr), dtype="<f8")
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(model, path: str | os.PathLike, card: dict[str, Any], overwrite: bool = False) -> dict:
    """Write ``model`` (a :class:`~cdwdata.ml.model.ForceModel`) and its card.

    Parameters
    ----------
    model : ForceModel
    path : path-like
        Where to write, with or without suffix; ``name`` defaults to the file stem.
    card : dict
        Card entries (params, filling, training, metrics, ...); ``format``, ``name``,
        ``kind``, ``architecture``, ``weights_sha256``, ``weights_file`` and ``created``
        are filled in here.
    overwrite : bool
        Replace an existing model (default: refuse with ModelError).

    Returns
    -------
    dict, the card as written.
    """
    from safetensors.torch import save as st_save

    wpath, cpath = paths(path)
    if not overwrite and (wpath.exists() or cpath.exists()):
        raise ModelError(f"{stem(path)} already exists: choose another name or overwrite it")
    wpath.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.cpu() for k, v in model.weights().items()}
    # one metadata key only: safetensors keeps metadata in a hash map whose order varies
    # between processes, and the file bytes (and their sha256) must be reproducible
    meta = {"cdwdata": json.dumps({"format": CARD_FORMAT, "kind": model.kind}, sort_keys=True)}
    blob = st_save(tensors, metadata=meta)
    full = dict(card)
    full.update({
        "format": CARD_FORMAT,
        "name": card.get("name") or stem(path).name,
        "kind": model.kind,
        "architecture": model.architecture(),
        "weights_file": wpath.name,
        "weights_sha256": sha256_bytes(blob),
        "weight_shapes": {k: list(v.shape) for k, v in tensors.items()},
    })
    full.setdefault("created", now())
    text = json.dumps(_jsonable(full), indent=2, sort_keys=False, allow_nan=True) + "\n"
    atomic_write(wpath, blob)
    atomic_write(cpath, text.encode())
    return full


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def _read_bytes(path: Path, what: str) -> bytes:
    """Bytes of ``path``, or ModelError saying the ``what`` is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{what} {path} is missing") from None
    except OSError as err:
        raise ModelError(f"cannot read {what} {path}: {err}") from None


def read_card(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Parse the card of the model at ``path``; return ``(card, sha256 of the card file)``."""
    _, cpath = paths(path)
    raw = _read_bytes(cpath, "model card")
    try:
        card = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"model card {cpath} is not valid JSON ({err}); the file is damaged") \
            from None
    if not isinstance(card, dict):
        raise ModelError(f"model card {cpath} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"model card {cpath} lacks {missing}; it is not a cdwdata model card")
    if card["format"] != CARD_FORMAT:
        raise ModelError(f"model card {cpath} has format {card['format']!r}, this cdwdata "
                         f"reads {CARD_FORMAT!r}")
    return card, sha256_bytes(raw)


def read_weights(path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Parse the safetensors file of the model at ``path`` (no pickle involved).

    Raises ModelError if it is missing, truncated, not safetensors, or its sha256 differs
    from ``expected_sha256``.
    """
    from safetensors.torch import load as st_load

    wpath, _ = paths(path)
    raw = _read_bytes(wpath, "weights file")
    if expected_sha256 is not None and sha256_bytes(raw) != expected_sha256:
        raise ModelError(
            f"weights file {wpath} does not match its model card (sha256 differs): the file is "
            "truncated, corrupted or from another model; restore or retrain it"
        )
    try:
        tensors = st_load(raw)
    except Exception as err:  # safetensors raises SafetensorError / OSError variants
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"weights file {wpath} is not a valid safetensors file ({msg})") \
            from None
    return tensors


def load(path: str | os.PathLike, verify_hash: bool = True):
    """Rebuild the model at ``path``: returns ``(ForceModel, card, card_sha256)``.

    Checks, in order: card present and well formed; weights present, hash equal to the card's,
    parseable; descriptor feature count and cutoff equal to the installed descriptor; tensor
    names and shapes equal to the card's architecture.
    """
    from cdwdata.ml.model import ForceModel

    card, card_hash = read_card(path)
    if card["kind"] in GC_KINDS:
        return _load_density(path, card, card_hash, verify_hash)
    tensors = read_weights(path, card["weights_sha256"] if verify_hash else None)
    arch = card["architecture"]
    try:
        layers = [int(n) for n in arch["layers"]]
        n_features = int(arch["n_features"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"model card {paths(path)[1]} has a malformed architecture entry") \
            from None
    if layers[0] != n_features or layers[-1] != 1:
        raise ModelError(f"model card {paths(path)[1]}: layers {layers} do not start with "
                         f"n_features={n_features} and end with 1")
    from cdwdata import descriptor

    if n_features != descriptor.N_FEATURES or (
            "r_cut" in arch and abs(float(arch["r_cut"]) - float(descriptor.R_CUT)) > 1e-9):
        raise ModelError(
            f"model {card['name']!r} was trained with {n_features} features (r_cut="
            f"{arch.get('r_cut')}), the installed descriptor gives {descriptor.N_FEATURES} "
            f"(r_cut={descriptor.R_CUT}); retrain the model"
        )
    from cdwdata.ml.model import ACTIVATIONS

    want = ACTIVATIONS.get(card["kind"])
    if arch.get("activation", want) != want:
        raise ModelError(f"model {card['name']!r} uses activation {arch.get('activation')!r}; "
                         f"this cdwdata builds {card['kind']} models with {want!r}: retrain it")
    import torch

    from cdwdata.ml.model import TARGETS
    from cdwdata.params import HolsteinParams

    target = arch.get("target", "total")
    if target not in TARGETS:
        raise ModelError(f"model {card['name']!r} has target {target!r}; this cdwdata knows "
                         f"{TARGETS}")
    params = HolsteinParams.from_dict(card["params"])
    with torch.random.fork_rng(devices=[]):  # loading must not advance the global RNG
        model = ForceModel(kind=card["kind"], hidden=layers[1:-1], n_features=n_features,
                           target=target, params=params)
    shapes = card.get("weight_shapes")
    if shapes is not None:
        got = {k: list(v.shape) for k, v in tensors.items()}
        if got != {k: list(v) for k, v in shapes.items()}:
            bad = sorted(k for k in set(got) | set(shapes) if got.get(k) != shapes.get(k))
            raise ModelError(f"weights of {card['name']!r} do not match the shapes its card "
                             f"lists (differ: {bad[:4]})")
    model.load_weights(tensors)
    if target == "electronic" and not torch.allclose(
            model.elastic, torch.tensor([params.k, params.kappa], dtype=model.elastic.dtype)):
        raise ModelError(f"model {card['name']!r}: its elastic constants (k, kappa) = "
                         f"{model.elastic.tolist()} differ from its card's params "
                         f"({params.k}, {params.kappa})")
    model.eval()
    return model, card, card_hash


def _load_density(path, card: dict[str, Any], card_hash: str, verify_hash: bool):
    """:func:`load` for grand-canonical density models (:mod:`cdwdata.ml.gcmodel`)."""
    import torch

    from cdwdata import descriptor
    from cdwdata.ml.gcmodel import ACTIVATION, DensityModel
    from cdwdata.params import HolsteinParams

    tensors = read_weights(path, card["weights_sha256"] if verify_hash else None)
    arch = card["architecture"]
    try:
        layers = [int(n) for n in arch["layers"]]
        n_features = int(arch["n_features"])
        for key in ("filling_range", "temperature_range", "mu_by_filling"):
            card[key]  # noqa: B018 -- presence check
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"model card {paths(path)[1]} is not a complete grand-canonical "
                         f"card (missing {err})") from None
    levels = card["kind"] == "levels"
    try:
        K = int(arch["components"]) if levels else 0
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"model card {paths(path)[1]}: a level model names its "
                         "components") from None
    first, last = (n_features, 2 * K) if levels else (n_features + 1, 1)
    if n_features != descriptor.N_FEATURES or layers[0] != first or layers[-1] != last:
        raise ModelError(f"model {card['name']!r} has layers {layers} for {n_features} "
                         f"features; the installed descriptor gives {descriptor.N_FEATURES} "
                         f"(a {card['kind']} model takes {first} inputs): retrain it")
    if arch.get("activation") != ACTIVATION:
        raise ModelError(f"model {card['name']!r} uses activation {arch.get('activation')!r}, "
                         f"density models use {ACTIVATION!r}")
    params = HolsteinParams.from_dict(card["params"])
    with torch.random.fork_rng(devices=[]):
        if levels:
            from cdwdata.ml.levels import LevelModel

            model = LevelModel(hidden=layers[1:-1], components=K, params=params,
                               pairs=bool(arch.get("pairs", False)))
        else:
            model = DensityModel(hidden=layers[1:-1], params=params)
    model.load_weights(tensors)
    want = torch.tensor([params.g, params.k, params.kappa], dtype=model.coupling.dtype)
    if not torch.allclose(model.coupling, want):
        raise ModelError(f"model {card['name']!r}: its constants (g, k, kappa) = "
                         f"{model.coupling.tolist()} differ from its card's params")
    model.eval()
    return model, card, card_hash
