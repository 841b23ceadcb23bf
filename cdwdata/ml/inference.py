"""Fast inference of a grand-canonical density model: n_i(mu) and dn_i/dmu at fixed features.

The mu solve evaluates the network at several chemical potentials for the same configuration,
and a quench does that at every Langevin step. :class:`DensityPlan` makes those evaluations
cheap:

* **The first layer is folded.** With the input normalisation ``(x - m) / s`` and
  ``x = [G + (mu/g) a, T]``, the first pre-activation is ``A + mu c`` with
  ``A = G W' + b'`` (``W' = W1 / s``; the mean, the bias and the temperature folded into
  ``b'``) and ``c = W' a / g``. ``A`` is one GEMM per configuration; every mu adds ``mu c``.
* **Forward-mode derivative in the same pass.** ``dn_i/dmu`` is propagated next to the
  activations (tangent ``c`` through each SiLU, stacked under the activations so one GEMM
  per layer carries both), at about 1.5x the cost of ``n`` alone.
* **No allocation per call.** Buffers (``A``, the per-chunk activations, the outputs) are kept
  and reused while the shapes stay the same; on the CPU the sites are processed in chunks that
  stay in cache.
* **Active sites only, near a solved mu.** :meth:`density_near` re-evaluates the network (and
  its slope) only at the sites whose slope ``dn_i/dmu`` at a nearby ``mu0`` is not negligible
  (domain walls: 1-3 % of the sites late in a quench) and keeps every other site in linear
  response ``n_i(mu0) + n_i'(mu0) (mu - mu0)``; the Newton steps of a warm mu solve cost
  that little.
* **Precision.** ``"bf16"`` runs the hidden-to-hidden GEMMs in bfloat16 (float32
  accumulation inside the GEMM); the first layer, which carries mu, and the output layer stay
  in the compute dtype.

The plan returns numbers equal to :meth:`DensityModel.site_density` up to rounding (tested).
"""

from __future__ import annotations

import torch
from torch import nn

from cdwdata.errors import ModelError
from cdwdata.ml.options import check_precision

#: Sites per chunk of a CPU evaluation (the chunk's activations stay in cache).
CPU_CHUNK = 2048


def per_configuration(flat: torch.Tensor, B: int, S: int) -> list[torch.Tensor]:
    """Flat (configuration, site) indices ``b * S + i``, sorted, as one tensor of site
    indices ``i`` per configuration."""
    return [flat[(flat >= b * S) & (flat < (b + 1) * S)] - b * S for b in range(B)]


class DensityPlan:
    """Evaluate ``n(mu)`` (and ``dn/dmu``) of a :class:`~cdwdata.ml.gcmodel.DensityModel` for
    fixed features, at one electron temperature.

    Parameters
    ----------
    model : DensityModel
    T : float
        Electron temperature.
    precision : {"float32", "bf16"}
        Dtype of the hidden-to-hidden GEMMs.
    dtype : torch.dtype
        Compute dtype of the first and last layers (float32 or float64).
    device : torch device
    chunk : int, optional
        Sites per chunk (default :data:`CPU_CHUNK` on the CPU, everything at once elsewhere).

    Use :meth:`bind` with the features of a batch, then :meth:`density` or
    :meth:`density_and_slope` at any mu (one value per configuration).
    """

    def __init__(self, model, T: float, precision: str = "float32",
                 dtype: torch.dtype = torch.float32, device="cpu", chunk: int | None = None):
        check_precision(precision, dtype)
        self.precision = precision
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk = chunk or (CPU_CHUNK if self.device.type == "cpu" else None)
        self.hidden_dtype = torch.bfloat16 if precision == "bf16" else dtype
        lin = [m for m in model.mlp if isinstance(m, nn.Linear)]
        if len(lin) < 2:
            raise ModelError("a density network needs at least one hidden layer")
        F = int(model.n_features)
        d64 = dict(dtype=torch.float64, device=self.device)
        std = model.input_norm.std.to(**d64)
        mean = model.input_norm.mean.to(**d64)
        W1 = lin[0].weight.detach().to(**d64) / std  # (H1, F + 1)
        b1 = lin[0].bias.detach().to(**d64) - W1 @ mean + W1[:, F] * float(T)
        g = float(model.coupling[0])
        self.W1 = W1[:, :F].T.contiguous().to(dtype)  # (F, H1)
        self.b1 = b1.to(dtype)
        self.c = (W1[:, :F] @ model.shift.to(**d64) / g).to(dtype)  # d(pre-activation)/d mu
        self.hidden = [(m.weight.detach().T.contiguous().to(self.device, self.hidden_dtype),
                        m.bias.detach().to(self.device, self.hidden_dtype)) for m in lin[1:-1]]
        self.wo = lin[-1].weight.detach().reshape(-1).to(self.device, dtype)
        self.bo = float(lin[-1].bias.detach())
        self.widths = [self.W1.shape[1]] + [W.shape[1] for W, _ in self.hidden]
        self._buffers: dict[str, torch.Tensor] = {}
        self._workspace = None  # the descriptor's (feature_buffer)
        self.A: torch.Tensor | None = None
        #: network evaluations so far, in whole-lattice units (a partial one counts its share)
        self.evaluations = 0.0

    # --- buffers ------------------------------------------------------------------------
    def _buf(self, name: str, shape, dtype=None) -> torch.Tensor:
        """Buffer ``name`` of ``shape``: the leading rows of a kept one when it is large enough
        (a short last chunk or a smaller active set allocates nothing)."""
        dtype = dtype or self.dtype
        shape = torch.Size(shape)
        t = self._buffers.get(name)
        if (t is None or t.dtype != dtype or t.shape[1:] != shape[1:]
                or t.shape[0] < shape[0]):
            t = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[name] = t
        return t[:shape[0]]

    # --- public -------------------------------------------------------------------------
    def feature_buffer(self, shape):
        """The descriptor's kept :class:`~cdwdata.descriptor.Workspace` for configurations
        of ``shape`` (..., L, L) (made anew when the shape changes)."""
        from cdwdata.descriptor import Workspace

        self._workspace = Workspace.reuse(self._workspace, shape, self.dtype, self.device)
        return self._workspace

    def bind(self, G: torch.Tensor) -> DensityPlan:
        """Fix the features ``G (B, ..., F)`` of a batch: computes ``A`` once."""
        self.lattice_shape = tuple(G.shape[1:-1])
        B, F = G.shape[0], G.shape[-1]
        rows = G.reshape(B, -1, F)
        self.A = self._buf("A", (B, rows.shape[1], self.W1.shape[1]))
        for b in range(B):  # one GEMM per configuration: independent of the batch size
            torch.addmm(self.b1, rows[b], self.W1, out=self.A[b])
        return self

    def density(self, mu: torch.Tensor) -> torch.Tensor:
        """``n (B, ...)`` at ``mu`` (B,)."""
        n, _ = self._evaluate(mu, slope=False)
        return n

    def density_and_slope(self, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, dn/dmu)``, both ``(B, ...)``, at ``mu`` (B,)."""
        return self._evaluate(mu, slope=True)

    def density_near(self, mu: torch.Tensor, mu0: torch.Tensor, n0: torch.Tensor,
                     dn0: torch.Tensor, active: list[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, dn/dmu)``, both ``(B, ...)``, at ``mu`` (B,): the network (and its exact
        slope) at the ``active`` sites; everywhere else linear response from ``(n0, dn0)`` at
        ``mu0``, ``n0 + dn0 (mu - mu0)`` with slope ``dn0``.

        ``active`` holds, per configuration, the flat indices (int64) of the sites to evaluate,
        or is one tensor of (configuration, site) indices ``b * S + i``.
        """
        if self.A is None:
            raise ModelError("DensityPlan.bind(G) must come first")
        B, S, H1 = self.A.shape
        if isinstance(active, torch.Tensor):
            active = per_configuration(active, B, S)
        d = (torch.as_tensor(mu, dtype=torch.float64) - torch.as_tensor(mu0, dtype=torch.float64))
        out = self._buf("n_near", (B, S))
        torch.addcmul(n0.reshape(B, S), dn0.reshape(B, S),
                      d.to(device=self.device, dtype=self.dtype).reshape(B, 1), out=out)
        slope = self._buf("dn_near", (B, S))
        slope.copy_(dn0.reshape(B, S))
        mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1).tolist()
        C = self.chunk or S
        done = 0
        for b in range(B):
            idx = active[b]
            k = int(idx.numel())
            if not k:
                continue
            done += k
            rows = self._buf("A_active", (S, H1))[:k]
            torch.index_select(self.A[b], 0, idx, out=rows)
            z = self._buf("z_active", (S,))[:k]
            dz = self._buf("dz_active", (S,))[:k]
            for i in range(0, k, C):
                j = min(i + C, k)
                self._chunk(rows[i:j], mu[b], z[i:j], dz[i:j])
            torch.sigmoid(z, out=z)
            out[b].index_copy_(0, idx, z)
            slope[b].index_copy_(0, idx, self._slope(z, dz, "dn_active"))
        self.evaluations += done / (B * S)
        return out.reshape(B, *self.lattice_shape), slope.reshape(B, *self.lattice_shape)

    # --- the network --------------------------------------------------------------------
    def _evaluate(self, mu, slope: bool):
        if self.A is None:
            raise ModelError("DensityPlan.bind(G) must come first")
        self.evaluations += 1
        B, S, _ = self.A.shape
        mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1).tolist()
        z = self._buf("z", (B, S))
        dz = self._buf("dz", (B, S)) if slope else None
        C = self.chunk or S
        for b in range(B):
            for i in range(0, S, C):
                j = min(i + C, S)
                self._chunk(self.A[b, i:j], mu[b], z[b, i:j],
                            None if dz is None else dz[b, i:j])
        n = self._buf("n", (B, S))
        torch.sigmoid(z, out=n)
        out = n.reshape(B, *self.lattice_shape)
        if dz is None:
            return out, None
        return out, self._slope(n, dz, "dn").reshape(B, *self.lattice_shape)

    def _slope(self, n: torch.Tensor, dz: torch.Tensor, name: str) -> torch.Tensor:
        """``dn/dmu = n (1 - n) dz/dmu`` into buffer ``name`` (n = sigmoid(z))."""
        dn = self._buf(name, n.shape)
        torch.mul(n, n, out=dn)
        torch.sub(n, dn, out=dn)
        return dn.mul_(dz)

    def _silu(self, h: torch.Tensor, s: torch.Tensor, a: torch.Tensor,
              d: torch.Tensor | None) -> None:
        """``a = silu(h)``; with ``d`` (the incoming tangent), ``d *= silu'(h)`` in place."""
        torch.sigmoid(h, out=s)
        torch.mul(h, s, out=a)
        if d is not None:
            # silu'(h) = s + h s (1 - s) = s + a (1 - s)
            torch.mul(a, s, out=h)  # h is dead after this: reuse it
            torch.sub(a, h, out=h)
            h.add_(s)
            d.mul_(h)

    def _chunk(self, A: torch.Tensor, mu: float, z: torch.Tensor, dz: torch.Tensor | None):
        C = A.shape[0]
        rows = 2 * C if dz is not None else C
        H1 = A.shape[1]
        h = self._buf("h0", (C, H1))
        torch.add(A, self.c, alpha=mu, out=h)
        s = self._buf("s0", (C, H1))
        x = self._buf("x0", (2 * C, H1))[:rows]
        if dz is not None:
            x[C:].copy_(self.c.expand(C, H1))
        self._silu(h, s, x[:C], x[C:] if dz is not None else None)
        for k, (W, bias) in enumerate(self.hidden):
            xin = x
            if xin.dtype != self.hidden_dtype:
                xin = self._buf(f"xh{k}", (2 * C, xin.shape[1]), self.hidden_dtype)[:rows]
                xin.copy_(x)
            H = W.shape[1]
            y = self._buf(f"y{k}", (2 * C, H), self.hidden_dtype)[:rows]
            torch.matmul(xin, W, out=y)
            y[:C].add_(bias)
            s = self._buf(f"s{k + 1}", (C, H), self.hidden_dtype)
            x = self._buf(f"x{k + 1}", (2 * C, H), self.hidden_dtype)[:rows]
            if dz is not None:
                x[C:].copy_(y[C:])
            self._silu(y[:C], s, x[:C], x[C:] if dz is not None else None)
        if x.dtype != self.dtype:
            xo = self._buf("xo", (2 * C, x.shape[1]))[:rows]
            xo.copy_(x)
            x = xo
        zz = self._buf("zz", (2 * C,))[:rows]
        torch.mv(x, self.wo, out=zz)
        torch.add(zz[:C], self.bo, out=z)
        if dz is not None:
            dz.copy_(zz[C:])
