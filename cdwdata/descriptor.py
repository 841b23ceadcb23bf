"""D4-invariant lattice descriptor of a site's neighbourhood (paper appendix A), in torch.

The force on ``Q_i`` depends on the neighbourhood ``C_i = {Q_j : |r_j - r_i| <= r_c}`` (paper
eq. 9) with ``r_c = sqrt(13)``: the centre plus eight shells, 45 sites in all. This module maps
each neighbourhood to 45 numbers that are exactly invariant under the point group D4 of the
square lattice and that determine the neighbourhood up to a D4 operation (a complete
description: nothing but the symmetry is lost).

Construction
------------
1. **Irreducible representations (IRs).** Each shell is an invariant block of D4 and is split
   into IRs by a fixed orthonormal 45 x 45 map (:func:`ir_matrix`):

   ======  =========================  ===================  ===========================
   type    shells (d^2)               sites                decomposition
   ======  =========================  ===================  ===========================
   centre  0                          1                    A1
   I       1, 4, 9 (axes)             4                    A1 + B1 + E
   II      2, 8 (diagonals)           4                    A1 + B2 + E
   III     5, 10, 13 (general)        8                    A1 + A2 + B1 + B2 + 2 E
   ======  =========================  ===================  ===========================

   With site offsets ``r = (x, y)`` the basis functions are ``A1: 1``,
   ``A2: sign(x y (x^2 - y^2))``, ``B1: sign(x^2 - y^2)``, ``B2: sign(x y)`` (normalised over
   the shell) and, for the doublets, the D4-covariant vector fields ``r / |r|`` (types I, II),
   "major axis" ``(sign x, 0) if |x| > |y| else (0, sign y)`` and "minor axis" (the other axis
   direction, with its sign) (type III). Every doublet therefore transforms exactly like the
   offset vector ``(x, y)`` itself: under ``Q'(c + r) = Q(c + A^-1 r)`` (the convention of
   :meth:`cdwdata.params.Lattice.apply_d4`) a doublet goes to ``A f`` with the same integer
   matrix ``A`` from :data:`cdwdata.params.D4_MATRICES` for all eleven doublets, and a
   one-dimensional IR goes to ``chi_Gamma(A) f``.

   *The paper's printed formulas.* Checked numerically against the eight permutations of each
   shell (labels a..h in angular order): the type-II doublet as printed,
   ``(a + b - c - d, a - b + c - d)``, is not an E doublet (its second component equals the
   B1 function); the correct second component is ``a - b - c + d``. In type III the
   component ``-c - d + g - h`` of ``f_1^E`` does not close under D4 (for any starting label
   and either orientation); with ``-c - d + g + h`` both printed doublets are E doublets and
   transform with identical matrices. The paper's type-III doublets use diagonal axes, its
   type-I doublet uses ``(a - c, -b + d)``: three different bases of E. Here all eleven
   doublets use the one basis above (the vector representation), so that they can be added
   into a reference and rotated by one matrix.

2. **References** from large symmetry-related blocks. The reference doublet is the
   *staggered dipole* of the whole neighbourhood,
   ``D = sum_{r != 0} (-1)^(x + y) Q(c + r) r / |r|`` (a fixed positive-weight combination of
   all eleven doublets; it measures the local gradient of the CDW order parameter, e.g. the
   normal of a domain wall). Tie-breaks (below) also use the plain dipole
   ``D2 = sum_r Q(c + r) r / |r|`` and the one-dimensional references
   ``R_Gamma = sum_shells (-1)^(x+y) f_Gamma`` for Gamma = B1, B2, A2.

3. **Standard form** (paper eqs. A3, A4). Per site, the D4 element T is chosen that brings
   ``D`` into the wedge ``0 <= angle <= pi/4``, i.e. ``(T D)_x >= (T D)_y >= 0``; T is then
   applied to every IR coefficient (one-dimensional IRs are multiplied by ``chi_Gamma(T)``,
   doublets by T's 2x2 matrix). The 45 features are these IR coefficients of the
   neighbourhood in its standard orientation. In the paper's language, a one-dimensional
   feature is ``eta * p`` (amplitude times its sign relative to the reference) and a doublet
   feature is ``p (cos phi, sin phi)`` with ``phi`` its angle in the reference frame; the
   Cartesian form carries the same information without dividing by amplitudes, and keeps the
   ``sin phi`` (handedness) that the cosine ``eta`` of eq. A2 alone would drop.

Features
--------
:data:`FEATURE_NAMES` lists the 45 features in order::

    0       A1  centre (= Q_i)
    1-8     A1  shells d^2 = 1, 2, 4, 5, 8, 9, 10, 13      (fully invariant, no frame)
    9-11    A2  d^2 = 5, 10, 13                            (x chi_A2(T))
    12-17   B1  d^2 = 1, 4, 5, 9, 10, 13                   (x chi_B1(T))
    18-22   B2  d^2 = 2, 5, 8, 10, 13                      (x chi_B2(T))
    23-44   E   (x, y) pairs of T f for d^2 = 1, 2, 4, 5 major, 5 minor, 8, 9,
                10 major, 10 minor, 13 major, 13 minor

The map from the 45 neighbourhood values to the IR coefficients is orthonormal, so every
feature is a signed sum of Q values with the scale of Q itself (for random Q of variance s^2
each feature has variance s^2; the largest, an 8-site A1 in a perfect checkerboard of
amplitude Q0, is ``sqrt(8) Q0``). Features are piecewise linear in Q: no divisions, no
logarithms, no dynamic-range problems; finite for every finite input (short of overflow
near 1e308).

Branch points and how they are handled
--------------------------------------
A canonical orientation of a finite group cannot be chosen continuously everywhere; the
features jump (never diverge) where T changes:

* **Wedge boundaries**: ``D`` on an axis or a diagonal (``D_y = 0``, ``D_x = 0`` or
  ``|D_x| = |D_y|``), where two elements of D4 bring ``D`` into the wedge. Crossing such a
  boundary, the features on both sides are related by the mirror that fixes ``D``; the jump
  is twice the mirror-odd part of the neighbourhood (zero for a mirror-symmetric
  neighbourhood). The A1 features, the magnitudes of the one-dimensional features and all
  doublet amplitudes are continuous everywhere.
* **Zero reference**: ``D = 0`` (uniform Q, perfect checkerboard, stripes, any neighbourhood
  symmetric under C2). Near it, T follows the direction of the small ``D``; since every
  frame-dependent feature is itself small near a symmetric configuration, the jumps are as
  small as the asymmetry.
* **Zero-amplitude IRs** are harmless: features are coefficients, not phases ``f / |f|``,
  so there is no 0/0 anywhere.

Autograd works through the descriptor (features are piecewise linear, so their gradient is
the piecewise-constant coefficient map). An energy model ``E = sum_i e(G_i)`` inherits the
jumps above (an energy step where a frame switches, which ``-dE/dQ`` does not see); a
direct-force model (the paper's) only needs the features to be invariant.

Exactly on a boundary, T is the lexicographic maximum over the eight D4 images of the key
sequence ``(T D)_x, (T D)_y, (T D2)_x, (T D2)_y, chi_B1(T) R_B1, chi_B2(T) R_B2,
chi_A2(T) R_A2``, then every doublet and every one-dimensional coefficient in feature order.
Because the last keys are the features themselves, any two elements that survive all keys
give identical features, so the result never depends on an arbitrary choice. Off the
boundaries only the first two keys matter and a closed-form fast path computes T.

**Exact invariance in floating point.** The IR map is not evaluated as a dense matrix
product: it is a butterfly of pairwise sums and differences along D4-stable blocks
(``Q(r) +- Q(-r)``, then pairs of such pairs), and the references are accumulated with
separate multiply and add operations in a fixed order. D4 then permutes and negates the
floating-point intermediates exactly (IEEE addition is commutative and sign-symmetric), so
the IR coefficients of a rotated configuration are bit-for-bit signed permutations of the
original ones, every boundary test above is decided identically in all eight orientations,
and the features are invariant bit for bit, in float32 and float64 (tested on CPU; CUDA runs
the same elementwise IEEE operations). A dense matmul would round differently per
orientation and flip decisions on exact boundaries: the hypothesis test in
``tests/test_descriptor.py`` finds such a counterexample for a matmul variant within seconds.
``torch.compile`` may fuse multiply-adds and weaken the guarantee to "up to rounding, except
on exact ties". NaN in the input propagates to NaN features of the affected sites.

Cost
----
About 200 elementwise operations on (..., L, L) planes; no per-site Python loop. Without
autograd every plane is written into a :class:`Workspace` (about 2.6 times the output),
which a hot loop keeps from step to step, so a step allocates nothing of the lattice's size
but the frame codes; the features are left plane by plane (feature-major) and handed on as a
strided (..., L, L, 45) view, since scattering them into site-major rows costs more than the
arithmetic. With autograd the planes are fresh tensors, stacked at the end: the same
operations in the same order, so both paths agree bit for bit (tested). The lexicographic
tie-break runs only on the (rare) sites whose reference lies exactly on a wedge boundary;
keys that vanish on all of them are skipped, so even a perfect checkerboard stays cheap.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

from cdwdata.errors import InputError
from cdwdata.params import D4_MATRICES, check_configuration, check_lattice_shape

__all__ = [
    "FEATURE_NAMES",
    "NEIGHBOUR_OFFSETS",
    "N_FEATURES",
    "R_CUT",
    "Descriptor",
    "Workspace",
    "features",
    "features_torch",
    "ir_coefficients_torch",
    "ir_matrix",
    "neighbourhood_torch",
    "standard_frame",
]

#: Cutoff radius r_c of the neighbourhood (lattice spacings).
R_CUT: float = math.sqrt(13)

#: Number of features per site (= number of sites within R_CUT).
N_FEATURES: int = 45

_PAD = 3  # largest |offset component| within R_CUT

# Representative offsets of the 22 pairs {r, -r}. The order is chosen so that the butterfly
# below only combines contiguous slices: first half U1, second half U2 with U1[k] <-> U2[k]
# partners for the one-dimensional IRs.
#   type I  (k = 1, 2, 3):           x_k = (k, 0),      y_k = (0, k)
#   type II (k = 1, 2):              P1_k = (k, k),     P2_k = (k, -k)
#   type III ((p, q) = (2,1), (3,1), (3,2)):
#       a = (p, q), b = (q, p), c = (-q, p), d = (p, -q)
_TYPE3 = ((2, 1), (3, 1), (3, 2))
_PAIRS: tuple[tuple[int, int], ...] = (
    *((k, 0) for k in (1, 2, 3)),
    *((k, k) for k in (1, 2)),
    *((p, q) for p, q in _TYPE3),
    *((q, p) for p, q in _TYPE3),
    *((0, k) for k in (1, 2, 3)),
    *((k, -k) for k in (1, 2)),
    *((-q, p) for p, q in _TYPE3),
    *((p, -q) for p, q in _TYPE3),
)

#: Offsets (dx, dy) of the 45 neighbourhood sites in the order used by
#: :func:`neighbourhood_torch` and the columns of :func:`ir_matrix`: centre, the 22 pair
#: representatives r, then their partners -r. Shape (45, 2).
NEIGHBOUR_OFFSETS: np.ndarray = np.array(
    [(0, 0), *_PAIRS, *((-x, -y) for x, y in _PAIRS)], dtype=np.int64
)

_C2 = 0.5
_CR2 = 1.0 / math.sqrt(2.0)
_CR8 = 1.0 / math.sqrt(8.0)


def _feature_names() -> tuple[str, ...]:
    a1 = ["A1[d2=0]"] + [f"A1[d2={d}]" for d in (1, 2, 4, 5, 8, 9, 10, 13)]
    a2 = [f"A2[d2={d}]" for d in (5, 10, 13)]
    b1 = [f"B1[d2={d}]" for d in (1, 4, 5, 9, 10, 13)]
    b2 = [f"B2[d2={d}]" for d in (2, 5, 8, 10, 13)]
    doublets = ["1", "2", "4", "5,major", "5,minor", "8", "9", "10,major", "10,minor",
                "13,major", "13,minor"]
    e = [f"E{c}[d2={d}]" for d in doublets for c in (".x", ".y")]
    return tuple(a1 + a2 + b1 + b2 + e)


#: Names of the 45 features, in order (see the module docstring).
FEATURE_NAMES: tuple[str, ...] = _feature_names()

# Staggering sign (-1)^(x+y) and shell geometry of the eleven doublets, in feature order.
#   d2 = 1, 2, 4, 5 maj, 5 min, 8, 9, 10 maj, 10 min, 13 maj, 13 min
_DOUBLET_EPS = (-1, 1, 1, -1, -1, 1, -1, 1, 1, -1, -1)


def _dipole_weights() -> np.ndarray:
    """Weights c_k with ``sum_r Q(c+r) r/|r| = sum_k c_k f_k^E`` over the 11 doublets."""
    w = []
    for kind in ("I", "II", "I", (2, 1), "II", "I", (3, 1), (3, 2)):
        if kind in ("I", "II"):
            w.append(math.sqrt(2.0))
        else:
            p, q = kind
            r = math.hypot(p, q)
            w += [2 * p / r, 2 * q / r]
    return np.array(w)


# one-dimensional coefficients (feature indices 0..22) and their staggering sign
_F1_EPS = np.array(
    [1] + [-1, 1, 1, -1, 1, -1, 1, -1]  # A1: d2 = 0, 1, 2, 4, 5, 8, 9, 10, 13
    + [-1, 1, -1]  # A2: 5, 10, 13
    + [-1, 1, -1, -1, 1, -1]  # B1: 1, 4, 5, 9, 10, 13
    + [1, -1, 1, 1, -1]  # B2: 2, 5, 8, 10, 13
)
_SLICE_A2, _SLICE_B1, _SLICE_B2 = slice(9, 12), slice(12, 18), slice(18, 23)


# --------------------------------------------------------------------------- D4 element codes
# Internally a D4 element is a code 0..7 = 4*swap + 2*nx + ny with matrix
#   swap = 0: diag(sx, sy);   swap = 1: [[0, sy], [sx, 0]];   sx = -1 if nx, sy = -1 if ny.
# Acting on a doublet (x, y): x' = sxp * (y if swap else x), y' = syp * (x if swap else y).


def _code_matrix(code: int) -> np.ndarray:
    swap, nx, ny = code >> 2 & 1, code >> 1 & 1, code & 1
    sx, sy = (-1 if nx else 1), (-1 if ny else 1)
    return np.array([[0, sy], [sx, 0]]) if swap else np.array([[sx, 0], [0, sy]])


def _characters(A: np.ndarray) -> tuple[int, int, int]:
    """(chi_A2, chi_B1, chi_B2) of the D4 element with integer matrix A."""
    det = int(round(np.linalg.det(A)))
    b1 = 1 if A[0, 1] == 0 else -1
    return det, b1, det * b1


_CODE_TO_OP = np.array(
    [next(i for i, m in enumerate(D4_MATRICES) if np.array_equal(m, _code_matrix(c)))
     for c in range(8)]
)


class _Tables(NamedTuple):
    """Constant tensors used by the descriptor (on one device, one dtype)."""

    dipole: torch.Tensor  # (11,) staggered-dipole weights of the doublets (reference D)
    dipole2: torch.Tensor  # (11,) plain-dipole weights (secondary reference D2)
    eps1: torch.Tensor  # (23,) staggering signs of the one-dimensional coefficients
    swap: torch.Tensor  # (8,) bool, per code
    sxp: torch.Tensor  # (8,) +-1
    syp: torch.Tensor  # (8,) +-1
    chars: torch.Tensor  # (8, 3) chi_A2, chi_B1, chi_B2 per code
    code_to_op: torch.Tensor  # (8,) int64, index into D4_MATRICES


def _table_arrays() -> dict[str, np.ndarray]:
    w = _dipole_weights()
    mats = [_code_matrix(c) for c in range(8)]
    swap = np.array([m[0, 0] == 0 for m in mats])
    sxp = np.array([m[0, 1] if s else m[0, 0] for m, s in zip(mats, swap, strict=True)], dtype=np.float64)
    syp = np.array([m[1, 0] if s else m[1, 1] for m, s in zip(mats, swap, strict=True)], dtype=np.float64)
    return {
        "dipole": w * np.array(_DOUBLET_EPS),
        "dipole2": w,
        "eps1": _F1_EPS.astype(np.float64),
        "swap": swap,
        "sxp": sxp,
        "syp": syp,
        "chars": np.array([_characters(m) for m in mats], dtype=np.float64),
        "code_to_op": _CODE_TO_OP.astype(np.int64),
    }


def _make_tables(device: torch.device | str, dtype: torch.dtype) -> _Tables:
    out = {}
    for name, arr in _table_arrays().items():
        t = torch.from_numpy(arr)
        out[name] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    return _Tables(**out)


@lru_cache(maxsize=16)
def _cached_tables(device: str, dtype: torch.dtype) -> _Tables:
    return _make_tables(device, dtype)


# --------------------------------------------------------------------------- validation


def _check_tensor(Q: Any) -> torch.Tensor:
    if not isinstance(Q, torch.Tensor):
        raise InputError(f"Q must be a torch.Tensor, got {type(Q).__name__}")
    if not Q.is_floating_point():
        raise InputError(f"Q must have a floating dtype (float32/float64), got {Q.dtype}")
    check_lattice_shape(Q.shape)
    return Q


# --------------------------------------------------------------------------- core


def _padded(Q: torch.Tensor) -> torch.Tensor:
    """Periodic padding by 3 sites on each side: (..., L, L) -> (..., L + 6, L + 6)."""
    p = _PAD
    Q = torch.cat([Q[..., -p:, :], Q, Q[..., :p, :]], dim=-2)
    return torch.cat([Q[..., -p:], Q, Q[..., :p]], dim=-1)


def _shifted(Qp: torch.Tensor, L: int, dx: int, dy: int) -> torch.Tensor:
    """View with value ``Q[x + dx, y + dy]`` at (x, y)."""
    return Qp[..., _PAD + dx:_PAD + dx + L, _PAD + dy:_PAD + dy + L]


def neighbourhood_torch(Q: torch.Tensor) -> torch.Tensor:
    """Values of the 45 neighbourhood sites of every site.

    Parameters
    ----------
    Q : torch.Tensor, shape (..., L, L)

    Returns
    -------
    torch.Tensor, shape (..., L, L, 45)
        ``out[..., x, y, j] = Q[..., x + dx_j, y + dy_j]`` (periodic) with
        ``(dx_j, dy_j) = NEIGHBOUR_OFFSETS[j]``.
    """
    Q = _check_tensor(Q)
    Qp, L = _padded(Q), Q.shape[-1]
    return torch.stack([_shifted(Qp, L, int(dx), int(dy)) for dx, dy in NEIGHBOUR_OFFSETS], -1)


class _Fresh:
    """Arithmetic of :func:`_project` on fresh tensors (autograd, :func:`ir_matrix`)."""

    slab = None

    def part(self, name, lo, hi):
        """Where planes ``lo:hi`` of the result ``name`` go (nowhere: fresh tensors)."""
        return None

    def pairs(self, vF, vG):
        return (torch.stack([a + b for a, b in zip(vF, vG, strict=True)]),
                torch.stack([a - b for a, b in zip(vF, vG, strict=True)]))

    def add(self, a, b, dst=None):
        return a + b

    def sub(self, a, b, dst=None):
        return a - b

    def mul(self, a, c, dst=None):
        return a * c

    def add_mul(self, a, b, c, dst=None):
        return (a + b) * c

    def sub_mul(self, a, b, c, dst=None):
        return (a - b) * c

    def copy(self, a, dst=None):
        return a

    def join(self, parts, dst=None):
        return torch.cat(parts)

    def gather(self, x, index, dst=None):
        return x.index_select(0, index)


class _Into(_Fresh):
    """The same arithmetic written into the planes of a :class:`Workspace` (``dst``). Same
    operations in the same order, so the results are bit for bit those of :class:`_Fresh`."""

    def __init__(self, ws: Workspace) -> None:
        self.slab, self.ws = ws.slabs, ws

    def part(self, name, lo, hi):
        return self.ws.view(name, lo, hi)

    def pairs(self, vF, vG):
        U, W = self.ws.rows["U"], self.ws.rows["W"]
        for a, b, u, w in zip(vF, vG, U, W, strict=True):
            torch.add(a, b, out=u)
            torch.sub(a, b, out=w)
        return self.slab["U"], self.slab["W"]

    def add(self, a, b, dst=None):
        return torch.add(a, b, out=dst)

    def sub(self, a, b, dst=None):
        return torch.sub(a, b, out=dst)

    def mul(self, a, c, dst=None):
        return torch.mul(a, c, out=dst)

    def add_mul(self, a, b, c, dst=None):
        return torch.add(a, b, out=dst).mul_(c)

    def sub_mul(self, a, b, c, dst=None):
        return torch.sub(a, b, out=dst).mul_(c)

    def copy(self, a, dst=None):
        return dst.copy_(a)

    def join(self, parts, dst=None):
        return dst  # the parts were written into it

    def gather(self, x, index, dst=None):
        return torch.index_select(x, 0, index, out=dst)


# Computation order of the 23 one-dimensional coefficients (R) and the 22 doublet components
# (D) in _project, and where each feature comes from:
#   R: centre | S[0:5] C2 (A1 d2 = 1, 4, 9, then 2, 8) | Dd[0:5] C2 (B1 1, 4, 9; B2 2, 8)
#      | A1, A2, B1, B2 of d2 = 5, 10, 13 (3 each)
#   D: e1x (3) | e1y (3) | e2x (2) | e2y (2) | major x, major y, minor x, minor y (3 each)
_R_TO_F1 = (0, 1, 4, 2, 11, 5, 3, 12, 13, 14, 15, 16, 6, 7, 17, 8, 18, 19, 9, 20, 10, 21, 22)
_D_TO_EX = (0, 6, 1, 10, 16, 7, 2, 11, 17, 12, 18)
_D_TO_EY = (3, 8, 4, 13, 19, 9, 5, 14, 20, 15, 21)


@lru_cache(maxsize=8)
def _gather_index(device: str) -> dict[str, torch.Tensor]:
    """The gathers of :func:`_project` as index tensors on ``device`` (made once: no host to
    device copy per call)."""
    return {k: torch.tensor(v, device=device) for k, v in
            (("f1", _R_TO_F1), ("ex", _D_TO_EX), ("ey", _D_TO_EY))}


def _project(v0: torch.Tensor, vF: list[torch.Tensor], vG: list[torch.Tensor], ops=None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IR coefficients, stacked along a new leading axis.

    Parameters
    ----------
    v0 : (..., L, L)
        Centre values.
    vF, vG : 22 tensors (..., L, L)
        Values at the pair representatives ``r`` (``_PAIRS``) and at their partners ``-r``.
    ops : _Fresh or _Into, optional
        Where results go (default: fresh tensors; :class:`_Into`: a workspace's slabs).

    Returns
    -------
    f1 : (23, ..., L, L)
        One-dimensional IR coefficients (features 0..22 before the frame).
    ex, ey : (11, ..., L, L) each
        x and y components of the eleven doublets.

    Only sums and differences of two D4-related operands and multiplications by constants
    are used, so D4 maps every intermediate to +- another one exactly (module docstring).
    Operations act on groups of planes at once (one call per group), which keeps the number
    of calls, not the arithmetic, small.
    """
    ops = ops or _Fresh()
    slab = ops.slab or {}
    R, D, part = slab.get("R"), slab.get("D"), ops.part
    U, W = ops.pairs(vF, vG)  # even and odd parts of each pair {r, -r}
    # partners: x<->y, P1<->P2, a<->c, b<->d
    S, Dd = ops.add(U[:11], U[11:], slab.get("S")), ops.sub(U[:11], U[11:], slab.get("Dd"))
    # type I (d2 = 1, 4, 9): A1, B1;  type II (d2 = 2, 8): A1, B2;  type III (d2 = 5, 10,
    # 13): blocks {a, c} (S[5:8]), {b, d} (S[8:11])
    f1 = ops.join([ops.copy(v0[None], part("R", 0, 1)),
                   ops.mul(S[:5], _C2, part("R", 1, 6)),
                   ops.mul(Dd[:5], _C2, part("R", 6, 11)),
                   ops.add_mul(S[5:8], S[8:11], _CR8, part("R", 11, 14)),  # A1
                   ops.sub_mul(S[5:8], S[8:11], _CR8, part("R", 14, 17)),  # A2
                   ops.sub_mul(Dd[5:8], Dd[8:11], _CR8, part("R", 17, 20)),  # B1
                   ops.add_mul(Dd[5:8], Dd[8:11], _CR8, part("R", 20, 23))], R)  # B2
    # doublets. type I: Q(r) - Q(-r); type II: sum_r sign(x) Q(r) / 2, sum_r sign(y) Q(r) / 2;
    # type III: blocks {a, d} (W[5:8], W[19:22]), {b, c} (W[8:11], W[16:19])
    d = ops.join([ops.mul(W[0:3], _CR2, part("D", 0, 3)),
                  ops.mul(W[11:14], _CR2, part("D", 3, 6)),
                  ops.add_mul(W[3:5], W[14:16], _C2, part("D", 6, 8)),
                  ops.sub_mul(W[3:5], W[14:16], _C2, part("D", 8, 10)),
                  ops.add_mul(W[5:8], W[19:22], _C2, part("D", 10, 13)),  # major x
                  ops.add_mul(W[8:11], W[16:19], _C2, part("D", 13, 16)),  # major y
                  ops.sub_mul(W[8:11], W[16:19], _C2, part("D", 16, 19)),  # minor x
                  ops.sub_mul(W[5:8], W[19:22], _C2, part("D", 19, 22))], D)  # minor y
    index = _gather_index(str(d.device))
    return (ops.gather(f1, index["f1"], slab.get("f1")),
            ops.gather(d, index["ex"], slab.get("ex")),
            ops.gather(d, index["ey"], slab.get("ey")))


def _ir_parts(Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IR coefficient planes ``f1`` (23, ...), ``ex``, ``ey`` (11, ...) of every site of Q."""
    Qp, L = _padded(Q), Q.shape[-1]
    vF = [_shifted(Qp, L, dx, dy) for dx, dy in _PAIRS]
    vG = [_shifted(Qp, L, -dx, -dy) for dx, dy in _PAIRS]
    return _project(Q, vF, vG)


def _wsum(terms: list[torch.Tensor], w: torch.Tensor, idx: range) -> torch.Tensor:
    """``sum_{k in idx} w_k terms[k]``: separate mul and add in a fixed order, so that it is
    exactly covariant (no fused multiply-add, no reduction-order freedom)."""
    acc = terms[idx[0]] * w[idx[0]]
    for k in idx[1:]:
        acc = acc + terms[k] * w[k]
    return acc


def _fast_codes(Dx: torch.Tensor, Dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Code of T with ``(T D)_x >= (T D)_y >= 0`` and the mask of sites where T is not unique."""
    ax, ay = Dx.abs(), Dy.abs()
    swap = ay > ax
    code = swap.long() * 4 + (Dx < 0).long() * 2 + (Dy < 0).long()
    tie = (Dx == 0) | (Dy == 0) | (ax == ay)
    return code, tie


def _doublet_images(Vx: torch.Tensor, Vy: torch.Tensor, tab: _Tables
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of doublets (Vx, Vy), each (n,), under the 8 codes: x', y' each (n, 8)."""
    Vx, Vy = Vx.unsqueeze(-1), Vy.unsqueeze(-1)
    return (torch.where(tab.swap, Vy, Vx) * tab.sxp, torch.where(tab.swap, Vx, Vy) * tab.syp)


def _resolve_ties(f1: list[torch.Tensor], ex: list[torch.Tensor], ey: list[torch.Tensor],
                  tab: _Tables) -> torch.Tensor:
    """Lexicographic-maximum frame (codes, (n,)) for n sites with a degenerate reference.

    ``f1`` (23 tensors (n,)), ``ex``, ``ey`` (11 tensors (n,)): their IR coefficients.
    """
    n = f1[0].shape[0]
    mask = torch.ones(n, 8, dtype=torch.bool, device=f1[0].device)
    all11 = range(11)

    def keys():
        # Keys that vanish at every one of these sites cannot discriminate: skip them (this
        # makes highly symmetric inputs, e.g. a perfect checkerboard, cheap).
        def doublet(vx: torch.Tensor, vy: torch.Tensor):
            if bool(vx.any()) or bool(vy.any()):
                yield from _doublet_images(vx, vy, tab)

        def single(v: torch.Tensor, j: int):
            if bool(v.any()):
                yield v.unsqueeze(-1) * tab.chars[:, j]

        for w in (tab.dipole, tab.dipole2):
            yield from doublet(_wsum(ex, w, all11), _wsum(ey, w, all11))
        for j, sl in ((1, _SLICE_B1), (2, _SLICE_B2), (0, _SLICE_A2)):
            yield from single(_wsum(f1, tab.eps1, range(sl.start, sl.stop)), j)
        for k in all11:
            yield from doublet(ex[k], ey[k])
        for j, sl in ((0, _SLICE_A2), (1, _SLICE_B1), (2, _SLICE_B2)):
            for c in range(sl.start, sl.stop):
                yield from single(f1[c], j)

    neg_inf = torch.tensor(-math.inf, dtype=f1[0].dtype, device=f1[0].device)
    for key in keys():
        best = torch.where(mask, key, neg_inf).amax(dim=-1, keepdim=True)
        mask = mask & (key == best)
        if not bool((mask.sum(-1) > 1).any()):
            break
    return mask.to(torch.uint8).argmax(dim=-1)


def _frame_codes(f1: list[torch.Tensor], ex: list[torch.Tensor], ey: list[torch.Tensor],
                 tab: _Tables) -> torch.Tensor:
    """Code (..., L, L) of the standard frame T of every site."""
    all11 = range(11)
    code, tie = _fast_codes(_wsum(ex, tab.dipole, all11), _wsum(ey, tab.dipole, all11))
    if bool(tie.any()):
        code[tie] = _resolve_ties([p[tie] for p in f1], [p[tie] for p in ex],
                                  [p[tie] for p in ey], tab)
    return code


def _apply_frame(f1: list[torch.Tensor], ex: list[torch.Tensor], ey: list[torch.Tensor],
                 code: torch.Tensor, tab: _Tables) -> torch.Tensor:
    """Features (..., L, L, 45): the IR coefficients transformed by the frame of each site,
    stacked from fresh planes (the autograd path; :func:`_features_into` is the other)."""
    swap, sxp, syp = tab.swap[code], tab.sxp[code], tab.syp[code]
    chi = [tab.chars[:, j][code] for j in range(3)]  # A2, B1, B2
    planes = list(f1[:9])
    for j, sl in enumerate((_SLICE_A2, _SLICE_B1, _SLICE_B2)):
        planes += [f1[k] * chi[j] for k in range(sl.start, sl.stop)]
    for x, y in zip(ex, ey, strict=True):
        planes += [torch.where(swap, y, x) * sxp, torch.where(swap, x, y) * syp]
    return torch.stack(planes, dim=-1)


class Workspace:
    """Kept planes for the descriptor of configurations of one shape: a hot loop that passes
    the same workspace at every step allocates nothing (:meth:`Descriptor.forward`).

    The features are computed plane by plane into ``planes`` (45, ..., L, L) and returned as
    the view ``planes.movedim(0, -1)`` of shape (..., L, L, 45): rows of sites with a stride
    between features, which matrix products read directly. The next call overwrites them.
    Memory: about 156 planes of the lattice (45 features, 22 doublet components, 89 scratch)
    and the padded copy of Q.
    """

    def __init__(self, shape, dtype: torch.dtype = torch.float32, device="cpu") -> None:
        shape = tuple(int(n) for n in shape)
        check_lattice_shape(shape)
        self.shape, self.dtype, self.device = shape, dtype, torch.device(device)
        L1, L2 = shape[-2:]
        kw = {"dtype": dtype, "device": self.device}
        self.pad = torch.empty(*shape[:-2], L1 + 2 * _PAD, L2 + 2 * _PAD, **kw)
        #: the views of ``pad`` at the pair representatives r and at -r (made once)
        self.pair_views = ([_shifted(self.pad, L2, dx, dy) for dx, dy in _PAIRS],
                           [_shifted(self.pad, L2, -dx, -dy) for dx, dy in _PAIRS])
        self.planes = torch.empty(N_FEATURES, *shape, **kw)
        exy = torch.empty(22, *shape, **kw)
        scratch = torch.empty(89, *shape, **kw)
        #: where _project writes: the even parts U and, once S and Dd are made from them, the
        #: one-dimensional coefficients R share a slab; f1 goes straight into the features
        self.slabs = {"U": scratch[:22], "R": scratch[:23], "W": scratch[23:45],
                      "S": scratch[45:56], "Dd": scratch[56:67], "D": scratch[67:89],
                      "f1": self.planes[:23], "ex": exy[:11], "ey": exy[11:]}
        #: the planes of the slabs written one by one, as views made once
        self.rows = {k: self.slabs[k].unbind(0) for k in ("U", "W", "S", "Dd")}
        self._views: dict[tuple[str, int, int], torch.Tensor] = {}
        self._low: torch.Tensor | None = None  # the features in a reduced dtype (converted)

    @classmethod
    def reuse(cls, ws: Workspace | None, shape, dtype: torch.dtype, device) -> Workspace:
        """``ws`` if it was made for ``shape``, ``dtype`` and ``device``, else a new one."""
        if (ws is not None and ws.shape == tuple(shape) and ws.dtype == dtype
                and ws.device == torch.device(device)):
            return ws
        return cls(shape, dtype, device)

    def holds(self, G: torch.Tensor) -> bool:
        """Whether ``G`` is the feature view this workspace returned."""
        return G.data_ptr() == self.planes.data_ptr() and G.shape == (*self.shape, N_FEATURES)

    def converted(self, dtype: torch.dtype) -> torch.Tensor:
        """The features in ``dtype`` (e.g. bfloat16), converted plane by plane into a kept
        buffer (contiguous planes: 20x cheaper than converting site rows with a stride), as
        a (..., L, L, 45) view like :meth:`Descriptor.forward`'s."""
        low = self._low
        if low is None or low.dtype != dtype:
            low = self._low = torch.empty_like(self.planes, dtype=dtype)
        return low.copy_(self.planes).movedim(0, -1)

    def fits(self, Q: torch.Tensor) -> bool:
        """Whether ``Q`` has this workspace's shape, dtype and device."""
        return (tuple(Q.shape) == self.shape and Q.dtype == self.dtype
                and Q.device == self.device)

    def padded(self, Q: torch.Tensor) -> torch.Tensor:
        """:func:`_padded` of ``Q``, written into the kept buffer."""
        p, (L1, L2) = _PAD, self.shape[-2:]
        Qp = self.pad
        Qp[..., p:p + L1, p:p + L2].copy_(Q)
        Qp[..., :p, p:p + L2].copy_(Q[..., -p:, :])
        Qp[..., p + L1:, p:p + L2].copy_(Q[..., :p, :])
        Qp[..., :, :p].copy_(Qp[..., :, L2:L2 + p])
        Qp[..., :, p + L2:].copy_(Qp[..., :, p:2 * p])
        return Qp

    def view(self, name: str, lo: int, hi: int) -> torch.Tensor:
        """Planes ``lo:hi`` of the slab ``name`` (the view made once)."""
        key = (name, lo, hi)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = self.slabs[name][lo:hi]
        return v

    def reference(self, e: torch.Tensor, w: torch.Tensor, acc: str) -> torch.Tensor:
        """:func:`_wsum` of the eleven doublet components ``e`` (11, ...) with weights ``w``
        (11,), using the planes of the slab ``acc`` (11, ...): the products at once, then
        the sum in the same order (same bits)."""
        torch.mul(e, w.view(-1, *([1] * (e.ndim - 1))), out=self.slabs[acc])
        first, *rest = self.rows[acc]
        for plane in rest:
            first.add_(plane)
        return first


def _features_into(Q: torch.Tensor, tab: _Tables, ws: Workspace) -> torch.Tensor:
    """The features of ``Q`` written into ``ws`` (no allocation proportional to the lattice
    but the frame codes); equal bit for bit to the allocating path."""
    ws.padded(Q)
    f1, EX, EY = _project(Q, *ws.pair_views, _Into(ws))
    # S and Dd are free once f1 is made: they hold the products of the references
    code, tie = _fast_codes(ws.reference(EX, tab.dipole, "S"), ws.reference(EY, tab.dipole, "Dd"))
    if bool(tie.any()):
        code[tie] = _resolve_ties([p[tie] for p in f1], [p[tie] for p in EX],
                                  [p[tie] for p in EY], tab)
    F = ws.planes
    swap, sxp, syp = tab.swap[code], tab.sxp[code], tab.syp[code]
    for j, sl in enumerate((_SLICE_A2, _SLICE_B1, _SLICE_B2)):
        F[sl].mul_(tab.chars[:, j][code])
    torch.where(swap, EY, EX, out=F[23::2]).mul_(sxp)
    torch.where(swap, EX, EY, out=F[24::2]).mul_(syp)
    return F.movedim(0, -1)


def _features_impl(Q: torch.Tensor, tab: _Tables, out: torch.Tensor | Workspace | None = None
                   ) -> torch.Tensor:
    if torch.is_grad_enabled() and Q.requires_grad:
        f1, ex, ey = _ir_parts(Q)
        return _apply_frame(f1, ex, ey, _frame_codes(f1, ex, ey, tab), tab)
    if isinstance(out, Workspace) and out.fits(Q):
        return _features_into(Q, tab, out)
    G = _features_into(Q, tab, Workspace(Q.shape, Q.dtype, Q.device))
    shape = (*Q.shape, N_FEATURES)
    if isinstance(out, torch.Tensor) and out.shape == shape and out.dtype == Q.dtype:
        return out.copy_(G)
    return G.contiguous()


def _tables_for(Q: torch.Tensor) -> _Tables:
    return _cached_tables(str(Q.device), Q.dtype)


# --------------------------------------------------------------------------- public API


def ir_coefficients_torch(Q: torch.Tensor) -> torch.Tensor:
    """IR coefficients of every neighbourhood in the lattice's own orientation (no frame).

    Parameters
    ----------
    Q : torch.Tensor, shape (..., L, L)

    Returns
    -------
    torch.Tensor, shape (..., L, L, 45)
        Same layout as the features (:data:`FEATURE_NAMES`), before the standard frame T is
        applied; equals ``neighbourhood_torch(Q) @ ir_matrix().T`` up to rounding. Under a D4
        operation ``A`` about a site, the coefficients there go to ``chi(A) f`` (1-d IRs) and
        ``A f`` (each doublet).
    """
    Q = _check_tensor(Q)
    f1, ex, ey = _ir_parts(Q)
    return torch.stack([*f1, *(p for xy in zip(ex, ey, strict=True) for p in xy)], dim=-1)


def ir_matrix() -> np.ndarray:
    """Orthonormal map from neighbourhood values to IR coefficients.

    Returns
    -------
    ndarray, shape (45, 45), float64
        ``M`` with ``f = M @ v`` where ``v`` are the neighbourhood values in the order of
        :data:`NEIGHBOUR_OFFSETS` and ``f`` the IR coefficients in feature order;
        ``M @ M.T = I``.
    """
    cols = torch.eye(N_FEATURES, dtype=torch.float64).unbind(-1)  # 45 "sites", one per column
    f1, ex, ey = _project(cols[0], list(cols[1:23]), list(cols[23:45]))
    f = torch.stack([*f1, *(p for xy in zip(ex, ey, strict=True) for p in xy)], dim=-1)  # (site, feature)
    return f.T.contiguous().numpy()


def standard_frame(Q: torch.Tensor) -> torch.Tensor:
    """The D4 element T that puts each neighbourhood into standard form.

    Parameters
    ----------
    Q : torch.Tensor, shape (..., L, L)

    Returns
    -------
    torch.Tensor, shape (..., L, L), int64
        Index into :data:`cdwdata.params.D4_MATRICES`: the features at a site are the IR
        coefficients of ``Lattice(L).apply_d4(Q, T, site)`` at that site.
    """
    Q = _check_tensor(Q)
    tab = _tables_for(Q)
    f1, ex, ey = _ir_parts(Q)
    return tab.code_to_op[_frame_codes(f1, ex, ey, tab)]


def features_torch(Q: torch.Tensor) -> torch.Tensor:
    """D4-invariant descriptor of every site's neighbourhood (torch, vectorised).

    Parameters
    ----------
    Q : torch.Tensor, shape (..., L, L), float32 or float64, any device
        Lattice distortions, periodic in both directions (L even, >= 4).

    Returns
    -------
    torch.Tensor, shape (..., L, L, N_FEATURES), same dtype and device as ``Q``
        Features of the neighbourhood of each site (see :data:`FEATURE_NAMES`). Exactly
        invariant under the eight D4 operations about the site; covariant under lattice
        translations. Differentiable almost everywhere (piecewise linear in Q).
        Finiteness of Q is not checked here (hot path); see :func:`features`.
    """
    Q = _check_tensor(Q)
    return _features_impl(Q, _tables_for(Q))


def features(Q: Any) -> Any:
    """Descriptor features, the public entry point (docs/conventions.md).

    Parameters
    ----------
    Q : array_like or torch.Tensor, shape (..., L, L)
        Finite lattice distortions, L even and >= 4.

    Returns
    -------
    ndarray (float64) or torch.Tensor, shape (..., L, L, N_FEATURES)
        numpy in, numpy float64 out; torch in, torch out (same dtype and device).

    Raises
    ------
    InputError
        Wrong shape, odd or tiny L, non-numeric dtype, NaN or inf in ``Q``.
    """
    if isinstance(Q, torch.Tensor):
        _check_tensor(Q)
        if not bool(torch.isfinite(Q).all()):
            bad = int((~torch.isfinite(Q)).sum())
            raise InputError(f"Q contains {bad} non-finite value(s) (NaN or inf)")
        return features_torch(Q)
    arr = np.ascontiguousarray(check_configuration(Q))
    return features_torch(torch.from_numpy(arr)).numpy()


class Descriptor(torch.nn.Module):
    """The descriptor as a ``torch.nn.Module`` (composes with an MLP).

    The constant tables are buffers, so ``.to(device, dtype)`` moves them with the model.

    Buffers
    -------
    ir_matrix : (45, 45)
        :func:`ir_matrix` (reference; the forward pass uses the equivalent exact butterfly).
    dipole, dipole2 : (11,)
        Weights of the doublets in the reference ``D`` and secondary reference ``D2``.
    eps1 : (23,)
        Staggering signs of the one-dimensional coefficients (references ``R_Gamma``).
    swap, sxp, syp, chars, code_to_op : (8,), (8,), (8,), (8, 3), (8,)
        The eight D4 elements (see module source).
    """

    n_features: int = N_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("ir_matrix", torch.from_numpy(ir_matrix()))
        for name, arr in _table_arrays().items():
            self.register_buffer(name, torch.from_numpy(arr))

    def _tables(self, Q: torch.Tensor) -> _Tables:
        """The tables in ``Q``'s dtype and on its device: the buffers' values, which are the
        module's constants, made once per device and dtype (no copies per call)."""
        return _tables_for(Q)

    def forward(self, Q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Features of every site.

        Parameters
        ----------
        Q : torch.Tensor, shape (..., L, L)
        out : Workspace or torch.Tensor, optional
            Without autograd: a :class:`Workspace` of ``Q``'s shape, dtype and device, whose
            planes receive the features (the result is a view of them, valid until the next
            call with it: no allocation in a hot loop); or a tensor of the result's shape and
            dtype, written in place and returned. Anything else is ignored.

        Returns
        -------
        torch.Tensor, shape (..., L, L, N_FEATURES)
            Contiguous, except the view into a workspace (site rows with a stride between
            features).
        """
        Q = _check_tensor(Q)
        return _features_impl(Q, self._tables(Q), out)
