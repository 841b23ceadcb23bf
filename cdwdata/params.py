"""Model parameters (:class:`HolsteinParams`) and lattice geometry (:class:`Lattice`).

Conventions (docs/conventions.md): arrays are indexed ``Q[..., x, y]``, the lattice is
periodic, site ``(x, y)`` has sublattice sign ``(-1)**(x + y)``.

The lattice physics every module shares lives here, once: the sublattice sign
(:func:`staggered_sign`), the nearest-neighbour sum (:meth:`Lattice.neighbor_sum`), the elastic
force and site energy (:func:`elastic_force`, :func:`elastic_site_energy`, also as methods of
:class:`HolsteinParams`) and the density recovered from a force
(:meth:`HolsteinParams.density_from_force`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cdwdata.errors import InputError, ParameterError

#: D4 point-group operations as integer 2x2 matrices acting on (dx, dy) offsets.
D4_MATRICES: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((1, 0), (0, 1)),  # identity
    ((0, -1), (1, 0)),  # rotation by 90 degrees
    ((-1, 0), (0, -1)),  # rotation by 180 degrees
    ((0, 1), (-1, 0)),  # rotation by 270 degrees
    ((1, 0), (0, -1)),  # mirror y -> -y
    ((-1, 0), (0, 1)),  # mirror x -> -x
    ((0, 1), (1, 0)),  # diagonal mirror x <-> y
    ((0, -1), (-1, 0)),  # anti-diagonal mirror
)


def _finite(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ParameterError(f"{name} must be finite, got {out!r}")
    return out


#: Temperature of the random "hot start" state (docs/conventions.md: Q ~ N(0, T/kappa),
#: v ~ N(0, T/m) with T = 5).
HOT_START_T = 5.0


@dataclass(frozen=True)
class HolsteinParams:
    """Parameters of the semiclassical Holstein model (paper eq. 1) and its Langevin dynamics.

    Parameters
    ----------
    t : float
        Nearest-neighbour hopping, the energy unit; must be > 0.
    g : float
        Electron-lattice coupling (any real; g = 0 decouples the electrons).
    k : float
        On-site spring constant; must satisfy ``k - 4 |kappa| > 0`` (lattice stability).
    kappa : float
        Nearest-neighbour ``Q_i Q_j`` coupling.
    mass : float
        Oscillator mass m; must be > 0.
    gamma : float
        Langevin damping rate (1/time); must be >= 0.
    dt : float
        Time step in units of 1/omega-like time; must be > 0.
    """

    t: float = 1.0
    g: float = 3.5
    k: float = 1.0
    kappa: float = 0.18
    mass: float = 5.0
    gamma: float = 0.2
    dt: float = 0.05

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _finite(field.name, getattr(self, field.name)))
        for name in ("t", "mass", "dt"):
            if getattr(self, name) <= 0:
                raise ParameterError(
                    f"{name}={getattr(self, name)!r} is not allowed: {name} must be > 0"
                )
        if self.gamma < 0:
            raise ParameterError(f"gamma={self.gamma!r} is not allowed: gamma must be >= 0")
        if self.k - 4 * abs(self.kappa) <= 0:
            raise ParameterError(
                f"k={self.k!r}, kappa={self.kappa!r} make the lattice unstable: "
                "need k - 4*|kappa| > 0"
            )

    @property
    def omega(self) -> float:
        """Oscillator frequency sqrt(k / m)."""
        return math.sqrt(self.k / self.mass)

    def elastic_force(self, Q):
        """Elastic force ``-k Q_i - kappa sum_{j nn i} Q_j`` (paper eq. 5) of these parameters,
        numpy array or torch tensor (..., L, L) -> same shape (see :func:`elastic_force`)."""
        return elastic_force(Q, self.k, self.kappa)

    def elastic_site_energy(self, Q):
        """Elastic site energies of these parameters (see :func:`elastic_site_energy`)."""
        return elastic_site_energy(Q, self.k, self.kappa)

    def density_from_force(self, F, Q, f: float):
        """Local density ``n_i = (F_i - F_elastic,i) / g + 1/2`` from the total force.

        Inverts ``F_i = F_elastic,i + g (n_i - 1/2)`` (paper eqs. 4-7) for numpy arrays or
        torch tensors ``F``, ``Q`` of shape (..., L, L). For ``g == 0`` the electrons
        decouple and ``n_i = f`` on every site (translation invariance), which is returned.
        """
        if self.g == 0:
            if isinstance(F, np.ndarray):
                return np.full_like(F, f)
            import torch

            return torch.full_like(F, f)
        return (F - self.elastic_force(Q)) / self.g + 0.5

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the parameters (stored in every dataset's attrs)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HolsteinParams:
        """Rebuild from :meth:`to_dict` output (extra keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def matches(self, other: HolsteinParams, rtol: float = 1e-9) -> bool:
        """True if every parameter agrees with ``other`` to relative tolerance ``rtol``."""
        a, b = self.to_dict(), other.to_dict()
        return all(math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-15) for k in a)


def staggered_sign(nx: int, ny: int | None = None, like: Any = None):
    """Sublattice sign ``(-1)**(x + y)`` on an ``nx x ny`` grid (``ny`` defaults to ``nx``).

    Returns a float64 numpy array, or, when ``like`` is a torch tensor, a tensor of its dtype
    and device. Any grid size is allowed (analysis of a cropped field, too).
    """
    x, y = np.indices((int(nx), int(nx if ny is None else ny)))
    sign = 1.0 - 2.0 * ((x + y) % 2)
    if like is None or isinstance(like, np.ndarray):
        return sign
    import torch

    return torch.as_tensor(sign, dtype=like.dtype, device=like.device)


def elastic_force(Q, k, kappa):
    """Elastic force ``-k Q_i - kappa sum_{j nn i} Q_j`` (paper eq. 5), shape of ``Q``.

    ``Q`` is a numpy array or torch tensor (..., L, L); ``k`` and ``kappa`` are numbers or
    0-d tensors (a model keeps them as buffers).
    """
    return -k * Q - kappa * Lattice.neighbor_sum(Q)


def elastic_site_energy(Q, k, kappa):
    """``k Q_i^2 / 2 + kappa Q_i sum_{j nn i} Q_j / 2``, shape of ``Q``: summed over sites it
    is the elastic energy, whose negative gradient is :func:`elastic_force`."""
    return 0.5 * Q * (k * Q + kappa * Lattice.neighbor_sum(Q))


def check_choice(name: str, value: Any, choices) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ParameterError listing them."""
    if value not in tuple(choices):
        raise ParameterError(f"{name}={value!r} is not allowed: use one of "
                             f"{', '.join(map(repr, choices))}")
    return value


def check_temperature(T: Any) -> float:
    """Return T as float, or raise ParameterError unless T is finite and >= 0."""
    T = _finite("T", T)
    if T < 0:
        raise ParameterError(f"T={T!r} is not allowed: the temperature must be >= 0")
    return T


def check_filling(f: Any) -> float:
    """Return f as float, or raise ParameterError unless 0 < f < 1."""
    f = _finite("f", f)
    if not 0.0 < f < 1.0:
        raise ParameterError(f"f={f!r} is not allowed: the filling fraction must be in (0, 1)")
    return f


def check_size(L: Any) -> int:
    """Return L as int, or raise ParameterError unless L is an even integer >= 4."""
    if isinstance(L, bool) or not float(L).is_integer():
        raise ParameterError(f"L={L!r} is not allowed: L must be an even integer >= 4")
    L = int(L)
    if L < 4 or L % 2:
        raise ParameterError(f"L={L!r} is not allowed: L must be an even integer >= 4")
    return L


def check_lattice_shape(shape, name: str = "Q") -> int:
    """Return L for a shape ``(..., L, L)`` with L even and >= 4, else raise InputError."""
    shape = tuple(shape)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise InputError(f"{name} must have shape (..., L, L), got {shape}")
    try:
        return check_size(shape[-1])
    except ParameterError as err:
        raise InputError(f"{name} has shape {shape}: {err}") from None


def check_configuration(Q: Any, name: str = "Q") -> np.ndarray:
    """Validate a batch of lattice configurations.

    Parameters
    ----------
    Q : array_like, shape (..., L, L)
        Real, finite values on an L x L lattice with L even and >= 4.

    Returns
    -------
    ndarray, float64, same shape.
    """
    arr = np.asarray(Q)
    if arr.dtype.kind not in "fiu" or arr.dtype == bool:
        raise InputError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    check_lattice_shape(arr.shape, name)
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return arr


@dataclass(frozen=True)
class Lattice:
    """Periodic L x L square lattice: geometry, neighbour tables and D4 symmetry.

    Sites are numbered ``i = x * L + y``.
    """

    L: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", check_size(self.L))

    @property
    def N(self) -> int:
        """Number of sites L**2."""
        return self.L * self.L

    @cached_property
    def sign(self) -> np.ndarray:
        """Sublattice sign ``(-1)**(x + y)``, shape (L, L)."""
        return staggered_sign(self.L)

    @cached_property
    def neighbors(self) -> np.ndarray:
        """Nearest-neighbour site indices, shape (N, 4): +x, -x, +y, -y."""
        x, y = np.indices((self.L, self.L))
        L = self.L
        cols = [((x + dx) % L) * L + (y + dy) % L for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        return np.stack([c.ravel() for c in cols], axis=1)

    @cached_property
    def bonds(self) -> np.ndarray:
        """Each nearest-neighbour bond once, shape (2N, 2): (i, i+x) and (i, i+y)."""
        i = np.arange(self.N)
        return np.concatenate(
            [np.stack([i, self.neighbors[:, 0]], 1), np.stack([i, self.neighbors[:, 2]], 1)]
        )

    def hopping_matrix(self, t: float = 1.0) -> np.ndarray:
        """Single-particle hopping matrix with ``-t`` on every nearest-neighbour bond, (N, N)."""
        H = np.zeros((self.N, self.N))
        i, j = self.bonds.T
        np.add.at(H, (i, j), -t)
        np.add.at(H, (j, i), -t)
        return H

    @staticmethod
    def neighbor_sum(Q, out: np.ndarray | None = None):
        """``sum_{j nn i} Q_j`` for each site of arrays (..., L, L), numpy or torch.

        For numpy input the sum can be written into ``out`` (same shape as ``Q``, not ``Q``
        itself), which avoids the temporaries of four rolls in a hot loop.
        """
        if isinstance(Q, np.ndarray):
            if out is None:
                out = np.empty_like(Q)
            out[..., 1:, :] = Q[..., :-1, :]
            out[..., 0, :] = Q[..., -1, :]
            out[..., :-1, :] += Q[..., 1:, :]
            out[..., -1, :] += Q[..., 0, :]
            out[..., :, 1:] += Q[..., :, :-1]
            out[..., :, 0] += Q[..., :, -1]
            out[..., :, :-1] += Q[..., :, 1:]
            out[..., :, -1] += Q[..., :, 0]
            return out
        import torch

        return (
            torch.roll(Q, 1, -2) + torch.roll(Q, -1, -2) + torch.roll(Q, 1, -1)
            + torch.roll(Q, -1, -1)
        )

    def d4_permutation(self, op: int, center: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Site permutation of D4 operation ``op`` (0..7, see D4_MATRICES) about ``center``.

        Returns ``perm`` with ``Q_transformed.ravel() = Q.ravel()[perm]``, i.e. the new
        value at site r is the old value at ``g^-1 (r - c) + c``.
        """
        L = self.L
        a = np.array(D4_MATRICES[op])
        ainv = np.round(np.linalg.inv(a)).astype(int)
        x, y = np.indices((L, L))
        d = np.stack([x - center[0], y - center[1]])
        src = np.einsum("ij,jxy->ixy", ainv, d)
        sx = (src[0] + center[0]) % L
        sy = (src[1] + center[1]) % L
        return (sx * L + sy).ravel()

    def apply_d4(self, Q: np.ndarray, op: int, center: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Apply D4 operation ``op`` about ``center`` to configurations (..., L, L)."""
        flat = np.asarray(Q).reshape(*np.shape(Q)[:-2], self.N)
        return flat[..., self.d4_permutation(op, center)].reshape(np.shape(Q))

    @staticmethod
    def translate(Q: np.ndarray, dx: int, dy: int) -> np.ndarray:
        """Translate configurations (..., L, L) by (dx, dy) lattice spacings."""
        return np.roll(Q, (dx, dy), axis=(-2, -1))

    def shells(self, r_cut: float) -> list[tuple[float, list[tuple[int, int]]]]:
        """Neighbourhood offsets within ``r_cut`` grouped by distance (centre excluded).

        Returns a list of (distance, offsets) sorted by distance.
        """
        rc2 = r_cut * r_cut + 1e-9
        m = int(math.floor(r_cut))
        groups: dict[int, list[tuple[int, int]]] = {}
        for dx in range(-m, m + 1):
            for dy in range(-m, m + 1):
                d2 = dx * dx + dy * dy
                if 0 < d2 <= rc2:
                    groups.setdefault(d2, []).append((dx, dy))
        return [(math.sqrt(d2), groups[d2]) for d2 in sorted(groups)]
