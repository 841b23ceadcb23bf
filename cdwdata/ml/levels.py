"""Grand-canonical density from learned local levels: n_i(mu, T) as a Fermi sum.

The exact density at a fixed chemical potential is a Fermi-function average of the local
density of states, ``n_i = sum_m |psi_m(i)|^2 f((eps_m - mu) / T)``, and the local density of
states depends on the configuration alone (neither on mu nor on T). :class:`LevelModel`
learns it as ``K`` weighted levels per site,

    n_i(mu, T) = sum_k w_k(i) sigma((mu - e_k(i)) / T),   w_k >= 0,  sum_k w_k = 1,
    e_k(i) = -g Q_i + D_k(i),

with ``(w, D)`` the output of one MLP of the D4-invariant descriptor of the neighbourhood made
blind to a uniform shift of Q (``G - Q_i a``, :func:`cdwdata.ml.gcmodel.shift_direction`).
Consequences, exact by construction:

* only ``H - mu`` matters: ``n(Q + c; mu) = n(Q; mu + g c)``;
* ``dn_i/dmu = sum_k w_k s_k (1 - s_k) / T >= 0`` at every site, so the filling equation
  has exactly one root;
* mu and T enter only through the Fermi functions: one network evaluation per configuration
  serves every mu of the filling solve, and the temperature dependence has the exact form;
* ``0 <= n_i <= 1``, ``n -> 1`` as ``mu -> inf`` and ``0`` as ``mu -> -inf``.

The sharp part of the physics (a level crossing mu within ~T) sits in the sigmoid with the
true T, so the network only has to place smooth level energies; at equal training it fits
early-quench densities much better than a network that sees mu and T as inputs
(``benchmarks/README.md``, "levels").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cdwdata.errors import ModelError
from cdwdata.ml.gcmodel import ACTIVATION, HIDDEN, check_weights, shift_direction
from cdwdata.ml.model import MLP, Normalizer

KIND = "levels"
#: Sites per chunk of a CPU evaluation of a level model, for the network and the Fermi
#: sums: a chunk's (sites, levels) scratch stays in a 1 MiB L2 cache. Measured per 10^4
#: sites at 100x100 / 400x400 with 32 levels (benchmarks/README.md): Fermi sum 0.71 / 0.81
#: ms with 2048, 0.66 / 0.72 with 4096; the network the same within 3%.
LEVEL_CHUNK = 4096
#: Default number of levels per site.
COMPONENTS = 16
#: A pair model made from a level model (:meth:`LevelModel.pairs_from`): the partner level
#: starts this far from each level, coupled to it by this much (it takes a weight of about
#: (V / gap)^2 / 4, ~1e-4 of the level's, and shifts it by about V^2 / gap).
PAIR_START = (2.0, 0.05)


def pair_levels(h: torch.Tensor, Q0: torch.Tensor, g: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w, e)`` (..., 2P) of ``P`` two-level blocks per site.

    ``h`` (..., 4P) holds per block a weight logit, the energies ``a``, ``b`` (relative to the
    bare level ``-g Q_i``) and the coupling ``V`` of ``[[a, V], [V, b]]``; the site's
    orbital is ``a``. Eigenvalues ``m +- r`` (``m = (a + b) / 2``, ``d = (a - b) / 2``,
    ``r = sqrt(d^2 + V^2)``) carry the weights ``(1 +- d / r) / 2`` of the site's orbital:
    an avoided crossing, where the weight moves from one level to the other within ``|V|``,
    is a smooth function of ``(a, b, V)``. The smaller weight is computed as
    ``V^2 / (2 r (r + |d|))`` (no cancellation).
    """
    P = h.shape[-1] // 4
    logit, a, b, V = h[..., :P], h[..., P:2 * P], h[..., 2 * P:3 * P], h[..., 3 * P:]
    m = 0.5 * (a + b) - g * Q0
    d = 0.5 * (a - b)
    v2 = V * V
    r = torch.sqrt(d * d + v2 + 1e-12)
    den = 2.0 * r * (r + d.abs())
    log_small = torch.log(v2 + 1e-30) - torch.log(den)
    log_big = torch.log1p(-(v2 / den).clamp(max=0.5))
    up = d >= 0  # the upper level m + r is mostly the site's orbital when a >= b
    log_up = torch.where(up, log_big, log_small)
    log_dn = torch.where(up, log_small, log_big)
    lw = torch.log_softmax(logit, dim=-1)
    return torch.cat([lw + log_up, lw + log_dn], dim=-1), torch.cat([m + r, m - r], dim=-1)


class LevelModel(nn.Module):
    """Descriptor -> MLP -> ``K`` (weight, level) pairs per site -> Fermi sum.

    Parameters
    ----------
    hidden : sequence of int
        Hidden widths (SiLU); input ``n_features``, output ``2 K``.
    components : int
        Levels per site ``K``.
    params : HolsteinParams, optional
        ``g`` places the bare level ``-g Q_i``; ``g``, ``k``, ``kappa`` are kept as buffers
        and checked against the card on loading.
    """

    kind = KIND
    target = "electronic"

    def __init__(self, hidden: Sequence[int] = HIDDEN, components: int = COMPONENTS,
                 params=None, pairs: bool = False) -> None:
        super().__init__()
        from cdwdata import descriptor
        from cdwdata.params import HolsteinParams

        p = params or HolsteinParams()
        if p.g == 0:
            raise ModelError("a level model needs g != 0 (the bare level is -g Q_i)")
        if int(components) < 1:
            raise ModelError(f"components={components} must be >= 1")
        if pairs and int(components) % 2:
            raise ModelError(f"components={components}: a pair model needs an even number")
        self.components = int(components)
        self.pairs = bool(pairs)
        self.n_features = int(descriptor.N_FEATURES)
        self.r_cut = float(descriptor.R_CUT)
        self.descriptor = descriptor.Descriptor()
        self.activation = ACTIVATION
        self.input_norm = Normalizer(self.n_features)
        self.mlp = MLP([self.n_features, *(int(h) for h in hidden), 2 * self.components],
                       ACTIVATION)
        with torch.no_grad():  # levels start spread over the band, small and smooth offsets
            last = self.mlp[-1]
            n = self.components // 2 if self.pairs else self.components
            last.weight[n:] *= 0.1
            last.bias[n:] = torch.linspace(-3.0, 3.0, last.bias.numel() - n)
            if self.pairs:  # couplings start small and positive
                last.bias[3 * n:] = PAIR_START[1]
        self.register_buffer("coupling", torch.tensor([p.g, p.k, p.kappa], dtype=torch.float64))
        self.register_buffer("shift", shift_direction())

    @property
    def sizes(self) -> list[int]:
        return self.mlp.sizes

    def architecture(self) -> dict:
        return {"kind": self.kind, "layers": self.sizes, "activation": self.activation,
                "target": self.target, "descriptor": "cdwdata.descriptor.Descriptor",
                "n_features": self.n_features, "r_cut": self.r_cut,
                "components": self.components, "pairs": self.pairs,
                "inputs": "descriptor(Q) - Q_i a (blind to a uniform shift)",
                "output": ("n_i = sum_k w_k sigmoid((mu - e_k) / T), the levels e_k and weights "
                           "w_k of K/2 two-level blocks [[a_p, V_p], [V_p, b_p]] (site on a_p)"
                           if self.pairs else
                           "n_i = sum_k w_k sigmoid((mu + g Q_i - D_k) / T)")}

    # --- pieces ---------------------------------------------------------------------------
    def features(self, Q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Descriptor of ``Q`` (..., L, L, n_features)."""
        return self.descriptor(Q, out)

    def shift_free(self, G: torch.Tensor) -> torch.Tensor:
        """``G - Q_i a``: the features with the uniform part of Q removed (feature 0 is Q_i)."""
        return G - G[..., :1] * self.shift.to(G.dtype)

    def levels(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log w, e)``, both ``(..., K)``: log weights (log-softmax) and level energies."""
        h = self.mlp(self.input_norm(self.shift_free(G)))
        return self.head(h, G[..., :1])

    def head(self, h: torch.Tensor, Q0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log w, e)`` from the network output ``h`` (..., 2 K) and the centre ``Q_i``
        (..., 1)."""
        g = float(self.coupling[0])
        if self.pairs:
            return pair_levels(h, Q0, g)
        K = self.components
        return torch.log_softmax(h[..., :K], dim=-1), h[..., K:] - g * Q0

    def log_occupation(self, G: torch.Tensor, mu, T) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log n, log(1 - n))`` at ``mu``, ``T`` (broadcast against ``G.shape[:-1]``),
        computed stably (the training loss uses them)."""
        logw, e = self.levels(G)
        z = (_expand(mu, G) - e) / _expand(T, G)
        lp = torch.logsumexp(logw + nn.functional.logsigmoid(z), dim=-1)
        lm = torch.logsumexp(logw + nn.functional.logsigmoid(-z), dim=-1)
        return lp, lm

    def site_density(self, G: torch.Tensor, mu, T) -> torch.Tensor:
        """``n_i`` for features ``G`` at ``mu``, ``T`` (one per batch entry, or broadcastable
        to ``G.shape[:-1]``)."""
        logw, e = self.levels(G)
        return fermi_sum(logw.exp(), e, _expand(mu, G), _expand(T, G))[0]

    def density_at(self, Q: torch.Tensor, mu, T) -> torch.Tensor:
        """``n_i(Q; mu, T)``, ``(..., L, L)``."""
        return self.site_density(self.features(Q), mu, T)

    # --- weights ---------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("descriptor.")}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        check_weights(self, tensors)

    def split_from(self, smaller: LevelModel, spread: float = 0.01) -> None:
        """Start from ``smaller`` (same hidden layers, ``K / m`` levels) with each of its
        levels split into ``m`` copies of weight ``w_k / m``, spread symmetrically over
        ``+-spread`` around ``D_k`` (the split changes n only at second order,
        ``|dn| <= w spread^2 |sigma''| / 2``, and lets the copies move apart in training)."""
        K, k = self.components, smaller.components
        if self.pairs or smaller.pairs:
            raise ModelError("splitting levels works on plain level models, not pair models")
        if self.sizes[:-1] != smaller.sizes[:-1] or K % k:
            raise ModelError(f"cannot split a model with layers {smaller.sizes} into layers "
                             f"{self.sizes}: same hidden layers and a multiple of its "
                             f"{k} levels needed")
        m = K // k
        a, b = self._take_hidden(smaller)
        with torch.no_grad():
            a.weight[:K] = b.weight[:k].repeat_interleave(m, 0)
            a.bias[:K] = b.bias[:k].repeat_interleave(m, 0)
            a.weight[K:] = b.weight[k:].repeat_interleave(m, 0)
            offsets = torch.linspace(-spread, spread, m) if m > 1 else torch.zeros(1)
            a.bias[K:] = b.bias[k:].repeat_interleave(m, 0) + offsets.repeat(k)

    def pairs_from(self, plain: LevelModel) -> None:
        """Start this pair model (``2 K`` levels) from the plain level model ``plain``
        (``K`` levels, same hidden layers): each level becomes the site orbital of a block
        whose partner starts :data:`PAIR_START` away, above and below in turn, weakly
        coupled. The function changes by about ``V^2 / gap`` in the level energies."""
        P = plain.components
        if not self.pairs or plain.pairs or self.sizes[:-1] != plain.sizes[:-1] \
                or self.components != 2 * P:
            raise ModelError(f"a pair model with {2 * P} levels and hidden layers "
                             f"{plain.sizes[1:-1]} starts from a plain level model with {P} "
                             f"levels and the same hidden layers (got {plain.sizes}, "
                             f"pairs={plain.pairs})")
        gap, V = PAIR_START
        a, b = self._take_hidden(plain)
        with torch.no_grad():
            a.weight[:2 * P] = b.weight  # logits, then the site levels a_p = D_k
            a.bias[:2 * P] = b.bias
            a.weight[2 * P:3 * P] = b.weight[P:]
            sign = torch.tensor([1.0, -1.0]).repeat((P + 1) // 2)[:P]
            a.bias[2 * P:3 * P] = b.bias[P:] + gap * sign
            a.weight[3 * P:] = 0.0
            a.bias[3 * P:] = V

    def _take_hidden(self, other: LevelModel) -> tuple[nn.Linear, nn.Linear]:
        """Copy ``other``'s input statistics and every layer but the last (the caller has
        checked the widths); return this model's and ``other``'s output layers."""
        if not torch.equal(self.coupling, other.coupling):
            raise ModelError("cannot start from a model made for other (g, k, kappa)")
        mine = [x for x in self.mlp if isinstance(x, nn.Linear)]
        theirs = [x for x in other.mlp if isinstance(x, nn.Linear)]
        with torch.no_grad():
            for a, b in zip(mine[:-1], theirs[:-1], strict=True):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
        self.input_norm.load_state_dict(other.input_norm.state_dict())
        return mine[-1], theirs[-1]

    def fit_normalization(self, G: torch.Tensor, mu: torch.Tensor, T: torch.Tensor) -> None:
        """Input statistics from sample rows ``G (N, F)`` (mu and T are not inputs)."""
        x = self.shift_free(G).double()
        self.input_norm.set(x.mean(0), x.std(0))


def _expand(x, G: torch.Tensor) -> torch.Tensor:
    """A scalar, per-configuration ``(B,)`` or per-site value as ``(..., 1)`` against the
    site shape ``G.shape[:-1]``."""
    x = torch.as_tensor(x, dtype=G.dtype, device=G.device)
    sites = G.ndim - 1
    x = x.reshape(*x.shape, *([1] * (sites - x.ndim)))
    return x.unsqueeze(-1)


def fermi_sum(w: torch.Tensor, e: torch.Tensor, mu: torch.Tensor, T: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, dn/dmu)`` of levels ``e`` with weights ``w`` (..., K) at ``mu``, ``T``
    (broadcastable, trailing axis 1)."""
    s = torch.sigmoid((mu - e) / T)
    n = (w * s).sum(-1).clamp_(0.0, 1.0)  # sum w = 1 up to rounding
    dn = (w * s * (1.0 - s)).sum(-1) / T.squeeze(-1)
    return n, dn


class LevelPlan:
    """The filling solve's view of a :class:`LevelModel` (same interface as
    :class:`cdwdata.ml.inference.DensityPlan`): :meth:`bind` evaluates the network once per
    configuration; every later density at any mu is a Fermi sum over the stored levels.

    ``evaluations`` counts network evaluations (whole lattices); the Fermi sums of the solve
    are not network evaluations.
    """

    def __init__(self, model: LevelModel, T: float, precision: str = "float32",
                 dtype: torch.dtype = torch.float32, device="cpu", cluster=None,
                 compile: bool = False):
        from cdwdata.ml.options import check_precision

        check_precision(precision, dtype)
        self.precision = precision
        self.model = model
        self.T = float(T)
        self.dtype = dtype
        self.device = torch.device(device)
        self.evaluations = 0.0
        self.chunk = LEVEL_CHUNK if self.device.type == "cpu" else None
        self.w: torch.Tensor | None = None
        self.e: torch.Tensor | None = None
        self._G = None  # the descriptor's workspace
        self._fermi: list[torch.Tensor] | None = None
        self._near: dict[str, list[torch.Tensor]] = {}
        self._fold()
        self._act: dict[int, dict] = {}
        #: exact open-cluster levels at the uncertain sites
        #: (:class:`cdwdata.ml.cluster.ClusterLevels`), or None
        self.cluster = cluster
        if cluster is not None and cluster.M > model.components:
            raise ModelError(f"a {cluster.M}-site cluster needs at least {cluster.M} levels "
                             f"per site; the model has {model.components}")
        #: torch.compile'd network and whole-lattice Fermi sum
        #: (:class:`cdwdata.ml.compiled.CompiledLevels`), or None (eager)
        self.compiled = None
        if compile:
            from cdwdata.ml.compiled import CompiledLevels

            self.compiled = CompiledLevels(self)

    def _fold(self) -> None:
        """The network as plain matrices. The input normalisation and the removal of the
        uniform shift are linear, so they fold exactly into the first layer:
        ``norm(G - G_0 a) W1^T + b1 = G W1' + b1'`` with ``W1' = P diag(1/std) W1^T``,
        ``P = I - e_0 a^T`` and ``b1' = b1 - (mean / std) W1^T``. With bf16 every layer but
        the last is bfloat16 (inputs rounded to bf16 too); the last layer and the bare level
        ``-g Q_i`` stay in the compute dtype (benchmarks/README.md: "bf16 first layer")."""
        m = self.model
        lin = [x for x in m.mlp if isinstance(x, nn.Linear)]
        kw = {"dtype": torch.float64, "device": self.device}
        mean = m.input_norm.mean.to(**kw)
        std = m.input_norm.std.to(**kw)
        W1 = lin[0].weight.detach().to(**kw).T  # (F, H1)
        P = torch.eye(m.n_features, **kw)
        P[0] -= m.shift.to(**kw)
        fold = {"dtype": self.dtype, "device": self.device}
        hid = torch.bfloat16 if self.precision == "bf16" else self.dtype
        self.W1 = (P @ (W1 / std[:, None])).to(dtype=hid, device=self.device).contiguous()
        self.b1 = (lin[0].bias.detach().to(**kw) - (mean / std) @ W1).to(dtype=hid,
                                                                          device=self.device)
        self.layers = [(x.weight.detach().T.contiguous().to(dtype=hid, device=self.device),
                        x.bias.detach().to(dtype=hid, device=self.device)) for x in lin[1:-1]]
        self.hidden_dtype = hid
        self.Wo = lin[-1].weight.detach().T.contiguous().to(**fold)
        self.bo = lin[-1].bias.detach().to(**fold)
        self.g = float(m.coupling[0])

    def feature_buffer(self, shape):
        """The descriptor's kept :class:`~cdwdata.descriptor.Workspace` for configurations
        of ``shape`` (..., L, L) (made anew when the shape changes)."""
        from cdwdata.descriptor import Workspace

        self._G = Workspace.reuse(self._G, shape, self.dtype, self.device)
        return self._G

    def bind(self, G: torch.Tensor) -> LevelPlan:
        """Evaluate the network on the features ``G (B, ..., F)`` (in chunks of sites on the
        CPU, which keeps the activations in cache: 1.5x faster at 200x200) into kept
        buffers of the weights and levels."""
        self.lattice_shape = tuple(G.shape[1:-1])
        B, F = G.shape[0], G.shape[-1]
        rows = G.reshape(B, -1, F)
        S, K = rows.shape[1], self.model.components
        want = (B, *self.lattice_shape, K)
        if self.compiled is not None:  # one fused call for every site of every configuration
            cw, ce = self.compiled.levels(rows.reshape(B * S, F))
            self.w, self.e = cw.view(want), ce.view(want)
        else:
            self._bind_eager(G, rows, want)
        self.evaluations += 1
        self._rows = rows
        return self

    def _bind_eager(self, G: torch.Tensor, rows: torch.Tensor, want: tuple) -> None:
        """:meth:`bind` without compiled kernels, into the kept buffers ``w``, ``e``
        (``rows``: ``G`` as (B, S, F))."""
        B, S, F = rows.shape
        K = want[-1]
        if self.w is None or tuple(self.w.shape) != want or self.w.dtype != rows.dtype:
            self.w = torch.empty(want, dtype=rows.dtype, device=rows.device)
            self.e = torch.empty(want, dtype=rows.dtype, device=rows.device)
        w, e = self.w.view(B, S, K), self.e.view(B, S, K)
        low = None  # reduced-precision input, converted once from the workspace's planes
        if self.hidden_dtype != self.dtype and self._G is not None and self._G.holds(G):
            low = self._G.converted(self.hidden_dtype).reshape(B, -1, F)
        if self.chunk is None:  # a GPU: every site of every configuration in one call
            self._levels(rows.reshape(B * S, F), w.reshape(B * S, K), e.reshape(B * S, K),
                         None if low is None else low.reshape(B * S, F))
        else:
            C = self.chunk
            for b in range(B):
                for i in range(0, S, C):
                    self._levels(rows[b, i:i + C], w[b, i:i + C], e[b, i:i + C],
                                 None if low is None else low[b, i:i + C])

    def refine(self, mu) -> int:
        """Replace the network's levels by the exact open cluster's at the sites the
        cluster spec selects around ``mu`` (one per configuration); returns how many.
        A no-op without a cluster spec."""
        if self.cluster is None:
            return 0
        if self.w is None:
            raise ModelError("LevelPlan.bind(G) must come first")
        B, K = self.w.shape[0], self.w.shape[-1]
        return self.cluster.refine(self._rows, self.w.view(B, -1, K), self.e.view(B, -1, K),
                                   mu)

    def refined_density_and_slope(self, mu) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`refine` at ``mu`` followed by :meth:`density_and_slope` at ``mu``, with the
        selection restricted to the sites whose slope allows it (the cluster's
        :attr:`~cdwdata.ml.cluster.ClusterLevels.slope_bound`): one Fermi sum of the
        network's levels, then the refined sites' again. Same sites, same numbers."""
        n, dn = self._at(mu)
        if self.cluster is None:
            return n, dn
        B, K = self.w.shape[0], self.w.shape[-1]
        S = n[0].numel()
        cand = torch.nonzero(dn.reshape(-1) > self.cluster.slope_bound).reshape(-1)
        count = self.cluster.refine(self._rows, self.w.view(B, -1, K), self.e.view(B, -1, K),
                                    mu, candidates=cand)
        if count:  # the refined sites' Fermi sums again, all configurations at once
            rows = self.cluster.last_flat
            m = self._mu(mu, B)[torch.div(rows, S, rounding_mode="floor")][:, None]
            rn = torch.empty(count, dtype=self.dtype, device=self.device)
            rdn = torch.empty_like(rn)
            self._fermi_rows(self.e.view(-1, K)[rows], self.w.view(-1, K)[rows], m, rn, rdn)
            n.view(-1)[rows], dn.view(-1)[rows] = rn, rdn
        return n, dn

    def _buffers(self, n: int) -> dict:
        """Activation buffers for ``n`` rows, made once per chunk size."""
        if n not in self._act:
            def buf(width, dtype):
                return torch.empty(n, width, dtype=dtype, device=self.device)

            mixed = self.hidden_dtype != self.dtype
            self._act[n] = {
                "input": buf(self.W1.shape[0], self.hidden_dtype) if mixed else None,
                "first": buf(self.W1.shape[1], self.hidden_dtype),
                "hidden": [buf(W.shape[1], self.hidden_dtype) for W, _ in self.layers],
                "cast": buf(self.Wo.shape[0], self.dtype) if mixed else None,
                "out": buf(self.Wo.shape[1], self.dtype),
                "pair": buf(self.Wo.shape[1] // 4, self.dtype) if self.model.pairs else None,
            }
        return self._act[n]

    def _levels(self, G: torch.Tensor, w: torch.Tensor, e: torch.Tensor,
                low: torch.Tensor | None = None) -> None:
        """Weights ``w`` and levels ``e`` (n, K) of feature rows ``G`` (n, F), written in
        place: :meth:`LevelModel.levels` with the folded first layer. ``low``: the same rows
        already in the hidden layers' dtype, if at hand."""
        b = self._buffers(G.shape[0])
        silu = nn.functional.silu
        x = G if b["input"] is None else low if low is not None else b["input"].copy_(G)
        h = silu(torch.addmm(self.b1, x, self.W1, out=b["first"]), inplace=True)
        for (W, bias), dst in zip(self.layers, b["hidden"], strict=True):
            h = silu(torch.addmm(bias, h, W, out=dst), inplace=True)
        if b["cast"] is not None:
            h = b["cast"].copy_(h)
        out = torch.addmm(self.bo, h, self.Wo, out=b["out"])
        if self.model.pairs:
            self._pair_head(out, G[:, :1], w, e, b)
            return
        K = self.model.components
        torch.softmax(out[:, :K], dim=-1, out=w)
        torch.sub(out[:, K:], G[:, :1], alpha=self.g, out=e)

    def _pair_head(self, out, Q0, w, e, b) -> None:
        """:func:`pair_levels` for inference, written into ``w`` and ``e`` (n, K) with the
        weights directly, not their logs: ``w_up = (1 + d / r) / 2`` (absolute rounding
        ~1e-7 where it is small, harmless in n), levels ``m +- r``."""
        P = out.shape[1] // 4
        logit, a, bb, V = out[:, :P], out[:, P:2 * P], out[:, 2 * P:3 * P], out[:, 3 * P:]
        e_up, e_dn, w_up, w_dn = e[:, :P], e[:, P:], w[:, :P], w[:, P:]
        torch.sub(a, bb, out=w_dn).mul_(0.5)  # d
        torch.mul(w_dn, w_dn, out=e_dn).addcmul_(V, V).add_(1e-12).sqrt_()  # r
        torch.add(a, bb, out=e_up).mul_(0.5).sub_(Q0, alpha=self.g)  # m
        torch.div(w_dn, e_dn, out=w_up).mul_(0.5).add_(0.5)  # the site's share in m + r
        e_dn.neg_().add_(e_up)  # m - r
        e_up.mul_(2.0).sub_(e_dn)  # m + r
        share = torch.softmax(logit, dim=-1, out=b["pair"])
        w_dn.copy_(w_up).neg_().add_(1.0).mul_(share)
        w_up.mul_(share)

    def _fermi_rows(self, e: torch.Tensor, w: torch.Tensor, mu: torch.Tensor,
                    n: torch.Tensor, dn: torch.Tensor) -> None:
        """``n`` and ``dn/dmu`` (S,) of the levels ``e`` with weights ``w`` (S, K) at ``mu``
        (a 0-d tensor, or one per row: (S, 1)), in chunks of sites with kept scratch buffers
        (the (sites, K) temporaries of a plain sum would leave the cache: 4x slower at
        200x200 with 64 levels)."""
        S, K = e.shape
        C = min(self.chunk or S, S)
        if self._fermi is None or self._fermi[0].shape[0] < C or self._fermi[0].shape[1] != K:
            self._fermi = [torch.empty(C, K, dtype=self.dtype, device=self.device)
                           for _ in range(2)]
        z, t = self._fermi
        inv_T = 1.0 / self.T
        for i in range(0, S, C):
            ec, wc = e[i:i + C], w[i:i + C]
            c = ec.shape[0]
            s_, t_ = z[:c], t[:c]
            mc = mu if mu.ndim == 0 else mu[i:i + C]
            torch.sub(mc, ec, out=s_).mul_(inv_T).sigmoid_()  # occupations
            torch.mul(wc, s_, out=t_)
            torch.sum(t_, -1, out=n[i:i + C])
            t_.mul_(s_.neg_().add_(1.0))  # w s (1 - s)
            torch.sum(t_, -1, out=dn[i:i + C])
        n.clamp_(0.0, 1.0)
        dn.mul_(inv_T)

    def _mu(self, mu, B: int) -> torch.Tensor:
        mu = torch.as_tensor(mu, dtype=self.dtype, device=self.device).reshape(-1)
        return mu.expand(B) if mu.numel() == 1 and B > 1 else mu

    def _at(self, mu) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, dn/dmu)`` at ``mu`` (one per configuration): the Fermi sum over the stored
        levels of every site (fresh tensors)."""
        if self.w is None:
            raise ModelError("LevelPlan.bind(G) must come first")
        B, K = self.w.shape[0], self.w.shape[-1]
        w, e = self.w.view(B, -1, K), self.e.view(B, -1, K)
        mu = self._mu(mu, B)
        shape = (B, *self.lattice_shape)
        if self.compiled is not None:  # one fused sum for every site
            S = w.shape[1]
            m = mu[0] if B == 1 else mu.repeat_interleave(S)[:, None]
            n, dn = self.compiled.fermi(e.reshape(B * S, K), w.reshape(B * S, K), m)
            return n.view(shape), dn.view(shape)
        n = torch.empty(B, w.shape[1], dtype=self.dtype, device=self.device)
        dn = torch.empty_like(n)
        if self.chunk is None and B > 1:  # a GPU: all configurations in one sum
            S = w.shape[1]
            self._fermi_rows(e.reshape(B * S, K), w.reshape(B * S, K),
                             mu.repeat_interleave(S)[:, None], n.view(-1), dn.view(-1))
        else:
            for j in range(B):
                self._fermi_rows(e[j], w[j], mu[j], n[j], dn[j])
        return n.view(shape), dn.view(shape)

    def density(self, mu: torch.Tensor) -> torch.Tensor:
        return self._at(mu)[0]

    def density_and_slope(self, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._at(mu)

    def density_near(self, mu, mu0, n0, dn0, active) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, dn/dmu)`` at ``mu`` (one per configuration): the Fermi sum at the ``active``
        sites (int64 indices: one tensor per configuration, or one flat tensor of
        (configuration, site) indices), linear response
        ``n0 + dn0 (mu - mu0)`` with slope ``dn0`` everywhere else, as
        :meth:`cdwdata.ml.inference.DensityPlan.density_near`. The results live in kept
        buffers until the next call."""
        if self.w is None:
            raise ModelError("LevelPlan.bind(G) must come first")
        B, K = self.w.shape[0], self.w.shape[-1]
        w, e = self.w.view(B, -1, K), self.e.view(B, -1, K)
        S = w.shape[1]
        mu, mu0 = self._mu(mu, B), self._mu(mu0, B)
        near = self._near.get("out")
        if near is None or near[0].shape != (B, S):
            near = self._near["out"] = [torch.empty(B, S, dtype=self.dtype, device=self.device)
                                        for _ in range(2)]
        out, slope = near
        torch.addcmul(n0.reshape(B, S), dn0.reshape(B, S), (mu - mu0)[:, None], out=out)
        slope.copy_(dn0.reshape(B, S))
        idx = active if isinstance(active, torch.Tensor) else torch.cat(
            [a.to(self.device) + b * S for b, a in enumerate(active)])
        k = int(idx.numel())
        if k:  # the active sites of every configuration in one Fermi sum
            rows = self._near.get("rows")
            if rows is None or rows[0].shape[0] < k:
                rows = self._near["rows"] = [
                    torch.empty(k, K, dtype=self.dtype, device=self.device) for _ in range(2)
                ] + [torch.empty(k, dtype=self.dtype, device=self.device) for _ in range(2)]
            re, rw, rn, rdn = (x[:k] for x in rows)
            torch.index_select(e.reshape(B * S, K), 0, idx, out=re)
            torch.index_select(w.reshape(B * S, K), 0, idx, out=rw)
            m = mu[torch.div(idx, S, rounding_mode="floor")][:, None]
            self._fermi_rows(re, rw, m, rn, rdn)
            out.view(-1).index_copy_(0, idx, rn)
            slope.view(-1).index_copy_(0, idx, rdn)
        shape = (B, *self.lattice_shape)
        return out.view(shape), slope.view(shape)
