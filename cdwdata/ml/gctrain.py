"""Training of the grand-canonical density model on grand-canonical training sets.

Pipeline: read one or more :mod:`cdwdata.gcdata` stores -> split whole configurations into
train / validation (whole quench runs of each origin where there are enough, plus a share of
the random configurations; deterministic in ``seed``) -> descriptor features once per
configuration (float32, in memory) -> minibatches of (configuration, label, site) triples,
the input being ``G + (mu/g) a`` and ``T`` -> Adam on the density error (MSE, or Huber) with a
cosine schedule -> keep the epoch with the lowest validation force RMSE -> write the model and
its card, which records the (mu, T, f) range of the labels.

Selection uses only the validation split of the training stores: the held-out ED-Langevin
quenches that the targets are measured on (:mod:`cdwdata.ml.heldout`) never enter here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cdwdata import schema, store
from cdwdata._version import __version__
from cdwdata.errors import InputError, ModelError, ParameterError
from cdwdata.ml import modelfile
from cdwdata.ml.gcmodel import HIDDEN, DensityModel
from cdwdata.ml.options import GC_KINDS, PRECISIONS
from cdwdata.ml.train import output_path, torch_threads
from cdwdata.params import HolsteinParams

#: ``bce``: binary cross-entropy of the density (a probability) against the exact one; its
#: gradient in the logit is ``n - n_exact`` for every site, where the squared error's is
#: damped by ``n (1 - n)`` and stalls on nearly full or empty sites.
LOSSES = ("bce", "mse", "huber")
#: The grand-canonical model kinds: ``density`` (mu and T as network inputs, sigmoid output)
#: and ``levels`` (learned local levels, mu and T only in the Fermi functions).
#: Consecutive frames held out together when a quench origin has too few runs to split.
FRAME_BLOCK = 5
#: Densities strictly inside this interval count as fractional for importance sampling.
FRACTIONAL_SAMPLING = (0.01, 0.99)


@dataclass(frozen=True)
class GCData:
    """Complete samples of one or more grand-canonical stores, in memory.

    Q (S, L, L) float64; n (S, K, L, L) float32; mu, T_e (S, K); group (S,) str names the
    split unit (one quench run of one origin, or one random configuration); part (S,) int is
    the store index.
    """

    Q: np.ndarray
    n: np.ndarray
    mu: np.ndarray
    T_e: np.ndarray
    group: np.ndarray
    source: np.ndarray
    f0: np.ndarray
    part: np.ndarray
    params: HolsteinParams
    paths: tuple[str, ...]

    @property
    def L(self) -> int:
        return int(self.Q.shape[-1])


def load(paths) -> GCData:
    """Read the complete samples of the stores at ``paths``."""
    paths = (paths,) if isinstance(paths, str) else tuple(str(p) for p in paths)
    parts: list[dict[str, Any]] = []
    params = None
    for i, path in enumerate(paths):
        attrs = store.read_attrs(path)
        if attrs.get("kind") != "gc-training-set":
            raise InputError(f"{path} is not a grand-canonical training set (kind="
                             f"{attrs.get('kind')!r}); make one with 'cdw gc-dataset'")
        p = HolsteinParams.from_dict(json.loads(attrs["params_json"]))
        if params is not None and not params.matches(p):
            raise InputError(f"{path} was made with other HolsteinParams than {paths[0]}")
        params = p
        ds = store.open_dataset(path)
        done = np.asarray(ds[store.SAMPLE_DONE].values).astype(bool)
        if not done.any():
            raise InputError(f"{path} holds no complete sample yet")
        idx = np.flatnonzero(done)
        src = np.asarray([str(x) for x in ds[schema.SOURCE].values[idx]])
        origin = np.asarray([str(x) for x in ds["origin"].values[idx]])
        keys = [f"{i}:{s}:{o}:{it}:{jf}:{r}" for s, o, it, jf, r in zip(
            src, origin, ds["it"].values[idx], ds["jf"].values[idx], ds["run"].values[idx],
            strict=True)]
        parts.append({
            "Q": ds[schema.Q].values[idx], "n": ds[schema.N].values[idx],
            "mu": ds[schema.MU].values[idx], "T_e": ds[schema.T_E].values[idx],
            "group": np.asarray(keys), "source": src,
            "f0": np.asarray(ds["f0"].values)[idx], "part": np.full(len(idx), i)})
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return GCData(params=params, paths=paths, **cat)


def split(data: GCData, seed: int = 0, val_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Train / validation positions: whole split units (quench runs, random configurations).

    Each quench origin (store, T, f) gives whole runs to validation when it has at least 3,
    else blocks of :data:`FRAME_BLOCK` consecutive frames of each run; a ``val_fraction``
    share of the random configurations validates too.
    """
    rng = np.random.default_rng(seed)
    val = np.zeros(len(data.Q), bool)
    rand = np.flatnonzero(data.source == "random")
    if len(rand):
        k = int(round(val_fraction * len(rand)))
        val[rng.choice(rand, size=k, replace=False)] = True
    quench = data.source != "random"
    cells = {g.rsplit(":", 1)[0] for g in data.group[quench]}
    for cell in sorted(cells):
        runs = sorted({g for g in data.group[quench] if g.rsplit(":", 1)[0] == cell})
        if len(runs) >= 3:
            k = max(1, int(round(val_fraction * len(runs))))
            for g in rng.choice(runs, size=k, replace=False):
                val |= data.group == g
        else:  # one or two runs: hold out blocks of FRAME_BLOCK consecutive frames
            for g in runs:
                pos = np.flatnonzero(data.group == g)
                blocks = np.arange(len(pos)) // FRAME_BLOCK
                nb = int(blocks.max()) + 1
                k = max(1, int(round(val_fraction * nb))) if nb >= 3 else 0
                chosen = rng.choice(nb, size=k, replace=False) if k else []
                val[pos[np.isin(blocks, chosen)]] = True
    if not val.any():  # too little to split whole units: hold out configurations instead
        k = max(1, int(round(val_fraction * len(val))))
        val[rng.choice(len(val), size=k, replace=False)] = True
    return {"train": np.flatnonzero(~val), "val": np.flatnonzero(val)}


def _features(model: DensityModel, Q: np.ndarray, chunk: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.features(torch.as_tensor(Q[i:i + chunk], dtype=torch.float32))
                          for i in range(0, len(Q), chunk)])


def train(data_paths, out, hidden=HIDDEN, epochs: int = 30, batch_size: int = 4096,
          lr: float = 2e-3, loss: str = "bce", huber_delta: float = 0.02, seed: int = 0,
          val_fraction: float = 0.1, threads: int | None = None, overwrite: bool = False,
          name: str | None = None, command: str | None = None, progress: bool = True,
          samples_per_epoch: int | None = None, boost: bool = True,
          init: str | None = None, kind: str = "density",
          components: int | None = None, pairs: bool = False) -> dict[str, Any]:
    """Train a :class:`DensityModel` (``kind="density"``) or a
    :class:`~cdwdata.ml.levels.LevelModel` (``kind="levels"``, ``components`` levels per site,
    ``pairs``: as two-level blocks); write ``out`` (.safetensors + .json); return the card.

    ``samples_per_epoch`` (default: every (configuration, label, site) of the training split
    once) caps the minibatch samples per epoch. ``boost`` draws half of every batch from the
    sites with a fractional density (importance sampling; the loss stays unbiased).
    """
    if loss not in LOSSES:
        raise ParameterError(f"loss={loss!r}: use one of {LOSSES}")
    if kind not in GC_KINDS:
        raise ParameterError(f"kind={kind!r}: use one of {GC_KINDS}")
    out_stem = output_path(out)
    if not overwrite and modelfile.exists(out_stem):
        raise ModelError(f"{out_stem} already exists: choose another --out or overwrite it")
    with torch_threads(threads):
        return _train(data_paths, out_stem, hidden, int(epochs), int(batch_size), float(lr),
                      loss, float(huber_delta), int(seed), float(val_fraction), overwrite,
                      name or out_stem.name, command, progress, samples_per_epoch, boost, init,
                      kind, components, pairs)


def make_model(kind: str, hidden, params, components: int | None = None,
               pairs: bool = False):
    """A fresh grand-canonical model of ``kind`` (see :data:`GC_KINDS`); ``pairs`` makes a
    level model of two-level blocks (:func:`cdwdata.ml.levels.pair_levels`)."""
    if kind == "levels":
        from cdwdata.ml.levels import COMPONENTS, LevelModel

        return LevelModel(hidden=hidden, components=components or COMPONENTS, params=params,
                          pairs=pairs)
    if pairs:
        raise ModelError("pairs=True is a level-model option (kind='levels')")
    return DensityModel(hidden=hidden, params=params)


def start_from(model, start, init) -> None:
    """Load the saved model ``start`` (path ``init``) into ``model``: the same layers, or a
    wider density network (net2net), or a level model whose levels are split in copies or
    become two-level blocks."""
    if start.kind != model.kind:
        raise ModelError(f"--init {init} is a {start.kind!r} model, not {model.kind!r}")
    pairs, start_pairs = getattr(model, "pairs", False), getattr(start, "pairs", False)
    if pairs and not start_pairs:
        model.pairs_from(start)
    elif start_pairs and not pairs:
        raise ModelError(f"--init {init} is a pair model; train it on with --pairs")
    elif start.sizes == model.sizes:
        model.load_weights(start.weights())
    elif model.kind == "density":  # a wider network of the same depth: the same function
        model.widen_from(start)
    elif start.sizes[:-1] == model.sizes[:-1] and not pairs:  # more levels: split in copies
        model.split_from(start)
    else:
        raise ModelError(f"--init {init}: layers {start.sizes}, this training asks for "
                         f"{model.sizes}")


def _train(data_paths, out_stem, hidden, epochs, batch_size, lr, loss, huber_delta, seed,
           val_fraction, overwrite, name, command, progress, samples_per_epoch, boost, init,
           kind, components, pairs):
    t0 = time.perf_counter()
    data = load(data_paths)
    sp = split(data, seed, val_fraction)
    torch.manual_seed(seed)
    model = make_model(kind, hidden, data.params, components, pairs)
    g = float(data.params.g)
    G = _features(model, data.Q)  # (S, L, L, F)
    S, L, _, F = G.shape
    K = data.n.shape[1]
    G = G.reshape(S, L * L, F)
    Y = torch.as_tensor(data.n.reshape(S, K, L * L), dtype=torch.float32)
    MU = torch.as_tensor(data.mu, dtype=torch.float32)
    TE = torch.as_tensor(data.T_e, dtype=torch.float32)
    tr = torch.as_tensor(sp["train"])
    va = torch.as_tensor(sp["val"])
    gen = torch.Generator().manual_seed(seed)

    def batch(idx_s, n_rows, generator=None):
        s = idx_s[torch.randint(len(idx_s), (n_rows,), generator=generator)]
        k = torch.randint(K, (n_rows,), generator=generator)
        i = torch.randint(L * L, (n_rows,), generator=generator)
        return (G[s, i], MU[s, k], TE[s, k]), Y[s, k, i]

    # Importance sampling: half of every batch comes from the (configuration, label, site)
    # triples with a fractional density, where all the difficulty is; the loss weights
    # p_uniform / p_mixture keep it an unbiased estimate of the plain mean over all triples.
    in_train = torch.zeros(S, dtype=torch.bool)
    in_train[torch.as_tensor(sp["train"])] = True
    frac = (Y > FRACTIONAL_SAMPLING[0]) & (Y < FRACTIONAL_SAMPLING[1]) & in_train[:, None, None]
    pool = torch.nonzero(frac)  # (P, 3): s, k, i
    n_all = int(in_train.sum()) * K * L * L
    p_frac = len(pool) / max(n_all, 1)

    def mixed_batch(idx_s, n_rows, generator):
        if not boost or len(pool) == 0:
            x, y = batch(idx_s, n_rows, generator)
            return x, y, None
        h = n_rows // 2
        x1, y1 = batch(idx_s, n_rows - h, generator)
        pick = pool[torch.randint(len(pool), (h,), generator=generator)]
        s, k, i = pick[:, 0], pick[:, 1], pick[:, 2]
        x2 = (G[s, i], MU[s, k], TE[s, k])
        x = tuple(torch.cat([a, b]) for a, b in zip(x1, x2, strict=True))
        y = torch.cat([y1, Y[s, k, i]])
        # mixture probability of each row relative to uniform sampling
        is_frac = (y > FRACTIONAL_SAMPLING[0]) & (y < FRACTIONAL_SAMPLING[1])
        ratio = torch.where(is_frac, 0.5 + 0.5 / p_frac, torch.full_like(y, 0.5))
        return x, y, 1.0 / ratio

    if init is not None:
        start_from(model, modelfile.load(init)[0], init)
    else:
        x0, _ = batch(tr, 200_000, gen)
        model.fit_normalization(*x0)
        del x0
    # fixed validation sample: every label of every validation configuration, all sites
    with torch.no_grad():
        sv, kv = torch.meshgrid(va, torch.arange(K), indexing="ij")
        sv, kv = sv.reshape(-1), kv.reshape(-1)
    n_train = len(tr) * K * L * L
    per_epoch = int(samples_per_epoch or n_train)
    steps = max(1, per_epoch // batch_size)
    opt = torch.optim.Adam(model.mlp.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps,
                                                pct_start=0.05, anneal_strategy="cos",
                                                final_div_factor=1e3)

    def loss_fn(x, y, w):
        lp, lm = model.log_occupation(*x)
        if loss == "bce":
            per = -(y * lp + (1.0 - y) * lm)
        elif loss == "huber":
            per = torch.nn.functional.huber_loss(lp.exp(), y, delta=huber_delta,
                                                 reduction="none")
        else:
            per = (lp.exp() - y) ** 2
        return per.mean() if w is None else (per * w).mean()

    def validate() -> dict[str, float]:
        model.eval()
        sq = ab = 0.0
        frac_sq, frac_n, count = 0.0, 0, 0
        with torch.no_grad():
            for j in range(0, len(sv), 64):
                s, k = sv[j:j + 64], kv[j:j + 64]
                lp, _ = model.log_occupation(G[s], MU[s, k], TE[s, k])
                d = (lp.exp() - Y[s, k]).double() * g
                sq += float((d * d).sum())
                ab += float(d.abs().sum())
                frac = (Y[s, k] > 0.05) & (Y[s, k] < 0.95)
                frac_sq += float((d[frac] ** 2).sum())
                frac_n += int(frac.sum())
                count += d.numel()
        model.train()
        return {"force_rmse": math.sqrt(sq / max(count, 1)), "force_mae": ab / max(count, 1),
                "force_rmse_fractional": math.sqrt(frac_sq / max(frac_n, 1))}

    history: list[dict[str, float]] = []
    best, best_state, best_epoch = math.inf, None, -1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=f"train {name}", unit="epoch")
    model.train()
    for epoch in range(epochs):
        te = time.perf_counter()
        total = 0.0
        for _ in range(steps):
            x, y, w = mixed_batch(tr, batch_size, gen)
            lo = loss_fn(x, y, w)
            opt.zero_grad(set_to_none=True)
            lo.backward()
            opt.step()
            sched.step()
            total += float(lo.detach())
        v = validate()
        v.update({"epoch": epoch, "train_loss": total / steps,
                  "seconds": time.perf_counter() - te})
        history.append(v)
        if v["force_rmse"] < best:
            best, best_epoch = v["force_rmse"], epoch
            best_state = {k: t.clone() for k, t in model.weights().items()}
        if bar is not None:
            bar.set_postfix(val_rmse=f"{v['force_rmse']:.4f}", best=f"{best:.4f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    model.load_weights(best_state)
    model.eval()
    card = {
        "name": name, "params": data.params.to_dict(),
        "filling": 0.5,
        "grand_canonical": True,
        "filling_range": [float(np.nanmin(_label_fillings(data))),
                          float(np.nanmax(_label_fillings(data)))],
        "temperature_range": [float(data.T_e.min()), float(data.T_e.max())],
        "mu_range": [float(data.mu.min()), float(data.mu.max())],
        "mu_by_filling": _mu_table(data),
        "training": {
            "data": list(data.paths), "configurations": int(S), "labels_per_configuration": K,
            "train_configurations": int(len(tr)), "val_configurations": int(len(va)),
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": "one-cycle cosine",
            "loss": loss, "huber_delta": huber_delta if loss == "huber" else None,
            "seed": seed, "samples_per_epoch": steps * batch_size, "init": init,
            "importance_sampling": bool(boost), "fractional_share": p_frac,
            "best_epoch": best_epoch, "threads": torch.get_num_threads(),
            "wall_seconds": time.perf_counter() - t0, "command": command,
        },
        "metrics": {"validation": history[best_epoch], "history": history},
        "inference": ({"precisions": list(PRECISIONS), "default_precision": "float32",
                       "note": "bf16 = hidden-to-hidden GEMMs in bfloat16; the first layer "
                               "(carries mu) and the output stay float32"}
                      if kind == "density" else
                      {"precisions": list(PRECISIONS), "default_precision": "float32",
                       "note": "one network evaluation per configuration; the mu solve is "
                               "a Fermi sum over the stored levels; bf16 = every layer but "
                               "the last in bfloat16 (the input rounded to bf16), the last "
                               "layer, the bare level -g Q_i and the Fermi sums float32"}),
        "cdwdata_version": __version__, "created": modelfile.now(),
    }
    return modelfile.save(model, out_stem, card, overwrite=overwrite)


def _label_fillings(data: GCData) -> np.ndarray:
    """Filling of every label (sum of the exact densities / N)."""
    return data.n.mean(axis=(-2, -1))


def _mu_table(data: GCData, width: float = 0.02) -> list[list[float]]:
    """Median label mu in filling bins: the starting point of the filling solve."""
    fl = _label_fillings(data).ravel()
    mu = data.mu.ravel()
    edges = np.arange(0.0, 1.0 + width, width)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (fl >= a) & (fl < b)
        if m.sum() >= 5:
            out.append([float(0.5 * (a + b)), float(np.median(mu[m]))])
    return out
