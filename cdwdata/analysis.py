"""Phase-ordering analysis: phi, S(k,t), S(q,t), L(t), C(r,t), scaling collapse, exponents.

Every function takes a labelled :class:`xarray.DataArray` and returns a labelled result. The
dimensions a function works on are named (``x, y`` for lattice fields, ``kx, ky`` for
S(k), ``q`` for S(q), ``step`` and ``run`` for time series); all other dimensions
(``T, f, run, step`` in any subset and order) are carried along. Work is done by
:func:`xarray.apply_ufunc` with ``dask="parallelized"``, so dask-backed input stays lazy
(the transformed dimensions are first rechunked into a single chunk).

Conventions (docs/conventions.md, paper section IV):

* Site ``(x, y)`` is the *position* along the ``x`` and ``y`` dimensions (0 .. L-1); its
  sublattice sign is ``(-1)**(x + y)``; the lattice is periodic.
* ``S(k) = |(1/N) sum_i (n_i - f) exp(i k.r_i)|**2`` on ``k = 2 pi m / L``, ``m = 0 .. L-1``:
  the ``kx``/``ky`` coordinates lie in ``[0, 2 pi)`` and the CDW wave vector
  ``Q = (pi, pi)`` is the grid point ``m = L/2``. With this normalisation
  ``sum_k S(k) = mean_i (n_i - f)**2`` (Parseval) and a perfect checkerboard of amplitude
  ``A`` (``n = f + A (-1)**(x+y)``) has the single peak ``S(Q) = A**2``.
* ``q = |k - Q|`` with ``k - Q`` wrapped into ``[-pi, pi)**2``.
* Dynamical scaling in d = 2 with this normalisation reads ``S(q, t) = L(t)**2 G(q L(t)) / N``,
  so the collapse plots ``y = S / L**2`` against ``x = q L`` (paper Fig. 6).

Fit windows (one set, used by ``cdw analyze``, the explorer, the figures and the notebooks):

* time: :func:`growth_window`, the last decade of the run; its sensitivity is measured over
  :func:`alternative_windows` (``t_end/20 .. t_end/2`` and ``t_end/5 .. t_end``) by
  :func:`window_sensitivity`;
* intermediate q (Porod): :func:`porod_window`, chosen from the data of each frame: from
  ``2 pi rho`` (``rho`` the measured wall density) over a factor ``POROD_SPAN`` in q, below
  the large-q window;
* large q: :data:`LARGE_Q` = ``pi/2 .. pi`` (wavelengths of 2 to 4 lattice spacings; shells
  with ``q > pi`` are incomplete).

Names of dimensions and variables that are stored come from :mod:`cdwdata.schema`; the
analysis-only names introduced here (shell counts, fit results, ...) are the module
constants below.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
import xarray as xr

from cdwdata import schema
from cdwdata.errors import InputError, ParameterError
from cdwdata.params import Lattice, staggered_sign

# --- analysis-only names (not stored by the simulation pipeline) -------------------------------
COUNT = "count"  # number of lattice vectors in a radial shell, coordinate along q or r
PARITY = "parity"  # (dx + dy) mod 2 of a real-space shell, coordinate along r
CORR = "C"  # two-point correlation <Q_i Q_j> at distance r
MEAN = "mean"  # ensemble mean
SEM = "sem"  # standard error of the ensemble mean
SCALED_Q = "qL"  # q L(t), abscissa of the scaling collapse
SCALED_S = "S_over_L2"  # S(q, t) / L(t)**2, ordinate of the scaling collapse
QUALITY = "collapse_msd"  # collapse quality: mean squared spread of log y
SLOPE = "slope"  # fitted log-log slope
SLOPE_ERR = "slope_err"  # its standard error
ALPHA = "alpha"  # growth exponent of L(t) ~ t**alpha
ALPHA_ERR = "alpha_err"  # bootstrap error of alpha
PREFACTOR = "prefactor"  # A in L(t) = A t**alpha
UPPER = "upper"  # upper envelope of C(r): same-sublattice shells
LOWER = "lower"  # lower envelope of C(r): opposite-sublattice shells
WALL = "wall_density"  # fraction of nearest-neighbour bonds crossed by a domain wall
WALL_C4 = "wall_anisotropy"  # <cos 4 theta> of the wall normals: +1 axes, -1 diagonals
WALL_DN = "wall_density_excess"  # mean n on domain walls minus mean n (< 0: hole-rich)

ALPHA_ALT = "alpha_alt"  # alpha over an alternative fit window
ALPHA_WINDOW_ERR = "alpha_window_err"  # largest |alpha_alt - alpha|
ALT_WINDOW = "alt_window"  # dimension: index of the alternative fit window
ALT_T_MIN = "alt_t_min"  # coordinate along alt_window: its first time
ALT_T_MAX = "alt_t_max"  # coordinate along alt_window: its last time
Q_WALL = "q_wall"  # 2 pi rho: wavenumber of the mean spacing of domain walls
Q_MIN = "q_min"  # lower end of a q fit window
Q_MAX = "q_max"  # upper end of a q fit window
N_POINTS = "n_points"  # number of (shell) points in a fit

# --- defaults of the fits: cdw analyze, the explorer, the figures and the notebooks use these --
#: A fixed intermediate-q window in units of ``q L(t)``, the ``--porod-qL`` override of
#: ``cdw analyze`` (the default there is the data-driven :func:`porod_window`).
POROD_QL: tuple[float, float] = (2.0, 6.0)
#: The intermediate (Porod, ``S ~ q**-3``) window starts at this multiple of ``2 pi rho``, the
#: wavenumber of the measured wall spacing (:func:`porod_window`).
POROD_START = 1.0
#: ... and spans this factor in q (half a decade), unless the large-q window starts first.
POROD_SPAN = 3.0
#: Large-q window in units of 1/lattice spacing: wavelengths ``2 pi / q`` of 2 to 4 lattice
#: spacings (the scale of the domain walls; paper: about ``q**-2`` there), ending at
#: ``q = pi``, the last complete circle around ``Q`` in the Brillouin zone (shells with
#: ``q > pi`` hold only the zone corners). Also the upper bound of :func:`porod_window`.
LARGE_Q: tuple[float, float] = (np.pi / 2, np.pi)
#: The alternative growth-exponent windows of the window-sensitivity error, as fractions of
#: the last stored time ``t_end`` (t = 50..500 and 200..1000 for t_end = 1000).
ALT_WINDOWS: tuple[tuple[float, float], ...] = ((1 / 20, 1 / 2), (1 / 5, 1.0))
#: Fewest points (shells or times) a log-log fit accepts.
MIN_FIT_POINTS = 3

_LOCAL_ATTRS: dict[str, tuple[str, str]] = {
    COUNT: ("1", "number of lattice vectors in the shell"),
    PARITY: ("1", "sublattice parity (dx + dy) mod 2 of the shell"),
    CORR: ("1", "two-point correlation <Q_i Q_j>"),
    SCALED_Q: ("1", "scaled momentum q L(t)"),
    SCALED_S: ("1/lattice spacing**2", "scaled structure factor S(q, t) / L(t)**2"),
    QUALITY: ("1", "scaling-collapse spread: mean squared deviation of log(S/L**2)"),
    SLOPE: ("1", "log-log slope of S(q)"),
    SLOPE_ERR: ("1", "standard error of the log-log slope"),
    ALPHA: ("1", "growth exponent alpha of L(t) ~ t**alpha"),
    ALPHA_ERR: ("1", "bootstrap standard error of alpha"),
    PREFACTOR: ("lattice spacing", "prefactor A of L(t) = A t**alpha"),
    UPPER: ("1", "upper envelope of C(r): same-sublattice separations"),
    LOWER: ("1", "lower envelope of C(r): opposite-sublattice separations"),
    WALL: ("1", "fraction of nearest-neighbour bonds crossed by a domain wall"),
    WALL_C4: ("1", "four-fold anisotropy <cos 4 theta> of the domain-wall normals "
              "(+1 along the axes, -1 along the diagonals, 0 isotropic)"),
    WALL_DN: ("1", "mean electron density on domain walls minus the mean density"),
    ALPHA_ALT: ("1", "growth exponent alpha over an alternative fit window"),
    ALPHA_WINDOW_ERR: ("1", "window sensitivity of alpha: largest |alpha_alt - alpha|"),
    ALT_T_MIN: ("1/omega", "first time of the alternative fit window"),
    ALT_T_MAX: ("1/omega", "last time of the alternative fit window"),
    Q_WALL: ("1/lattice spacing", "wavenumber 2 pi rho of the mean domain-wall spacing"),
    Q_MIN: ("1/lattice spacing", "lower end of the q fit window"),
    Q_MAX: ("1/lattice spacing", "upper end of the q fit window"),
    N_POINTS: ("1", "number of shells in the fit"),
}

__all__ = [
    "CdwAccessor",
    "collapse_quality",
    "correlation_envelopes",
    "correlation_function",
    "domain_size",
    "ensemble_mean",
    "growth_exponent",
    "growth_window",
    "alternative_windows",
    "interface_density",
    "order_parameter",
    "porod_slope",
    "porod_window",
    "pooled_slope",
    "radial_structure_factor",
    "scaling_collapse",
    "structure_factor",
    "window_sensitivity",
]


# --- helpers -----------------------------------------------------------------------------------
def _attrs(name: str) -> dict[str, str]:
    if name in schema.ATTRS:
        return schema.attrs(name)
    units, long_name = _LOCAL_ATTRS[name]
    return {"units": units, "long_name": long_name}


def _require_dims(da: xr.DataArray, dims: Sequence[Hashable], what: str) -> None:
    if not isinstance(da, xr.DataArray):
        raise InputError(f"{what} must be an xarray.DataArray, got {type(da).__name__}")
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise InputError(
            f"{what} needs dimensions {list(dims)}; {missing} missing from dims {list(da.dims)}"
        )


def _single_chunk(da: xr.DataArray, dims: Sequence[Hashable]) -> xr.DataArray:
    """Rechunk dask-backed ``da`` so that the core ``dims`` are one chunk each (lazy)."""
    if da.chunks is not None:
        return da.chunk({d: -1 for d in dims})
    return da


def _wrap(k: np.ndarray) -> np.ndarray:
    """Wrap momenta into [-pi, pi)."""
    return (np.asarray(k, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def _shell_average(a: np.ndarray, shell: np.ndarray, nshell: int) -> np.ndarray:
    """Average the last two axes of ``a`` over shells: ``shell`` (nx, ny) -> index 0..nshell-1."""
    from scipy import sparse

    flat = a.reshape(-1, shell.size)
    counts = np.bincount(shell.ravel(), minlength=nshell).astype(np.float64)
    w = sparse.csr_matrix(
        (1.0 / counts[shell.ravel()], (shell.ravel(), np.arange(shell.size))),
        shape=(nshell, shell.size),
    )
    out = np.asarray((w @ flat.T).T)
    return out.reshape(*a.shape[:-2], nshell)


def _momentum_distance(S: xr.DataArray) -> np.ndarray:
    """|k - Q| (wrapped) on the (kx, ky) grid of S, shape (nkx, nky).

    Uses the ``kx``/``ky`` coordinates (any convention, e.g. [0, 2 pi) or [-pi, pi)); without
    them the grid is taken to be ``2 pi m / L``, m = 0 .. L-1.
    """

    def k(dim: str) -> np.ndarray:
        if dim in S.coords:
            return np.asarray(S[dim].values, dtype=np.float64)
        return 2 * np.pi * np.arange(S.sizes[dim]) / S.sizes[dim]

    kx = _wrap(k(schema.KX) - np.pi)
    ky = _wrap(k(schema.KY) - np.pi)
    return np.hypot(kx[:, None], ky[None, :])


def _time_axis(da: xr.DataArray, dim: Hashable) -> np.ndarray:
    """Values that label ``dim``: the ``time`` coordinate if it lives on ``dim``, else ``dim``."""
    if schema.TIME in da.coords and da[schema.TIME].dims == (dim,):
        return np.asarray(da[schema.TIME].values, dtype=np.float64)
    if dim in da.coords:
        return np.asarray(da[dim].values, dtype=np.float64)
    return np.arange(da.sizes[dim], dtype=np.float64)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares line through (x, y) along the last axis (x 1-d, y (..., n)).

    Returns slope, intercept and the standard error of the slope (NaN if n < 3).
    """
    n = x.size
    xm = x.mean()
    dx = x - xm
    sxx = (dx * dx).sum()
    slope = (y * dx).sum(-1) / sxx
    intercept = y.mean(-1) - slope * xm
    res = y - intercept[..., None] - slope[..., None] * x
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt((res * res).sum(-1) / (n - 2) / sxx) if n > 2 else np.full_like(slope, np.nan)
    return slope, intercept, err


# --- real-space fields ------------------------------------------------------------------------
def _phi_kernel(n: np.ndarray) -> np.ndarray:
    return (n - 0.25 * Lattice.neighbor_sum(n)) * staggered_sign(n.shape[-2], n.shape[-1])


def order_parameter(n: xr.DataArray) -> xr.DataArray:
    """Local CDW order parameter (paper eq. 12).

    ``phi_i = (n_i - (1/4) sum_{j nn i} n_j) (-1)**(x+y)`` on the periodic lattice.

    Parameters
    ----------
    n : DataArray, dims (..., x, y)
        Local electron density (dimensionless); any leading dims, numpy or dask backed.

    Returns
    -------
    DataArray ``phi``, dims and coordinates of ``n`` (``x, y`` last), dimensionless.
    A checkerboard ``n = 1/2 + (delta/2) (-1)**(x+y)`` (paper eq. 11) gives ``phi = delta``
    on every site; a one-site translation flips the sign of ``phi``.
    """
    _require_dims(n, (schema.X, schema.Y), "order_parameter(n)")
    n = _single_chunk(n, (schema.X, schema.Y))
    out = xr.apply_ufunc(
        _phi_kernel,
        n,
        input_core_dims=[[schema.X, schema.Y]],
        output_core_dims=[[schema.X, schema.Y]],
        dask="parallelized",
        output_dtypes=[np.result_type(n.dtype, np.float64)],
    )
    out.name = schema.PHI
    out.attrs = _attrs(schema.PHI)
    return out


def _wall_kernel(phi: np.ndarray) -> np.ndarray:
    h = np.sign(phi)
    bx = h != np.roll(h, -1, -2)
    by = h != np.roll(h, -1, -1)
    return 0.5 * (bx.mean((-2, -1)) + by.mean((-2, -1)))


def interface_density(phi: xr.DataArray) -> xr.DataArray:
    """Density of domain walls: fraction of nearest-neighbour bonds where ``phi`` changes sign.

    ``rho = (1 / 2N) sum_<ij> [sign(phi_i) != sign(phi_j)]`` over the 2N bonds of the periodic
    lattice. For sharp walls ``rho`` is the wall length per bond, so ``1/rho`` is a domain
    size proportional to L(t) in the scaling regime. Unlike eq. 15 it has no logarithmic
    correction: with a Porod tail ``S ~ q**-3`` in 2D the first moment ``sum_k S |k - Q|``
    grows like ``log(L / wall width)``, so eq. 15 gives ``L_15 ~ L / log L`` and effective
    exponents below the asymptotic one on accessible scales.

    Parameters
    ----------
    phi : DataArray, dims (..., x, y)
        Local order parameter (:func:`order_parameter`) or any staggered-sign field.

    Returns
    -------
    DataArray ``wall_density``, dims (...), dimensionless, in [0, 1]; 0 for a single domain.
    """
    _require_dims(phi, (schema.X, schema.Y), "interface_density(phi)")
    phi = _single_chunk(phi, (schema.X, schema.Y))
    out = xr.apply_ufunc(
        _wall_kernel,
        phi,
        input_core_dims=[[schema.X, schema.Y]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    out.name = WALL
    out.attrs = _attrs(WALL)
    return out


#: Width (lattice spacings) of the Gaussian that smooths phi before its gradient is taken in
#: :func:`wall_anisotropy` (removes the lattice's staircase, keeps walls apart).
WALL_SMOOTHING = 1.5


def _c4_kernel(phi: np.ndarray, sigma: float) -> np.ndarray:
    nx, ny = phi.shape[-2:]
    kx = 2 * np.pi * np.fft.fftfreq(nx)[:, None]
    ky = 2 * np.pi * np.fft.rfftfreq(ny)[None, :]
    F = np.fft.rfft2(phi, axes=(-2, -1)) * np.exp(-0.5 * sigma**2 * (kx**2 + ky**2))
    # the derivative of the Nyquist mode (k = -pi) has no sign: drop it, so reflections of
    # phi reflect the gradient exactly
    dx = np.where(np.isclose(np.abs(kx), np.pi), 0.0, kx)
    dy = np.where(np.isclose(np.abs(ky), np.pi), 0.0, ky)
    gx = np.fft.irfft2(1j * dx * F, s=(nx, ny), axes=(-2, -1))
    gy = np.fft.irfft2(1j * dy * F, s=(nx, ny), axes=(-2, -1))
    x2, y2 = gx * gx, gy * gy
    num = (x2 * x2 - 6.0 * x2 * y2 + y2 * y2).sum((-2, -1))
    den = ((x2 + y2) ** 2).sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def wall_anisotropy(phi: xr.DataArray, sigma: float = WALL_SMOOTHING) -> xr.DataArray:
    """Four-fold anisotropy of the domain walls: ``<cos 4 theta>`` of their normals.

    ``phi`` is smoothed with a Gaussian of width ``sigma`` (periodic, in Fourier space) and
    its gradient ``g`` taken spectrally; ``theta`` is the direction of ``g``, and the mean
    is weighted by ``|g|^4``, which puts the weight on the walls (the bulk is flat):
    ``sum (gx^4 - 6 gx^2 gy^2 + gy^4) / sum |g|^4``. Walls along the lattice axes give +1,
    walls along the diagonals -1 (the diagonal preference of the hole-rich walls away from
    half filling, paper Fig. 8), a round domain about 0.

    Parameters
    ----------
    phi : DataArray, dims (..., x, y)
        Local order parameter (:func:`order_parameter`).
    sigma : float
        Smoothing width in lattice spacings (default :data:`WALL_SMOOTHING`).

    Returns
    -------
    DataArray ``wall_anisotropy``, dims (...), in [-1, 1]; NaN for a uniform ``phi``.
    """
    _require_dims(phi, (schema.X, schema.Y), "wall_anisotropy(phi)")
    if not sigma > 0:
        raise ParameterError(f"sigma must be positive, got {sigma}")
    phi = _single_chunk(phi, (schema.X, schema.Y))
    out = xr.apply_ufunc(_c4_kernel, phi, kwargs={"sigma": float(sigma)},
                         input_core_dims=[[schema.X, schema.Y]], dask="parallelized",
                         output_dtypes=[np.float64])
    out.name = WALL_C4
    out.attrs = {**_attrs(WALL_C4), "smoothing_sigma": float(sigma)}
    return out


def _wall_excess_kernel(n: np.ndarray, phi: np.ndarray) -> np.ndarray:
    h = np.sign(phi)
    wall = np.zeros(h.shape, dtype=bool)
    for axis in (-2, -1):  # both ends of every bond where the sign changes
        cut = h != np.roll(h, -1, axis)
        wall |= cut | np.roll(cut, 1, axis)
    count = wall.sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        on = np.where(wall, n, 0.0).sum((-2, -1)) / count
    return np.where(count > 0, on - n.mean((-2, -1)), np.nan)


def wall_density_excess(n: xr.DataArray, phi: xr.DataArray) -> xr.DataArray:
    """Mean electron density on the domain walls minus the mean density.

    Wall sites are both ends of every nearest-neighbour bond where ``sign(phi)`` changes (the
    bonds of :func:`interface_density`). Negative: the walls hold holes (paper Fig. 8 away
    from half filling); about 0 at half filling by particle-hole symmetry.

    Returns
    -------
    DataArray ``wall_density_excess``, dims those of ``n`` without (x, y); NaN without walls.
    """
    for a, what in ((n, "n"), (phi, "phi")):
        _require_dims(a, (schema.X, schema.Y), f"wall_density_excess({what})")
    n, phi = (_single_chunk(a, (schema.X, schema.Y)) for a in (n, phi))
    out = xr.apply_ufunc(_wall_excess_kernel, n, phi,
                         input_core_dims=[[schema.X, schema.Y]] * 2, dask="parallelized",
                         output_dtypes=[np.float64])
    out.name = WALL_DN
    out.attrs = _attrs(WALL_DN)
    return out


# --- structure factor ---------------------------------------------------------------------------
def _sk_kernel(dn: np.ndarray) -> np.ndarray:
    nx, ny = dn.shape[-2:]
    a = np.fft.fft2(dn, axes=(-2, -1))
    return (a.real**2 + a.imag**2) / float(nx * ny) ** 2


def _filling(n: xr.DataArray, f: float | xr.DataArray | str | None):
    if f is not None:
        if isinstance(f, str):
            if f != "mean":
                raise InputError(f"f={f!r} is not allowed: pass a number, a DataArray or 'mean'")
            return n.mean((schema.X, schema.Y))
        return f
    if schema.F_FILL in n.coords:
        return n.coords[schema.F_FILL]
    if schema.F_FILL in n.attrs:
        return float(n.attrs[schema.F_FILL])
    raise InputError(
        "structure_factor needs the filling f: give n an 'f' coordinate or attr, "
        "or pass f=<number> (or f='mean' to subtract the spatial mean)"
    )


def structure_factor(
    n: xr.DataArray, f: float | xr.DataArray | Literal["mean"] | None = None
) -> xr.DataArray:
    """Structure factor of the density (paper eqs. 13-14).

    ``S(k) = |(1/N) sum_i (n_i - f) exp(i k.r_i)|**2`` for ``k = 2 pi (m1, m2) / L``.

    Parameters
    ----------
    n : DataArray, dims (..., x, y)
        Local electron density (dimensionless), any leading dims, numpy or dask backed.
    f : float, DataArray, "mean" or None
        Filling subtracted from ``n``. ``None`` (default) takes the ``f`` coordinate of
        ``n`` (broadcast along a ``f`` dimension if there is one), else ``n.attrs["f"]``;
        ``"mean"`` subtracts the spatial mean of each configuration.

    Returns
    -------
    DataArray ``S``, dims (..., kx, ky), dimensionless. ``kx, ky`` replace ``x, y``; their
    coordinates are the momenta ``2 pi m / L`` in ``[0, 2 pi)`` (units 1/lattice spacing),
    so ``Q = (pi, pi)`` is at index ``L/2``. ``sum_k S = mean_i (n_i - f)**2``.
    """
    _require_dims(n, (schema.X, schema.Y), "structure_factor(n)")
    fill = _filling(n, f)
    dn = n - fill
    if schema.F_FILL in n.coords and schema.F_FILL not in dn.coords:
        dn = dn.assign_coords({schema.F_FILL: n.coords[schema.F_FILL]})
    dn = _single_chunk(dn, (schema.X, schema.Y))
    nx, ny = n.sizes[schema.X], n.sizes[schema.Y]
    out = xr.apply_ufunc(
        _sk_kernel,
        dn,
        input_core_dims=[[schema.X, schema.Y]],
        output_core_dims=[[schema.KX, schema.KY]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {schema.KX: nx, schema.KY: ny}},
    )
    out = out.assign_coords(
        {
            schema.KX: (schema.KX, 2 * np.pi * np.arange(nx) / nx, _attrs(schema.KX)),
            schema.KY: (schema.KY, 2 * np.pi * np.arange(ny) / ny, _attrs(schema.KY)),
        }
    )
    out.name = schema.S
    out.attrs = _attrs(schema.S)
    return out


def radial_structure_factor(
    S: xr.DataArray, binning: Literal["width", "exact"] = "width"
) -> xr.DataArray:
    """Shell average of S(k) around the CDW wave vector: S(q, t), ``q = |k - Q|``.

    Parameters
    ----------
    S : DataArray, dims (..., kx, ky)
        Output of :func:`structure_factor` (square L x L grid).
    binning : {"width", "exact"}
        ``"width"`` (default): shells of width ``2 pi / L``, shell ``j`` holding the momenta
        with ``round(|k - Q| L / (2 pi)) = j`` (shell 0 is ``k = Q`` alone).
        ``"exact"``: one shell per distinct value of ``|k - Q|``.

    Returns
    -------
    DataArray ``S``, dims (..., q). Coordinate ``q`` is the mean ``|k - Q|`` over the shell
    (1/lattice spacing); coordinate ``count(q)`` is the number of momenta in the shell
    (the counts sum to N = L**2). The ``q = 0`` value equals ``S(pi, pi)``.
    """
    _require_dims(S, (schema.KX, schema.KY), "radial_structure_factor(S)")
    nx, ny = S.sizes[schema.KX], S.sizes[schema.KY]
    if nx != ny:
        raise InputError(f"radial_structure_factor needs a square k grid, got {nx} x {ny}")
    qabs = _momentum_distance(S)
    scale = nx / (2 * np.pi)
    if binning == "width":
        key = np.rint(qabs * scale).astype(np.int64)
    elif binning == "exact":
        key = np.rint((qabs * scale) ** 2).astype(np.int64)
    else:
        raise ParameterError(f"binning={binning!r} is not allowed: use 'width' or 'exact'")
    values, shell = np.unique(key, return_inverse=True)
    shell = shell.reshape(key.shape)
    nshell = values.size
    counts = np.bincount(shell.ravel(), minlength=nshell)
    qmean = np.bincount(shell.ravel(), weights=qabs.ravel(), minlength=nshell) / counts
    S = _single_chunk(S, (schema.KX, schema.KY))
    out = xr.apply_ufunc(
        _shell_average,
        S,
        input_core_dims=[[schema.KX, schema.KY]],
        output_core_dims=[[schema.QR]],
        kwargs={"shell": shell, "nshell": nshell},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {schema.QR: nshell}},
    )
    out = out.assign_coords(
        {
            schema.QR: (schema.QR, qmean, _attrs(schema.QR)),
            COUNT: (schema.QR, counts, _attrs(COUNT)),
        }
    )
    out.name = schema.S
    out.attrs = {**_attrs(schema.S), "binning": binning}
    return out


def _domain_kernel(S: np.ndarray, qabs: np.ndarray) -> np.ndarray:
    s0 = S.sum((-2, -1))
    s1 = (S * qabs).sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s0 / s1
    return np.where(s0 > 0, out, np.nan)


def domain_size(S: xr.DataArray) -> xr.DataArray:
    """Characteristic domain size (paper eq. 15).

    ``1/L = sum_k S(k) |k - Q| / sum_k S(k)``, ``Q = (pi, pi)``, ``k - Q`` wrapped into
    ``[-pi, pi)**2``; no momentum is excluded.

    Parameters
    ----------
    S : DataArray, dims (..., kx, ky)
        Output of :func:`structure_factor`.

    Returns
    -------
    DataArray ``L``, dims (...), lattice spacings. NaN where ``sum_k S = 0`` (uniform
    density); very large (``inf`` in exact arithmetic) for a perfect checkerboard.
    """
    _require_dims(S, (schema.KX, schema.KY), "domain_size(S)")
    qabs = _momentum_distance(S)
    S = _single_chunk(S, (schema.KX, schema.KY))
    out = xr.apply_ufunc(
        _domain_kernel,
        S,
        input_core_dims=[[schema.KX, schema.KY]],
        kwargs={"qabs": qabs},
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    out.name = schema.LDOM
    out.attrs = _attrs(schema.LDOM)
    return out


# --- ensembles ------------------------------------------------------------------------------------
def ensemble_mean(da: xr.DataArray, dim: Hashable = schema.RUN) -> xr.Dataset:
    """Mean over independent realisations and its standard error.

    Parameters
    ----------
    da : DataArray with dimension ``dim``
    dim : str
        Dimension to average over (default ``run``).

    Returns
    -------
    Dataset with ``mean`` (attrs of ``da``) and ``sem`` = ``std(ddof=0) / sqrt(n - 1)``
    ``= std(ddof=1) / sqrt(n)``, the standard error of the mean over the ``n`` non-NaN
    members (NaN for n = 1). Lazy for dask input.
    """
    _require_dims(da, (dim,), "ensemble_mean(da)")
    count = da.count(dim)
    mean = da.mean(dim)
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = da.std(dim, ddof=0) / np.sqrt((count - 1).where(count > 1))
    mean.attrs = dict(da.attrs)
    units = da.attrs.get("units", "1")
    long_name = da.attrs.get("long_name", str(da.name))
    sem.attrs = {"units": units, "long_name": f"standard error of the mean of {long_name}"}
    return xr.Dataset(
        {MEAN: mean, SEM: sem},
        attrs={"reduced_dim": str(dim), "source_variable": str(da.name)},
    )


# --- real-space correlation ------------------------------------------------------------------------
def _autocorr_kernel(Q: np.ndarray, shell: np.ndarray, nshell: int) -> np.ndarray:
    nx, ny = Q.shape[-2:]
    a = np.fft.rfft2(Q, axes=(-2, -1))
    c = np.fft.irfft2(a.real**2 + a.imag**2, s=(nx, ny), axes=(-2, -1)) / (nx * ny)
    return _shell_average(c, shell, nshell)


def correlation_function(Q: xr.DataArray, subtract_mean: bool = False) -> xr.DataArray:
    """Equal-time two-point correlation C(r) = <Q_i Q_j>, |r_i - r_j| = r.

    ``C(dr) = (1/N) sum_i Q_i Q_{i + dr}`` is computed by FFT over the periodic lattice
    and then averaged over all separations ``dr`` with the same exact length
    ``r = |dr|``, where ``dr`` is taken by the minimum-image convention (components in
    ``[-L/2, L/2)``).

    Parameters
    ----------
    Q : DataArray, dims (..., x, y)
        Any lattice field (lattice distortion ``Q``, density, ``phi``).
    subtract_mean : bool
        If True use ``Q - <Q>`` (spatial mean of each configuration), i.e. the connected
        correlation.

    Returns
    -------
    DataArray ``C``, dims (..., r), units of ``Q**2``. Coordinates: ``r`` (lattice
    spacings), ``count(r)`` (separations in the shell, summing to N) and ``parity(r)`` =
    ``(dx + dy) mod 2``, which is the same for every vector of a shell because
    ``dx + dy = dx**2 + dy**2 (mod 2)``. ``C(0) = mean(Q**2)``.
    """
    _require_dims(Q, (schema.X, schema.Y), "correlation_function(Q)")
    if subtract_mean:
        Q = Q - Q.mean((schema.X, schema.Y))
    nx, ny = Q.sizes[schema.X], Q.sizes[schema.Y]
    dx = np.arange(nx)
    dx = np.where(dx < nx // 2, dx, dx - nx) if nx % 2 == 0 else np.where(dx <= nx // 2, dx, dx - nx)
    dy = np.arange(ny)
    dy = np.where(dy < ny // 2, dy, dy - ny) if ny % 2 == 0 else np.where(dy <= ny // 2, dy, dy - ny)
    d2 = dx[:, None] ** 2 + dy[None, :] ** 2
    values, shell = np.unique(d2, return_inverse=True)
    shell = shell.reshape(d2.shape)
    nshell = values.size
    counts = np.bincount(shell.ravel(), minlength=nshell)
    Q = _single_chunk(Q, (schema.X, schema.Y))
    out = xr.apply_ufunc(
        _autocorr_kernel,
        Q,
        input_core_dims=[[schema.X, schema.Y]],
        output_core_dims=[[schema.R]],
        kwargs={"shell": shell, "nshell": nshell},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {schema.R: nshell}},
    )
    out = out.assign_coords(
        {
            schema.R: (schema.R, np.sqrt(values.astype(np.float64)), _attrs(schema.R)),
            COUNT: (schema.R, counts, _attrs(COUNT)),
            PARITY: (schema.R, (values % 2).astype(np.int64), _attrs(PARITY)),
        }
    )
    out.name = CORR
    out.attrs = {**_attrs(CORR), "subtract_mean": int(subtract_mean)}
    return out


def correlation_envelopes(C: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Split C(r) into its two envelope curves by sublattice parity of the separation.

    For checkerboard (staggered) order ``Q_i ~ (-1)**(x+y) psi_i`` one has
    ``C(dr) = (-1)**(dx+dy) G(dr)`` with a smooth ``G`` >= 0. Separations with even
    ``dx + dy`` (same sublattice) give the upper envelope ``+G(r)``, those with odd
    ``dx + dy`` (opposite sublattices) the lower envelope ``-G(r)``. Because every exact
    shell has a single parity, the split is exact.

    Parameters
    ----------
    C : DataArray, dims (..., r)
        Output of :func:`correlation_function` (needs its ``parity`` coordinate).

    Returns
    -------
    (upper, lower) : DataArrays, dims (..., r), each on its own subset of ``r``:
    ``upper`` = shells with even parity (includes r = 0), ``lower`` = odd parity.
    """
    _require_dims(C, (schema.R,), "correlation_envelopes(C)")
    if PARITY not in C.coords:
        raise InputError("correlation_envelopes needs C with a 'parity' coordinate along r")
    parity = np.asarray(C[PARITY].values)
    upper = C.isel({schema.R: np.flatnonzero(parity == 0)})
    lower = C.isel({schema.R: np.flatnonzero(parity == 1)})
    upper.name, lower.name = UPPER, LOWER
    upper.attrs, lower.attrs = _attrs(UPPER), _attrs(LOWER)
    return upper, lower


# --- scaling ---------------------------------------------------------------------------------------
def scaling_collapse(Sq: xr.DataArray, L: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Rescaled coordinates of dynamical scaling (paper eq. 16, Fig. 6).

    With the 1/N normalisation of S, scaling in d = 2 reads ``S(q, t) = L**2 G(q L) / N``;
    the collapse plots ``y = S(q, t) / L(t)**2`` against ``x = q L(t)``.

    Parameters
    ----------
    Sq : DataArray, dims (..., q)
        Output of :func:`radial_structure_factor`.
    L : DataArray, dims (...)
        Domain sizes (:func:`domain_size`), broadcastable against ``Sq`` without ``q``.

    Returns
    -------
    (x, y) : DataArrays ``qL`` and ``S_over_L2``, dims of ``Sq`` broadcast with ``L``.
    """
    _require_dims(Sq, (schema.QR,), "scaling_collapse(Sq)")
    if schema.QR in L.dims:
        raise InputError("scaling_collapse: L must not have a 'q' dimension")
    y = Sq / L**2
    x = (Sq[schema.QR] * L).broadcast_like(y).transpose(*y.dims)
    x.name, y.name = SCALED_Q, SCALED_S
    x.attrs, y.attrs = _attrs(SCALED_Q), _attrs(SCALED_S)
    return x, y


def _collapse_kernel(x: np.ndarray, y: np.ndarray, x_lo: float, x_hi: float,
                     n_grid: int) -> np.ndarray:
    lead = x.shape[:-2]
    nb = int(np.prod(lead, dtype=np.int64))
    xs = x.reshape(nb, *x.shape[-2:])
    ys = y.reshape(nb, *y.shape[-2:])
    out = np.full(xs.shape[0], np.nan)
    for b in range(xs.shape[0]):
        curves = []
        for xc, yc in zip(xs[b], ys[b], strict=True):
            ok = np.isfinite(xc) & np.isfinite(yc) & (xc > 0) & (yc > 0)
            ok &= (xc >= x_lo) & (xc <= x_hi)
            if ok.sum() >= 2:
                order = np.argsort(xc[ok])
                curves.append((np.log(xc[ok][order]), np.log(yc[ok][order])))
        if len(curves) < 2:
            continue
        lo = max(c[0][0] for c in curves)
        hi = min(c[0][-1] for c in curves)
        if not hi > lo:
            continue
        grid = np.linspace(lo, hi, n_grid)
        vals = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
        out[b] = ((vals - vals.mean(0)) ** 2).mean()
    return out.reshape(lead)


def collapse_quality(
    x: xr.DataArray,
    y: xr.DataArray,
    dim: Hashable = schema.STEP,
    x_range: tuple[float, float] | None = None,
    n_grid: int = 64,
) -> xr.DataArray:
    """How well rescaled curves at different times fall onto one curve (smaller = better).

    Each curve (one per value of ``dim``) is interpolated linearly in ``(log x, log y)``
    onto ``n_grid`` equally spaced points of ``log x`` covering the range common to all
    curves (intersected with ``x_range``); the result is the mean over grid points of the
    variance across curves of ``log y`` (the mean squared deviation from the mean curve).
    Points with ``x <= 0`` or ``y <= 0`` (e.g. the ``q = 0`` shell) are dropped.

    Parameters
    ----------
    x, y : DataArrays, dims (..., dim, q)
        Output of :func:`scaling_collapse`.
    dim : str
        Dimension whose curves are compared (default ``step``).
    x_range : (float, float), optional
        Only use ``x_lo <= x <= x_hi``.
    n_grid : int
        Number of interpolation points.

    Returns
    -------
    DataArray ``collapse_msd``, dims (...) (other dims than ``dim`` and ``q``),
    dimensionless; NaN if fewer than two curves or no common range.
    """
    _require_dims(y, (dim, schema.QR), "collapse_quality(y)")
    x_lo, x_hi = (-np.inf, np.inf) if x_range is None else map(float, x_range)
    core = [dim, schema.QR]
    x = _single_chunk(x, core)
    y = _single_chunk(y, core)
    out = xr.apply_ufunc(
        _collapse_kernel,
        x,
        y,
        input_core_dims=[core, core],
        kwargs={"x_lo": x_lo, "x_hi": x_hi, "n_grid": int(n_grid)},
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    out.name = QUALITY
    out.attrs = {**_attrs(QUALITY), "x_range": [x_lo, x_hi], "n_grid": int(n_grid)}
    return out


def _loglog_fit_kernel(S: np.ndarray, logq: np.ndarray, sel: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.where(S[..., sel] > 0, S[..., sel], np.nan))
    slope, _, err = _ols(logq[sel], y)
    return slope, err


def porod_slope(
    Sq: xr.DataArray, q_range: tuple[float, float]
) -> xr.Dataset:
    """Least-squares slope of ``log S(q)`` versus ``log q`` over a q window.

    Parameters
    ----------
    Sq : DataArray, dims (..., q)
        Output of :func:`radial_structure_factor`.
    q_range : (q_min, q_max)
        Inclusive window in units of 1/lattice spacing (q_min > 0); at least
        ``MIN_FIT_POINTS`` shells. ``cdw analyze`` fits the intermediate regime over the
        windows of :func:`porod_window` (per curve, :func:`pooled_slope`) and the large-q
        regime over :data:`LARGE_Q`. To fit in ``q L`` units, divide the window by L.

    Returns
    -------
    Dataset with ``slope`` (2D Porod law: -3) and ``slope_err`` (ordinary least-squares
    standard error), dims (...); attrs ``q_range`` and ``n_points``. Shells with
    ``S <= 0`` make the fit NaN.
    """
    _require_dims(Sq, (schema.QR,), "porod_slope(Sq)")
    q = np.asarray(Sq[schema.QR].values, dtype=np.float64)
    q_lo, q_hi = map(float, q_range)
    sel = (q >= q_lo) & (q <= q_hi) & (q > 0)
    if sel.sum() < MIN_FIT_POINTS:
        raise InputError(
            f"porod_slope: q_range={q_range} holds {int(sel.sum())} shells with q > 0; need "
            f">= {MIN_FIT_POINTS}"
        )
    with np.errstate(divide="ignore"):
        logq = np.log(q)
    Sq = _single_chunk(Sq, (schema.QR,))
    slope, err = xr.apply_ufunc(
        _loglog_fit_kernel,
        Sq,
        input_core_dims=[[schema.QR]],
        output_core_dims=[[], []],
        kwargs={"logq": logq, "sel": sel},
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
    )
    slope.attrs, err.attrs = _attrs(SLOPE), _attrs(SLOPE_ERR)
    return xr.Dataset(
        {SLOPE: slope, SLOPE_ERR: err},
        attrs={"q_range": [q_lo, q_hi], "n_points": int(sel.sum())},
    )


def porod_window(
    rho: xr.DataArray,
    start: float = POROD_START,
    span: float = POROD_SPAN,
    q_cap: float = LARGE_Q[0],
) -> xr.Dataset:
    """The intermediate-q (Porod) fit window, chosen from the measured density of walls.

    Porod's law ``S ~ q**-(d+1)`` is the scattering of sharp domain walls: it holds for
    wavelengths shorter than the spacing of the walls and longer than their width. The
    spacing is measured, not assumed: the wall density ``rho`` (:func:`interface_density`,
    the fraction of nearest-neighbour bonds a wall crosses) gives the wavenumber of the wall
    spacing ``q_wall = 2 pi rho``. For stripes of width ``w`` (``rho = 1 / 2w``) this is the
    fundamental ``pi / w`` of the pattern; for isotropic walls it is ``4 pi / l_c`` with
    ``l_c = 2 / rho`` the mean chord length of a domain (Cauchy). The window is

    ``q_min = start * q_wall``,  ``q_max = min(span * q_min, q_cap)``

    with ``q_cap`` the start of the large-q window (default ``LARGE_Q[0] = pi/2``,
    wavelengths of 4 lattice spacings: the scale of the walls themselves). An empty window
    (``q_max <= q_min``: walls closer than a few lattice spacings) is NaN; one with fewer
    than ``MIN_FIT_POINTS`` shells gives a NaN slope in :func:`pooled_slope`. The rule is
    fixed in advance; no slope enters it.

    Parameters
    ----------
    rho : DataArray, dims (...)
        Wall density (e.g. the ensemble mean per T, f, step).
    start, span, q_cap : float
        See the rule above (defaults :data:`POROD_START`, :data:`POROD_SPAN`,
        ``LARGE_Q[0]``).

    Returns
    -------
    Dataset with ``q_wall``, ``q_min`` and ``q_max``, dims of ``rho``, 1/lattice spacing;
    attrs ``start``, ``span``, ``q_cap`` and ``rule``.
    """
    if not (start > 0 and span > 1 and q_cap > 0):
        raise ParameterError(f"porod_window needs start > 0, span > 1, q_cap > 0; got "
                             f"start={start}, span={span}, q_cap={q_cap}")
    q_wall = 2 * np.pi * rho
    lo = start * q_wall
    hi = np.minimum(span * lo, q_cap)
    ok = (hi > lo) & (lo > 0)
    lo, hi = lo.where(ok), hi.where(ok)
    q_wall.name, lo.name, hi.name = Q_WALL, Q_MIN, Q_MAX
    q_wall.attrs, lo.attrs, hi.attrs = _attrs(Q_WALL), _attrs(Q_MIN), _attrs(Q_MAX)
    start_txt = "" if start == 1 else f"{start:g} "
    return xr.Dataset(
        {Q_WALL: q_wall, Q_MIN: lo, Q_MAX: hi},
        attrs={"start": float(start), "span": float(span), "q_cap": float(q_cap),
               "rule": f"q_min = {start_txt}q_wall, q_max = min({span:g} q_min, {q_cap:.4g}); "
                       "q_wall = 2 pi rho, rho = wall density (fraction of bonds crossed by "
                       "a domain wall, ensemble mean)"},
    )


def _pooled_kernel(S: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: np.ndarray):
    """S (..., C, nq), lo/hi (..., C) -> slope, err, n_points (...): common slope, own
    intercept per curve, each curve over its own window (curves with < MIN_FIT_POINTS
    shells inside are left out)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(np.where(q > 0, q, np.nan))
        y = np.log(np.where(S > 0, S, np.nan))
        inside = (q > 0) & (q >= lo[..., None]) & (q <= hi[..., None])
        n = inside.sum(-1)
        use = inside & (n >= MIN_FIT_POINTS)[..., None]
        m = use.astype(np.float64)
        nc = m.sum(-1)
        xw = np.where(use, x, 0.0)
        yw = np.where(use, y, 0.0)  # NaN (S <= 0 inside a window) propagates
        xm = xw.sum(-1) / nc
        ym = yw.sum(-1) / nc
        dx = np.where(use, x - xm[..., None], 0.0)
        dy = np.where(use, y - ym[..., None], 0.0)
        sxx = (dx * dx).sum((-2, -1))
        sxy = (dx * dy).sum((-2, -1))
        slope = sxy / sxx
        res = np.where(use, dy - slope[..., None, None] * dx, 0.0)
        ncurves = (nc > 0).sum(-1)
        npts = m.sum((-2, -1))
        dof = npts - ncurves - 1
        err = np.sqrt((res * res).sum((-2, -1)) / dof / sxx)
    slope = np.where(npts > 0, slope, np.nan)
    err = np.where(dof > 0, err, np.nan)
    return slope, np.where(npts > 0, err, np.nan), npts


def pooled_slope(
    Sq: xr.DataArray,
    q_min: float | xr.DataArray,
    q_max: float | xr.DataArray,
    dim: Hashable | None = None,
) -> xr.Dataset:
    """Log-log slope of S(q) over per-curve q windows; pooled over ``dim`` if given.

    Without ``dim`` every curve is fitted on its own (least squares of ``log S`` vs
    ``log q`` over ``q_min <= q <= q_max``, ``q > 0``), like :func:`porod_slope` but with a
    window that may differ from curve to curve. With ``dim`` (e.g. ``step``: the curves of
    a late-time window) one slope is fitted to all curves along ``dim`` together, each with
    its own intercept and its own window (the within-curve least-squares estimator).
    Curves whose window holds fewer than ``MIN_FIT_POINTS`` shells are left out; with none
    left the slope is NaN. A shell with ``S <= 0`` inside a window makes the fit NaN.

    Parameters
    ----------
    Sq : DataArray, dims (..., [dim], q)
    q_min, q_max : float or DataArray broadcastable to ``Sq`` without ``q``
        The windows (1/lattice spacing); NaN means no window (the curve is left out).
    dim : str, optional
        Dimension to pool over.

    Returns
    -------
    Dataset with ``slope``, ``slope_err`` (least-squares standard error) and ``n_points``
    (shells used), dims (...) without ``dim``.
    """
    _require_dims(Sq, (schema.QR,), "pooled_slope(Sq)")
    q = np.asarray(Sq[schema.QR].values, dtype=np.float64)
    shape = Sq.isel({schema.QR: 0}, drop=True)
    lo = xr.broadcast(xr.DataArray(q_min) if not isinstance(q_min, xr.DataArray) else q_min,
                      shape)[0]
    hi = xr.broadcast(xr.DataArray(q_max) if not isinstance(q_max, xr.DataArray) else q_max,
                      shape)[0]
    lo, hi = lo.fillna(np.inf), hi.fillna(-np.inf)
    pool = "_curve" if dim is None else dim
    if dim is None:
        Sq, lo, hi = Sq.expand_dims(pool), lo.expand_dims(pool), hi.expand_dims(pool)
    else:
        _require_dims(Sq, (dim,), "pooled_slope(Sq)")
    Sq = _single_chunk(Sq, (pool, schema.QR))
    slope, err, npts = xr.apply_ufunc(
        _pooled_kernel,
        Sq,
        lo.astype(np.float64),
        hi.astype(np.float64),
        input_core_dims=[[pool, schema.QR], [pool], [pool]],
        output_core_dims=[[], [], []],
        kwargs={"q": q},
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.float64],
    )
    slope.attrs, err.attrs, npts.attrs = _attrs(SLOPE), _attrs(SLOPE_ERR), _attrs(N_POINTS)
    return xr.Dataset({SLOPE: slope, SLOPE_ERR: err, N_POINTS: npts.astype(np.int64)},
                      attrs={"pooled_over": "" if dim is None else str(dim)})


def _growth_kernel(L: np.ndarray, logt: np.ndarray, sel: np.ndarray, n_boot: int, seed: int,
                   harmonic: bool):
    """L (..., run, step) -> alpha, alpha_err, prefactor (...)."""
    Lw = L[..., sel]
    with np.errstate(divide="ignore", invalid="ignore"):
        if harmonic:
            Lw = 1.0 / Lw
        sign = -1.0 if harmonic else 1.0
        alpha, intercept, ols_err = _ols(logt[sel], sign * np.log(Lw.mean(-2)))
        nrun = Lw.shape[-2]
        if nrun < 2 or n_boot < 2:
            return alpha, ols_err, np.exp(intercept)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, nrun, size=(n_boot, nrun))
        boot = Lw[..., idx, :].mean(-2)  # (..., n_boot, nwin)
        a_boot, _, _ = _ols(logt[sel], sign * np.log(boot))
        err = a_boot.std(-1, ddof=1)
    return alpha, err, np.exp(intercept)


def growth_window(t) -> tuple[float, float]:
    """The default fit window of the growth exponent for a run with stored times ``t``.

    The last decade of the run, ``(t_end / 10, t_end)``; when that holds fewer than
    ``MIN_FIT_POINTS`` times ``t > 0`` (a short run), every stored time after ``t = 0``.
    ``cdw analyze``, the explorer and the notebooks all fit over this window, so one store
    gives one alpha.

    Parameters
    ----------
    t : array_like
        Stored times (any order; ``t <= 0`` are ignored).

    Returns
    -------
    (t_min, t_max) in the units of ``t``.
    """
    t = np.asarray(t, dtype=np.float64).ravel()
    t_pos = np.sort(t[t > 0])
    if t_pos.size == 0:
        raise InputError("growth_window: no stored time t > 0 to fit")
    t_end = float(t_pos[-1])
    lo, hi = t_end / 10.0, t_end
    inside = int(((t_pos >= lo) & (t_pos <= hi)).sum())
    if inside < MIN_FIT_POINTS <= t_pos.size:
        return float(t_pos[0]), t_end  # short run: fit every frame after t = 0
    return lo, hi


def growth_exponent(
    L: xr.DataArray,
    window: tuple[float, float],
    dim: Hashable = schema.RUN,
    n_boot: int = 200,
    seed: int = 0,
    time_dim: Hashable = schema.STEP,
    mean: Literal["arithmetic", "harmonic"] = "arithmetic",
) -> xr.Dataset:
    """Growth exponent alpha of ``L(t) = A t**alpha`` (paper eq. 17) with a bootstrap error.

    The ensemble mean of ``L`` over ``dim`` is fitted by least squares in
    ``(log t, log <L>)`` over ``t_min <= t <= t_max``. ``t`` is the ``time`` coordinate
    along ``time_dim`` if present, else the ``time_dim`` coordinate (step index). The error
    is the standard deviation of alpha over ``n_boot`` bootstrap ensembles (runs resampled
    with replacement, ``numpy.random.default_rng(seed)``); without a ``dim`` dimension (or
    with one run) it is the least-squares standard error instead.

    Parameters
    ----------
    L : DataArray, dims (..., [run], step)
        Domain sizes (lattice spacings).
    window : (t_min, t_max)
        Late-time fit window in the units of ``t`` (needs t_min > 0 and at least
        ``MIN_FIT_POINTS`` times); the default everywhere is :func:`growth_window`.
    dim : str
        Ensemble dimension (default ``run``).
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seed of the bootstrap.
    time_dim : str
        Time dimension (default ``step``).
    mean : {"arithmetic", "harmonic"}
        Ensemble mean of L: ``<L>`` (default) or ``1 / <1/L>``. The harmonic mean stays
        finite when single runs order completely (``L = inf`` from eq. 15, ``1/rho``).

    Returns
    -------
    Dataset with ``alpha``, ``alpha_err`` and ``prefactor`` (A), dims (...) (e.g. T, f);
    attrs ``window``, ``n_points``, ``n_boot``, ``seed``, ``time_axis``.
    """
    _require_dims(L, (time_dim,), "growth_exponent(L)")
    if mean not in ("arithmetic", "harmonic"):
        raise ParameterError(f"mean={mean!r} is not allowed: use 'arithmetic' or 'harmonic'")
    t = _time_axis(L, time_dim)
    t_lo, t_hi = map(float, window)
    sel = (t >= t_lo) & (t <= t_hi) & (t > 0)
    if sel.sum() < MIN_FIT_POINTS:
        raise InputError(
            f"growth_exponent: window={window} holds {int(sel.sum())} times t > 0; need "
            f">= {MIN_FIT_POINTS}"
        )
    with np.errstate(divide="ignore"):
        logt = np.log(np.where(t > 0, t, np.nan))
    if dim not in L.dims:
        L = L.expand_dims(dim)
    core = [dim, time_dim]
    L = _single_chunk(L, core)
    alpha, err, pref = xr.apply_ufunc(
        _growth_kernel,
        L,
        input_core_dims=[core],
        output_core_dims=[[], [], []],
        kwargs={"logt": logt, "sel": sel, "n_boot": int(n_boot), "seed": int(seed),
                "harmonic": mean == "harmonic"},
        dask="parallelized",
        output_dtypes=[np.float64] * 3,
    )
    alpha.attrs, err.attrs, pref.attrs = _attrs(ALPHA), _attrs(ALPHA_ERR), _attrs(PREFACTOR)
    time_axis = schema.TIME if (schema.TIME in L.coords and L[schema.TIME].dims == (time_dim,)) \
        else str(time_dim)
    return xr.Dataset(
        {ALPHA: alpha, ALPHA_ERR: err, PREFACTOR: pref},
        attrs={
            "window": [t_lo, t_hi],
            "n_points": int(sel.sum()),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "time_axis": time_axis,
            "ensemble_dim": str(dim),
            "mean": mean,
        },
    )


def alternative_windows(t, fractions=ALT_WINDOWS) -> list[tuple[float, float]]:
    """The alternative growth-exponent windows of a run with stored times ``t``.

    ``(a t_end, b t_end)`` for every ``(a, b)`` in ``fractions`` (default
    :data:`ALT_WINDOWS`: ``t_end/20 .. t_end/2`` and ``t_end/5 .. t_end``, i.e. t = 50..500
    and 200..1000 for t_end = 1000), ``t_end`` the last stored time.
    """
    t = np.asarray(t, dtype=np.float64).ravel()
    t_pos = t[t > 0]
    if t_pos.size == 0:
        raise InputError("alternative_windows: no stored time t > 0")
    t_end = float(t_pos.max())
    return [(float(a) * t_end, float(b) * t_end) for a, b in fractions]


def window_sensitivity(
    L: xr.DataArray,
    alpha: xr.DataArray,
    windows: Sequence[tuple[float, float]],
    dim: Hashable = schema.RUN,
    time_dim: Hashable = schema.STEP,
    mean: Literal["arithmetic", "harmonic"] = "arithmetic",
) -> xr.Dataset:
    """Growth exponent over alternative fit windows and the spread it implies.

    ``alpha_alt`` is :func:`growth_exponent` of the ensemble mean over each window of
    ``windows`` (NaN for a window with fewer than ``MIN_FIT_POINTS`` times, e.g. in a short
    run); ``alpha_window_err = max |alpha_alt - alpha|`` over the windows that could be
    fitted (NaN if none). For a pure power law it is zero up to noise; a crossover in
    ``L(t)`` makes it large.

    Parameters
    ----------
    L : DataArray, dims (..., [run], step)
    alpha : DataArray, dims (...)
        Exponent over the default window (:func:`growth_exponent`).
    windows : sequence of (t_min, t_max)
        Alternative windows (:func:`alternative_windows`).

    Returns
    -------
    Dataset with ``alpha_alt`` (..., alt_window), coordinates ``alt_t_min`` and
    ``alt_t_max`` along ``alt_window``, and ``alpha_window_err`` (...); attrs
    ``alt_windows``.
    """
    windows = [tuple(map(float, w)) for w in windows]
    if not windows:
        raise InputError("window_sensitivity needs at least one alternative window")
    alts = []
    for w in windows:
        try:
            a = growth_exponent(L, window=w, dim=dim, n_boot=0, time_dim=time_dim,
                                mean=mean)[ALPHA]
        except InputError:  # too few times in this window
            a = xr.full_like(alpha, np.nan, dtype=np.float64)
        a = a.copy()
        a.attrs = {}
        alts.append(a)
    alt = xr.concat(alts, dim=ALT_WINDOW, coords="minimal", compat="override")
    alt = alt.assign_coords({
        ALT_WINDOW: np.arange(len(windows)),
        ALT_T_MIN: (ALT_WINDOW, [w[0] for w in windows], _attrs(ALT_T_MIN)),
        ALT_T_MAX: (ALT_WINDOW, [w[1] for w in windows], _attrs(ALT_T_MAX)),
    })
    alt = alt.transpose(..., ALT_WINDOW)
    dev = np.abs(alt - alpha)
    err = dev.max(ALT_WINDOW, skipna=True).where(dev.notnull().any(ALT_WINDOW))
    alt.attrs, err.attrs = _attrs(ALPHA_ALT), _attrs(ALPHA_WINDOW_ERR)
    return xr.Dataset({ALPHA_ALT: alt, ALPHA_WINDOW_ERR: err},
                      attrs={"alt_windows": [list(w) for w in windows]})


# --- accessor ---------------------------------------------------------------------------------------
@xr.register_dataset_accessor("cdw")
class CdwAccessor:
    """``ds.cdw``: the analysis of a trajectory dataset holding the density ``n``.

    ``ds.cdw.phi()``, ``ds.cdw.structure_factor()``, ``ds.cdw.domain_size()`` and
    ``ds.cdw.radial_structure_factor()`` are :func:`order_parameter`,
    :func:`structure_factor`, :func:`domain_size` and :func:`radial_structure_factor`
    applied to ``ds["n"]`` (lazy for dask-backed datasets).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def _n(self) -> xr.DataArray:
        if schema.N not in self._ds:
            raise InputError(f"dataset has no density variable {schema.N!r}")
        n = self._ds[schema.N]
        if schema.F_FILL not in n.coords and schema.F_FILL in self._ds.attrs:
            n = n.assign_attrs({schema.F_FILL: self._ds.attrs[schema.F_FILL]})
        return n

    def phi(self) -> xr.DataArray:
        """Local CDW order parameter of ``ds.n`` (eq. 12)."""
        return order_parameter(self._n())

    def structure_factor(self, f: float | xr.DataArray | None = None) -> xr.DataArray:
        """S(k, t) of ``ds.n`` (eqs. 13-14)."""
        return structure_factor(self._n(), f)

    def radial_structure_factor(self, f: float | xr.DataArray | None = None,
                                binning: Literal["width", "exact"] = "width") -> xr.DataArray:
        """S(q, t) of ``ds.n``."""
        return radial_structure_factor(self.structure_factor(f), binning)

    def domain_size(self, f: float | xr.DataArray | None = None) -> xr.DataArray:
        """L(t) of ``ds.n`` (eq. 15)."""
        return domain_size(self.structure_factor(f))
