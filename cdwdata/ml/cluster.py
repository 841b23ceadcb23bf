"""Exact open-cluster levels for the sites where a level model is least sure.

A level model (:mod:`cdwdata.ml.levels`) stores per site the local density of states as
``K`` weighted levels. Its error is concentrated at the few sites with a sharp level near
mu, where several nearly degenerate local levels of a rough landscape cross (measured:
``benchmarks/README.md``, "What a network would have to do"). There the density is, to
~1e-3, that of the Hamiltonian cut to a small open cluster around the site; this module
diagonalises that cluster for exactly those sites and hands back its levels and the site's
weights, which replace the network's in the same Fermi sums.

The cluster of radius ``r2`` (all sites with ``|r - r_i|^2 <= r2``, ``r2 <= 13``) lies
inside the descriptor's neighbourhood. Its on-site energies ``-g Q_j`` are rebuilt from the
descriptor itself (the IR map is orthonormal: ``v = M^T G`` are the neighbourhood values in
the site's standard frame), so the refined density is a function of the D4-invariant
features (invariant up to the rounding of a matrix product, as the network's output is) and
exactly local at fixed mu and T.

Which sites: those where the network's levels within ``window_T`` electron temperatures of the
reference mu carry a total weight above ``weight``. At fixed ``(mu, T)`` the model stays a local map; the choice
of sites depends on the reference mu (the previous Langevin step's, or the network's own
solve), which moves by 1e-3..1e-2 per step against a window of a few T.

The selection only needs to look at sites with a large enough slope: inside the window every
level has ``s (1 - s) > s_w (1 - s_w)`` (``s_w`` the occupation at the window's edge), so
a site whose window weight exceeds ``weight`` has ``T dn/dmu > weight s_w (1 - s_w)``. With
the slope at the reference mu at hand (the warm mu solve computes it first), the selection
scans those few sites (:attr:`ClusterLevels.slope_bound`) and chooses exactly the sites a
scan of all would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from cdwdata.errors import ModelError

#: Rows per chunk of the site selection (a (chunk, K) block stays in cache).
SELECT_CHUNK = 2048
#: Clusters per thread below which a CPU diagonalisation stays on one thread.
EIGH_PER_THREAD = 128


def batched_eigh(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of small symmetric matrices (n, M, M). torch's CPU
    eigh solves a batch one matrix after another on one core; here, with several intra-op
    threads (``torch.get_num_threads()``, e.g. 2 in a single process on 2 cores; 1 in a Dask
    worker), a large batch is split and its parts solved at once, one in this thread and
    the others in short-lived threads (a kept pool's threads were measured to slow every
    later step of the process 2x). Each matrix goes through the same LAPACK call either way;
    the bits equal the one-thread path's with 2 threads on 2 cores, while with more threads
    than cores MKL was measured to round some matrices differently (~1e-15)."""
    k = min(torch.get_num_threads(), H.shape[0] // EIGH_PER_THREAD)
    if H.device.type != "cpu" or k < 2:
        return torch.linalg.eigh(H)
    import threading

    parts = H.chunk(k)
    out: list = [None] * k

    def solve(i: int) -> None:
        try:
            out[i] = torch.linalg.eigh(parts[i])
        except BaseException as err:  # noqa: BLE001 - raised again in the calling thread
            out[i] = err

    threads = [threading.Thread(target=solve, args=(i,), name=f"cdw-eigh-{i}")
               for i in range(1, k)]
    for t in threads:
        t.start()
    solve(0)
    for t in threads:
        t.join()
    for o in out:
        if isinstance(o, BaseException):
            raise o
    return torch.cat([e for e, _ in out]), torch.cat([v for _, v in out])


@dataclass(frozen=True)
class ClusterSpec:
    """How a level model is refined: cluster radius squared ``r2`` (lattice units, at most
    13, the descriptor's cutoff), and the selection: sites whose network levels within
    ``window_T * T`` of mu carry more than ``weight``."""

    r2: float = 8.0
    window_T: float = 3.0
    weight: float = 0.01

    def __post_init__(self) -> None:
        if not 1.0 <= self.r2 <= 13.0:
            raise ModelError(f"cluster r2 must lie in 1..13 (the descriptor's cutoff), "
                             f"got {self.r2}")
        if not self.window_T > 0.0:
            raise ModelError(f"cluster window must be positive, got {self.window_T}")
        if not 0.0 <= self.weight < 1.0:
            raise ModelError(f"cluster weight threshold must lie in [0, 1), got {self.weight}")

    @classmethod
    def from_card(cls, entry) -> ClusterSpec | None:
        """The spec of a card's ``inference.cluster`` entry (None when absent)."""
        if not entry:
            return None
        return cls(**{k: float(entry[k]) for k in ("r2", "window_T", "weight") if k in entry})

    def to_dict(self) -> dict:
        return asdict(self)

    def card_entry(self) -> dict:
        """The card's ``inference.cluster`` entry (the spec and its number of sites)."""
        return {**self.to_dict(), "sites": self.sites}

    @property
    def sites(self) -> int:
        """Number of sites in the cluster."""
        return len(_cluster_rows(self.r2))


@lru_cache(maxsize=8)
def _cluster_rows(r2: float) -> tuple[int, ...]:
    """Indices into :data:`cdwdata.descriptor.NEIGHBOUR_OFFSETS` of the sites within r2."""
    from cdwdata.descriptor import NEIGHBOUR_OFFSETS

    d2 = (NEIGHBOUR_OFFSETS ** 2).sum(1)
    return tuple(int(k) for k in np.nonzero(d2 <= r2 + 1e-9)[0])


@lru_cache(maxsize=8)
def _geometry(r2: float, t: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``(R, H0, centre)``: R (M, 45) rebuilds the cluster's values from the features,
    H0 (M, M) is the open-boundary hopping, ``centre`` the site's row."""
    from cdwdata.descriptor import NEIGHBOUR_OFFSETS, ir_matrix

    rows = list(_cluster_rows(r2))
    R = ir_matrix().T[rows]  # v = M^T G
    offs = [tuple(NEIGHBOUR_OFFSETS[k]) for k in rows]
    where = {o: i for i, o in enumerate(offs)}
    H0 = np.zeros((len(rows), len(rows)))
    for (dx, dy), i in where.items():
        for ex, ey in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            j = where.get((dx + ex, dy + ey))
            if j is not None:
                H0[i, j] = -t
    return R, H0, where[(0, 0)]


class ClusterLevels:
    """Levels and site weights of the open cluster around each site, from its features."""

    def __init__(self, spec: ClusterSpec, g: float, t: float, T: float, dtype=torch.float32,
                 device="cpu") -> None:
        self.spec = spec
        self.g = float(g)
        #: half-width of the selection window around mu (energy units)
        self.window = spec.window_T * float(T)
        R, H0, self.centre = _geometry(float(spec.r2), float(t))
        kw = {"dtype": dtype, "device": device}
        # the on-site energies -g v straight from the features
        self.R = torch.as_tensor(-self.g * R, **kw).T.contiguous()  # (45, M)
        self.H0 = torch.as_tensor(H0, **kw)
        self.M = H0.shape[0]
        #: sites refined by the last :meth:`refine` (all configurations together), and
        #: their rows in the flat (configuration, site) order (:attr:`last_rows`: per
        #: configuration)
        self.last_count = 0
        self.last_flat = torch.zeros(0, dtype=torch.long)
        self._sites = 1
        #: every selected site has dn/dmu above this at the reference mu (half the bound of
        #: the module docstring: a margin for rounding)
        x = float(spec.window_T)
        self.slope_bound = 0.5 * spec.weight * math.exp(-x) / (1.0 + math.exp(-x)) ** 2 / T
        self._scratch = None
        self._configurations = 0

    def levels(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, e)`` (n, M) of feature rows ``G`` (n, 45): the cluster's eigenvalues and the
        site's weight in each (they sum to 1)."""
        H = self.H0.expand(G.shape[0], self.M, self.M).clone()
        H.diagonal(dim1=1, dim2=2).copy_(G.to(self.R.dtype) @ self.R)
        e, V = batched_eigh(H)
        return V[:, self.centre, :].square(), e

    @property
    def last_rows(self) -> list[torch.Tensor]:
        """The rows refined by the last :meth:`refine`, one tensor per configuration."""
        from cdwdata.ml.inference import per_configuration

        return per_configuration(self.last_flat, self._configurations, self._sites)

    def select(self, w: torch.Tensor, e: torch.Tensor, mu) -> torch.Tensor:
        """Row indices whose levels within the window of ``mu`` (a number, or one per row:
        (n,) in ``e``'s dtype) weigh more than the threshold (``w``, ``e``: (n, K)); in
        cache-sized chunks with kept scratch buffers (whole (n, K) temporaries: 3x slower at
        200x200)."""
        n, K = e.shape
        C = max(1, min(SELECT_CHUNK, n))
        if self._scratch is None or self._scratch[0].shape[0] < C \
                or self._scratch[0].shape[1] != K or self._scratch[0].dtype != e.dtype \
                or self._scratch[0].device != e.device or self._scratch[2].shape[0] < n:
            self._scratch = (torch.empty(C, K, dtype=e.dtype, device=e.device),
                             torch.empty(C, K, dtype=torch.bool, device=e.device),
                             torch.empty(max(n, C), dtype=e.dtype, device=e.device))
        d, inside, near = self._scratch
        per_row = isinstance(mu, torch.Tensor) and mu.ndim == 1
        for i in range(0, n, C):
            c = min(C, n - i)
            torch.sub(e[i:i + c], mu[i:i + c, None] if per_row else mu, out=d[:c]).abs_()
            torch.lt(d[:c], self.window, out=inside[:c])
            torch.mul(w[i:i + c], inside[:c], out=d[:c])
            torch.sum(d[:c], -1, out=near[i:i + c])
        return torch.nonzero(near[:n] > self.spec.weight).reshape(-1)

    def refine(self, G: torch.Tensor, w: torch.Tensor, e: torch.Tensor, mu,
               candidates: torch.Tensor | None = None) -> int:
        """Overwrite, in place, the levels ``e`` and weights ``w`` (B, S, K) of the selected
        sites of every configuration with their cluster's (padded with empty levels);
        ``G`` (B, S, 45) are the features, ``mu`` one reference per configuration;
        ``candidates``: the rows that can be selected (those with a slope above
        :attr:`slope_bound` at ``mu``) as flat (configuration, site) indices, else every
        row. All configurations are selected and diagonalised
        together (one selection, one batched eigh). Returns the number of sites refined
        (their rows: :attr:`last_flat`, :attr:`last_rows`)."""
        B, S, K = w.shape
        pad = K - self.M  # the plan has checked that the levels suffice
        mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
        mu = (mu.expand(B) if mu.numel() == 1 else mu).to(device=e.device, dtype=e.dtype)
        wf, ef = w.reshape(B * S, K), e.reshape(B * S, K)  # views: written through
        if candidates is None:
            rows = self.select(wf, ef, mu.repeat_interleave(S))
        else:
            rows = candidates[self.select(wf[candidates], ef[candidates],
                                          mu[torch.div(candidates, S, rounding_mode="floor")])]
        self.last_flat, self._sites, self._configurations = rows, S, B
        count = int(rows.numel())
        self.last_count = count
        if count:
            cw, ce = self.levels(G.reshape(B * S, G.shape[-1])[rows])
            # empty levels sit at the cluster's lowest: weight 0, no effect on any sum
            wf[rows] = torch.nn.functional.pad(cw, (0, pad)).to(w.dtype)
            ef[rows] = torch.cat([ce, ce[:, :1].expand(-1, pad)], dim=1).to(e.dtype)
        return count


def with_cluster(model, out, spec: ClusterSpec, overwrite: bool = False) -> dict:
    """Write a copy of the level model ``model`` (shipped name or path) to ``out`` with
    ``spec`` in its card (``inference.cluster``) and its origin in ``derived_from``; returns
    the new card."""
    import copy

    from cdwdata.ml import modelfile
    from cdwdata.ml.forcefield import model_file

    src = model_file(model)
    net, card, card_hash = modelfile.load(src)
    if card["kind"] != "levels":
        raise ModelError(f"{model!r} is a {card['kind']!r} model; only level models can be "
                         f"refined with a cluster")
    K = int(card["architecture"]["components"])
    if spec.sites > K:
        raise ModelError(f"a {spec.sites}-site cluster needs at least {spec.sites} levels per "
                         f"site; {model!r} has {K}")
    new = {k: copy.deepcopy(v) for k, v in card.items() if k not in (
        "format", "name", "kind", "architecture", "weights_sha256", "weights_file",
        "weight_shapes", "created")}
    inference = new.setdefault("inference", {})
    inference["cluster"] = spec.card_entry()
    inference["note"] = (inference.get("note", "") + "; " if inference.get("note") else "") + (
        "at the sites whose levels within cluster.window_T electron temperatures of mu weigh "
        "more than cluster.weight, the levels are those of the open cluster "
        "|r - r_i|^2 <= cluster.r2 (cdwdata.ml.cluster), diagonalised exactly")
    new["derived_from"] = {"name": card["name"], "card_sha256": card_hash}
    return modelfile.save(net, out, new, overwrite=overwrite)
