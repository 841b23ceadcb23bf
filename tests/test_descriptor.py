"""The D4-invariant lattice descriptor (cdwdata.descriptor, paper appendix A).

Symmetry is proved by tests (STYLE principle 4): exact invariance under the eight D4
operations about a site (random, near-symmetric and exactly symmetric configurations, and a
hypothesis property test), translation covariance, completeness (configurations not related
by D4 get different features), and the IR transformation laws the construction rests on.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cdwdata import InputError, Lattice
from cdwdata import descriptor as dsc
from cdwdata.params import D4_MATRICES

TOL = 1e-12

# ------------------------------------------------------------------------------- helpers


def shell_offsets(d2: int) -> list[tuple[int, int]]:
    """Offsets of the shell at squared distance d2, from Lattice.shells."""
    for r, offs in Lattice(8).shells(dsc.R_CUT):
        if round(r * r) == d2:
            return offs
    raise KeyError(d2)


def checkerboard(L: int, amp: float = 1.3) -> np.ndarray:
    x, y = np.indices((L, L))
    return amp * np.where((x + y) % 2 == 0, 1.0, -1.0)


def centre_diff(Q: np.ndarray, centres) -> float:
    """Largest change of the features at ``c`` when Q is transformed about ``c`` (all ops)."""
    lat = Lattice(Q.shape[-1])
    F = dsc.features(Q)
    worst = 0.0
    for c in centres:
        for op in range(len(D4_MATRICES)):
            F2 = dsc.features(lat.apply_d4(Q, op, c))
            worst = max(worst, float(np.abs(F2[..., c[0], c[1], :] - F[..., c[0], c[1], :]).max()))
    return worst


def expected_irrep_image(f: np.ndarray, A: np.ndarray) -> np.ndarray:
    """IR coefficients (..., 45) of the configuration transformed by D4 matrix A."""
    a2, b1, b2 = dsc._characters(A)
    out = f.copy()
    out[..., 9:12] *= a2
    out[..., 12:18] *= b1
    out[..., 18:23] *= b2
    E = f[..., 23:].reshape(*f.shape[:-1], 11, 2)
    out[..., 23:] = (E @ A.T).reshape(*f.shape[:-1], 22)
    return out


def ir_numpy(Q: np.ndarray) -> np.ndarray:
    return dsc.ir_coefficients_torch(torch.from_numpy(np.asarray(Q, dtype=np.float64))).numpy()


def rotate_shell(Q: np.ndarray, c: tuple[int, int], d2: int, A) -> np.ndarray:
    """Apply D4 matrix A about c to the sites of ONE shell only."""
    L = Q.shape[-1]
    A = np.asarray(A)
    out = Q.copy()
    for r in shell_offsets(d2):
        src = np.linalg.solve(A, np.array(r)).round().astype(int)  # A^-1 r
        out[..., (c[0] + r[0]) % L, (c[1] + r[1]) % L] = Q[..., (c[0] + src[0]) % L,
                                                         (c[1] + src[1]) % L]
    return out


def power_spectrum(f: np.ndarray) -> np.ndarray:
    """|f_Gamma| of every IR (34 of them) from coefficients (..., 45)."""
    E = f[..., 23:].reshape(*f.shape[:-1], 11, 2)
    return np.concatenate([np.abs(f[..., :23]), np.linalg.norm(E, axis=-1)], axis=-1)


# ------------------------------------------------------------------------------- basics


def test_constants_and_neighbourhood():
    assert dsc.N_FEATURES == 45
    assert dsc.R_CUT == pytest.approx(math.sqrt(13))
    assert len(dsc.FEATURE_NAMES) == 45 == len(set(dsc.FEATURE_NAMES))
    offs = {tuple(o) for o in dsc.NEIGHBOUR_OFFSETS.tolist()}
    assert len(offs) == 45
    shells = Lattice(8).shells(dsc.R_CUT)
    assert [round(r * r) for r, _ in shells] == [1, 2, 4, 5, 8, 9, 10, 13]
    assert offs == {(0, 0)} | {o for _, group in shells for o in group}


@pytest.mark.parametrize("shape", [(8, 8), (3, 10, 10), (2, 2, 12, 12)])
def test_shapes_numpy(rng, shape):
    Q = rng.normal(size=shape)
    F = dsc.features(Q)
    assert isinstance(F, np.ndarray)
    assert F.shape == (*shape, dsc.N_FEATURES)
    assert F.dtype == np.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_torch(rng, dtype):
    Q = torch.as_tensor(rng.normal(size=(2, 8, 8)), dtype=dtype)
    for F in (dsc.features(Q), dsc.features_torch(Q), dsc.Descriptor()(Q)):
        assert isinstance(F, torch.Tensor)
        assert F.shape == (2, 8, 8, 45) and F.dtype == dtype and F.device == Q.device


def test_numpy_torch_module_agree(rng):
    Q = rng.normal(size=(2, 12, 12))
    F_np = dsc.features(Q)
    F_t = dsc.features_torch(torch.from_numpy(Q)).numpy()
    F_m = dsc.Descriptor()(torch.from_numpy(Q)).detach().numpy()
    np.testing.assert_array_equal(F_np, F_t)
    np.testing.assert_array_equal(F_np, F_m)
    # integer input is accepted on the numpy path
    Qi = rng.integers(-3, 4, size=(8, 8))
    np.testing.assert_array_equal(dsc.features(Qi), dsc.features(Qi.astype(float)))


def test_float32_close_to_float64(rng):
    Q = rng.normal(size=(4, 16, 16))
    F64 = dsc.features_torch(torch.from_numpy(Q))
    F32 = dsc.features_torch(torch.from_numpy(Q).float())
    np.testing.assert_allclose(F32.double().numpy(), F64.numpy(), rtol=1e-5, atol=1e-5)
    m = dsc.Descriptor().float()
    assert m.ir_matrix.dtype == torch.float32
    np.testing.assert_array_equal(m(torch.from_numpy(Q).float()).numpy(), F32.numpy())


def test_features_well_scaled(rng):
    """Orthonormal IR map: features have the scale of Q (no huge dynamic range)."""
    Q = rng.normal(size=(4, 16, 16))
    F = dsc.features(Q).reshape(-1, 45)
    rms = np.sqrt((F**2).mean(0))  # the frame is orthogonal per site: rms stays ~ std(Q) = 1
    assert np.all(np.abs(rms - 1.0) < 0.15)
    assert np.abs(dsc.features(3.0 * checkerboard(8))).max() <= 3.0 * 1.3 * math.sqrt(8) + 1e-12


def test_bad_input_raises():
    with pytest.raises(InputError, match="non-finite"):
        dsc.features(np.full((8, 8), np.nan))
    with pytest.raises(InputError, match="non-finite"):
        dsc.features(torch.full((8, 8), math.inf))
    with pytest.raises(InputError, match="L"):
        dsc.features(np.zeros((7, 7)))
    with pytest.raises(InputError, match="shape"):
        dsc.features(np.zeros((8, 6)))
    with pytest.raises(InputError, match="floating"):
        dsc.features_torch(torch.zeros(8, 8, dtype=torch.int64))
    with pytest.raises(InputError, match="shape"):
        dsc.features_torch(torch.zeros(8))


# ------------------------------------------------------------------------ IR construction


def test_ir_matrix_orthonormal_and_equals_butterfly(rng):
    M = dsc.ir_matrix()
    assert M.shape == (45, 45)
    np.testing.assert_allclose(M @ M.T, np.eye(45), atol=1e-14)
    Q = torch.from_numpy(rng.normal(size=(2, 10, 10)))
    dense = dsc.neighbourhood_torch(Q).numpy() @ M.T
    np.testing.assert_allclose(dsc.ir_coefficients_torch(Q).numpy(), dense, atol=1e-13)
    np.testing.assert_array_equal(dsc.Descriptor().ir_matrix.numpy(), M)


def test_ir_coefficients_transform_as_irreps(rng):
    """1-d IRs pick up chi_Gamma(A); all eleven doublets (incl. both type-III ones) go to A f.

    Bit-for-bit: the butterfly makes D4 act on the floating-point coefficients exactly.
    """
    L, c = 10, (4, 7)
    lat = Lattice(L)
    Q = rng.normal(size=(3, L, L))
    f = ir_numpy(Q)[:, c[0], c[1]]
    for op, A in enumerate(D4_MATRICES):
        g = ir_numpy(lat.apply_d4(Q, op, c))[:, c[0], c[1]]
        np.testing.assert_array_equal(g, expected_irrep_image(f, np.array(A)))


def test_paper_type3_doublets_as_printed_and_fixed():
    """Appendix A's type-III E basis: f_1^E as printed does not close under D4; with the sign
    of h fixed both doublets transform with identical matrices (what the module documents)."""
    p, q = 2, 1
    ring = [(p, q), (q, p), (-q, p), (-p, q), (-p, -q), (-q, -p), (q, -p), (p, -q)]

    def perm(A):  # value at r after the op = value at A^-1 r before it
        Ainv = np.linalg.inv(np.array(A)).round().astype(int)
        P = np.zeros((len(ring), len(ring)))
        for i, r in enumerate(ring):
            P[i, ring.index(tuple(Ainv @ np.array(r)))] = 1
        return P

    a, b, c, d, e, f, g, h = np.eye(8)

    def rep(V):  # matrices R(A) with V P(A) = R(A) V, or None if span(V) is not invariant
        mats = []
        for A in D4_MATRICES:
            W = V @ perm(A)
            R = np.linalg.lstsq(V.T, W.T, rcond=None)[0].T
            if not np.allclose(R @ V, W):
                return None
            mats.append(R)
        return mats

    assert rep(np.array([a + b - e - f, -c - d + g - h])) is None  # printed f_1^E
    fixed1 = rep(np.array([a + b - e - f, -c - d + g + h]))
    fixed2 = rep(np.array([c - d - g + h, a - b - e + f]))  # printed f_2^E
    assert fixed1 is not None and fixed2 is not None
    assert all(np.allclose(x, y) for x, y in zip(fixed1, fixed2, strict=True))
    # type II (diagonal sites a..d in angular order): the printed E is not a doublet (its
    # second component is the B1 function a - b + c - d); a - b - c + d is.
    ring[:] = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    a, b, c, d = np.eye(4)
    assert rep(np.array([a + b - c - d, a - b + c - d])) is None
    assert rep(np.array([a + b - c - d, a - b - c + d])) is not None


# --------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("L", [8, 10, 16])
def test_invariance_random(rng, L):
    Q = rng.normal(scale=1.5, size=(3, L, L))
    centres = [(0, 0), (L // 2, 3), (L - 1, L - 2)]
    assert centre_diff(Q, centres) <= TOL


def test_invariance_is_bitwise_and_covariant_on_whole_lattice(rng):
    """Transforming about c maps the feature field like a scalar field, bit for bit."""
    L = 12
    lat = Lattice(L)
    Q = rng.uniform(-3, 3, size=(2, L, L))
    F = dsc.features(Q).reshape(2, L * L, 45)
    for op, c in itertools.product(range(8), [(0, 0), (5, 2)]):
        F2 = dsc.features(lat.apply_d4(Q, op, c)).reshape(2, L * L, 45)
        np.testing.assert_array_equal(F2, F[:, lat.d4_permutation(op, c)])


def near_symmetric_configurations(rng, L: int) -> dict[str, np.ndarray]:
    x, y = np.indices((L, L))
    c = (L // 2, L // 2)
    cfg = {
        "zeros": np.zeros((L, L)),
        "uniform": np.full((L, L), 0.7),
        "checkerboard": checkerboard(L),
        "checkerboard+1e-9": checkerboard(L) + 1e-9 * rng.normal(size=(L, L)),
        "checkerboard+1e-3": checkerboard(L) + 1e-3 * rng.normal(size=(L, L)),
        "stripes_x": np.where(x % 2 == 0, 1.0, -1.0),
        "stripes_y_period4": np.where(y % 4 < 2, 2.0, -1.0),
        "diagonal_stripes": np.where((x + 2 * y) % 4 < 2, 1.0, 0.0),
        "domain_wall": checkerboard(L) * np.where(x < L // 2, 1.0, -1.0),
        "diagonal_wall": checkerboard(L) * np.where(x + y < L, 1.0, -1.0),
        "integers": rng.integers(-2, 3, size=(L, L)).astype(float),
    }
    for d2 in (1, 2, 4, 5, 8, 9, 10, 13):  # a single-shell excitation about c
        Q = np.zeros((L, L))
        for r in shell_offsets(d2):
            Q[(c[0] + r[0]) % L, (c[1] + r[1]) % L] = rng.normal()
        cfg[f"shell{d2}"] = Q
    single = np.zeros((L, L))
    single[c[0] + 1, c[1]] = 1.0  # reference on the wedge boundary (an axis)
    cfg["single_site"] = single
    # reference exactly on a wedge boundary, neighbourhood NOT mirror symmetric:
    # a site on the axis plus a chiral (A2) pattern on the d2 = 5 shell
    chiral = single.copy()
    ring = [(2, 1), (1, 2), (-1, 2), (-2, 1), (-2, -1), (-1, -2), (1, -2), (2, -1)]
    for k, r in enumerate(ring):
        chiral[c[0] + r[0], c[1] + r[1]] = 0.3 * (-1) ** k
    cfg["axis+chiral"] = chiral
    diag = np.zeros((L, L))
    diag[c[0] + 1, c[1] + 1] = 1.0  # reference on the diagonal boundary
    diag[c[0] + 2, c[1] + 1] = 0.25
    diag[c[0] + 1, c[1] + 2] = 0.25
    cfg["diagonal+chiral"] = diag + chiral - single
    return cfg


def test_invariance_near_symmetric(rng):
    L = 10
    centres = [(L // 2, L // 2), (L // 2 + 1, L // 2), (0, 0)]
    for name, Q in near_symmetric_configurations(rng, L).items():
        assert centre_diff(Q, centres) <= TOL, name
        F = dsc.features(Q)
        assert np.isfinite(F).all(), name


def test_degenerate_inputs_are_finite_and_sensible():
    L = 8
    for Q in (np.zeros((L, L)), checkerboard(L), np.full((L, L), -2.5)):
        F = dsc.features(Q)
        assert np.isfinite(F).all()
        # D4-symmetric about every site: only the A1 features survive
        assert np.abs(F[..., 9:]).max() == 0.0
        assert dsc.standard_frame(torch.from_numpy(Q)).eq(0).all()
    F = dsc.features(checkerboard(L, 1.0))
    np.testing.assert_allclose(F[0, 0, :9], [1, -2, 2, 2, -math.sqrt(8), 2, -2, math.sqrt(8),
                                             -math.sqrt(8)])
    for dtype in (torch.float32, torch.float64):
        Ft = dsc.features_torch(torch.zeros(2, L, L, dtype=dtype))
        assert torch.isfinite(Ft).all() and Ft.abs().max() == 0


def test_float32_invariance_on_boundaries(rng):
    """The exact butterfly also makes float32 decisions covariant (GPU hot path dtype)."""
    L = 10
    lat = Lattice(L)
    c = (L // 2, L // 2)
    for name, Q in near_symmetric_configurations(rng, L).items():
        F = dsc.features_torch(torch.from_numpy(Q).float())[c].numpy()
        for op in range(8):
            G = dsc.features_torch(torch.from_numpy(lat.apply_d4(Q, op, c)).float())[c].numpy()
            np.testing.assert_array_equal(F, G, err_msg=name)


def test_translation_covariance(rng):
    L = 12
    Q = rng.normal(size=(2, L, L))
    F = dsc.features(Q)
    for dx, dy in [(1, 0), (0, 3), (5, -7)]:
        F2 = dsc.features(Lattice.translate(Q, dx, dy))
        np.testing.assert_array_equal(F2, np.roll(F, (dx, dy), axis=(-3, -2)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    Q=hnp.arrays(
        np.float64, (8, 8),
        elements=st.floats(-5, 5, allow_nan=False, allow_infinity=False, allow_subnormal=True),
    ),
    op=st.integers(0, 7),
    cx=st.integers(0, 7),
    cy=st.integers(0, 7),
)
def test_invariance_property(Q, op, cx, cy):
    lat = Lattice(8)
    F = dsc.features(Q)
    F2 = dsc.features(lat.apply_d4(Q, op, (cx, cy)))
    assert np.isfinite(F).all()
    assert np.abs(F2[cx, cy] - F[cx, cy]).max() <= TOL
    # the whole feature field moves like a scalar field
    assert np.abs(F2.reshape(64, 45) - F.reshape(64, 45)[lat.d4_permutation(op, (cx, cy))]).max() <= TOL


# ------------------------------------------------------------------ standard frame, complete


def test_standard_frame_is_the_papers_standard_form(rng):
    """features(site) = IR coefficients of T(Q) about the site, with T D in [0, pi/4]."""
    L = 8
    lat = Lattice(L)
    Q = rng.normal(size=(L, L))
    T = dsc.standard_frame(torch.from_numpy(Q)).numpy()
    F = dsc.features(Q)
    w = dsc._table_arrays()["dipole"]
    for s in itertools.product(range(L), range(L)):
        np.testing.assert_array_equal(ir_numpy(lat.apply_d4(Q, int(T[s]), s))[s], F[s])
        D = w @ F[s][23:].reshape(11, 2)
        assert D[0] >= D[1] >= 0  # angle of the reference doublet in [0, pi/4]


def test_complete_reconstruction(rng):
    """The 45 features determine the neighbourhood up to a D4 operation."""
    L = 10
    lat = Lattice(L)
    Q = rng.normal(size=(L, L))
    c = (3, 6)
    M = dsc.ir_matrix()
    v = M.T @ dsc.features(Q)[c]  # neighbourhood in standard orientation
    images = [dsc.neighbourhood_torch(torch.from_numpy(lat.apply_d4(Q, op, c))).numpy()[c]
              for op in range(8)]
    assert min(np.abs(v - im).max() for im in images) < 1e-12


@pytest.mark.parametrize("d2", [1, 2, 4, 5, 8, 9, 10, 13])
def test_rotating_one_shell_changes_features(rng, d2):
    """Rotating a single shell by 90 degrees keeps the power spectrum but is not a symmetry."""
    L = 10
    c = (4, 5)
    Q = rng.normal(size=(L, L))
    Q2 = rotate_shell(Q, c, d2, D4_MATRICES[1])
    f, f2 = ir_numpy(Q)[c], ir_numpy(Q2)[c]
    np.testing.assert_allclose(power_spectrum(f), power_spectrum(f2), atol=1e-12)
    assert np.abs(dsc.features(Q2)[c] - dsc.features(Q)[c]).max() > 1e-2


@pytest.mark.parametrize("d2", [5, 10, 13])
@pytest.mark.parametrize("op", [4, 6])
def test_mirroring_one_8site_shell_changes_features(rng, d2, op):
    L = 10
    c = (4, 5)
    Q = rng.normal(size=(L, L))
    Q2 = rotate_shell(Q, c, d2, D4_MATRICES[op])
    np.testing.assert_allclose(power_spectrum(ir_numpy(Q)[c]), power_spectrum(ir_numpy(Q2)[c]),
                               atol=1e-12)
    assert np.abs(dsc.features(Q2)[c] - dsc.features(Q)[c]).max() > 1e-2


def test_distinct_configurations_get_distinct_features(rng):
    L = 8
    lat = Lattice(L)
    Qs = rng.normal(size=(20, L, L))
    F = dsc.features(Qs)[:, 0, 0]
    dist = np.abs(F[:, None] - F[None]).max(-1)
    assert (dist + np.eye(20) * 1e9).min() > 1e-3
    # chiral partners (mirror images, not rotations) of a chiral neighbourhood differ ...
    Q = Qs[0]
    F_mirror = dsc.features(rotate_shell(rotate_shell(Q, (0, 0), 5, D4_MATRICES[4]), (0, 0),
                                         10, D4_MATRICES[4]))[0, 0]
    assert np.abs(F_mirror - F[0]).max() > 1e-2
    # ... while the full mirror is a symmetry
    np.testing.assert_array_equal(dsc.features(lat.apply_d4(Q, 4, (0, 0)))[0, 0], F[0])


# ---------------------------------------------------------------------------- torch module


def test_descriptor_module_composes_with_mlp_and_backprops(rng):
    torch.manual_seed(0)
    model = torch.nn.Sequential(dsc.Descriptor(), torch.nn.Linear(45, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).double()
    Q = torch.from_numpy(rng.normal(size=(2, 8, 8))).requires_grad_(True)
    out = model(Q).squeeze(-1)
    assert out.shape == (2, 8, 8)
    out.sum().backward()
    assert Q.grad is not None and torch.isfinite(Q.grad).all()
    assert all(p.grad is not None for p in model.parameters())
    # the autograd path (stacked planes) and the inference path (direct writes) agree
    with torch.no_grad():
        np.testing.assert_array_equal(dsc.features_torch(Q).numpy(),
                                      dsc.features_torch(Q.detach()).numpy())
    np.testing.assert_array_equal(dsc.features_torch(Q).detach().numpy(),
                                  dsc.features_torch(Q.detach()).numpy())
    names = dict(model[0].named_buffers())
    assert {"ir_matrix", "dipole", "chars"} <= set(names)


def test_autograd_matches_finite_differences(rng):
    """Energy-type models differentiate through the descriptor: check d(w.G)/dQ."""
    Q = torch.from_numpy(rng.normal(size=(1, 8, 8))).requires_grad_(True)
    W = torch.from_numpy(rng.normal(size=(1, 8, 8, 45)))
    (grad,) = torch.autograd.grad((W * dsc.features_torch(Q)).sum(), Q)
    h = 1e-6
    with torch.no_grad():
        for _ in range(3):
            v = torch.from_numpy(rng.normal(size=(1, 8, 8)))
            fd = ((W * dsc.features_torch(Q + h * v)).sum()
                  - (W * dsc.features_torch(Q - h * v)).sum()) / (2 * h)
            assert float(fd) == pytest.approx(float((grad * v).sum()), rel=1e-6, abs=1e-8)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(rng, dtype):
    Q = torch.as_tensor(rng.normal(size=(2, 16, 16)), dtype=dtype)
    F_cpu = dsc.features_torch(Q)
    F_gpu = dsc.features_torch(Q.cuda())
    assert F_gpu.device.type == "cuda" and F_gpu.dtype == dtype
    torch.testing.assert_close(F_gpu.cpu(), F_cpu)
    m = dsc.Descriptor().to("cuda", dtype)
    torch.testing.assert_close(m(Q.cuda()).cpu(), F_cpu)
    # exact invariance on the GPU too
    lat = Lattice(16)
    for op in range(8):
        G = dsc.features_torch(torch.as_tensor(lat.apply_d4(Q.numpy(), op, (3, 4))).cuda())
        torch.testing.assert_close(G[:, 3, 4], F_gpu[:, 3, 4], rtol=0, atol=TOL)


# ------------------------------------------------------------------------------- workspace
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), L=st.sampled_from([4, 6, 8, 12]),
       batch=st.sampled_from([(), (1,), (3,)]), dtype=st.sampled_from(["float32", "float64"]),
       integer=st.booleans())
def test_workspace_path_equals_the_autograd_path_bit_for_bit(seed, L, batch, dtype, integer):
    """Two implementations of one arithmetic: planes written into a kept workspace (the hot
    loop) and fresh planes stacked under autograd. Integer-valued Q puts many sites on wedge
    boundaries, where the tie-break runs."""
    r = np.random.default_rng(seed)
    Q = r.integers(-1, 2, (*batch, L, L)) if integer else r.normal(0, 1, (*batch, L, L))
    Q = torch.as_tensor(Q, dtype=getattr(torch, dtype))
    ref = dsc.features_torch(Q.clone().requires_grad_()).detach()
    ws = dsc.Workspace(Q.shape, Q.dtype)
    got = dsc.Descriptor()(Q, ws)
    assert torch.equal(got, ref)
    assert torch.equal(dsc.features_torch(Q), ref) and dsc.features_torch(Q).is_contiguous()
    out = torch.empty_like(ref)
    assert dsc.Descriptor()(Q, out) is out and torch.equal(out, ref)


def test_workspace_is_reused_without_allocating_its_planes(rng):
    Q1 = torch.as_tensor(rng.normal(0, 1, (2, 10, 10)))
    Q2 = torch.as_tensor(rng.normal(0, 1, (2, 10, 10)))
    ws = dsc.Workspace.reuse(None, Q1.shape, Q1.dtype, "cpu")
    assert dsc.Workspace.reuse(ws, Q1.shape, Q1.dtype, "cpu") is ws
    assert dsc.Workspace.reuse(ws, (2, 12, 12), Q1.dtype, "cpu") is not ws
    assert dsc.Workspace.reuse(ws, Q1.shape, torch.float32, "cpu") is not ws
    desc = dsc.Descriptor().double()
    g1 = desc(Q1, ws)
    ptr = g1.data_ptr()
    g2 = desc(Q2, ws)  # overwrites the first result: a view of the same planes
    assert g2.data_ptr() == ptr and g2.shape == (2, 10, 10, dsc.N_FEATURES)
    assert torch.equal(g2, dsc.features_torch(Q2)) and torch.equal(g1, g2)
    # a workspace of another shape is not used
    other = dsc.Workspace((1, 10, 10), torch.float64)
    assert torch.equal(desc(Q1, other), dsc.features_torch(Q1))
    assert not other.fits(Q1)
