"""HolsteinParams (defaults, validation, round trip) and Lattice (neighbours, D4 group)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdwdata import HolsteinParams, Lattice
from cdwdata.params import check_filling, check_size, check_temperature, staggered_sign

# --------------------------------------------------------------------------- HolsteinParams

#: The defaults table of docs/conventions.md, typed in by hand.
CONTRACT_DEFAULTS = {
    "t": 1.0,
    "g": 3.5,
    "k": 1.0,
    "kappa": 0.18,
    "mass": 5.0,
    "gamma": 0.2,
    "dt": 0.05,
}


def test_defaults_match_contract_table():
    p = HolsteinParams()
    assert p.to_dict() == CONTRACT_DEFAULTS
    # dt = 0.022 / omega is only approximate in the table; omega is sqrt(k/m).
    assert p.omega == pytest.approx(math.sqrt(1.0 / 5.0))


def test_params_are_frozen():
    p = HolsteinParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.g = 1.0  # type: ignore[misc]
    assert p.g == 3.5


def test_params_are_hashable_and_compare_by_value():
    assert HolsteinParams(g=2.0) == HolsteinParams(g=2.0)
    assert hash(HolsteinParams(g=2.0)) == hash(HolsteinParams(g=2.0))
    assert HolsteinParams(g=2.0) != HolsteinParams(g=2.5)


def test_integer_inputs_are_stored_as_float():
    p = HolsteinParams(t=1, g=3, k=2, kappa=0, mass=5, gamma=0, dt=1)
    assert all(type(v) is float for v in p.to_dict().values())


def _names_value(msg: str, name: str, value) -> bool:
    """True if ``msg`` mentions the parameter ``name`` (as a word) and the bad ``value``."""
    if not re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", msg):
        return False
    candidates = {str(value), repr(value)}
    try:
        candidates |= {str(float(value)), repr(float(value))}
    except (TypeError, ValueError):
        pass
    return any(c in msg for c in candidates)


INVALID_PARAMS = [
    ("t", 0.0),
    ("t", -1.0),
    ("mass", 0.0),
    ("mass", -5.0),
    ("dt", 0.0),
    ("dt", -0.01),
    ("gamma", -0.1),
    ("g", math.nan),
    ("k", math.inf),
    ("kappa", -math.inf),
    ("mass", math.nan),
    ("dt", math.inf),
]


@pytest.mark.parametrize(("name", "value"), INVALID_PARAMS)
def test_invalid_parameter_raises_naming_it(name, value):
    with pytest.raises(ValueError) as info:
        HolsteinParams(**{name: value})
    assert _names_value(str(info.value), name, value), str(info.value)


@pytest.mark.parametrize(("k", "kappa"), [(1.0, 0.25), (1.0, -0.25), (1.0, 0.3), (0.5, -1.0),
                                          (-1.0, 0.0)])
def test_unstable_lattice_raises_naming_k_and_kappa(k, kappa):
    """k - 4|kappa| <= 0 makes the harmonic lattice unstable (the q = (0,0) or (pi,pi) mode)."""
    with pytest.raises(ValueError) as info:
        HolsteinParams(k=k, kappa=kappa)
    msg = str(info.value)
    assert _names_value(msg, "k", k), msg
    assert _names_value(msg, "kappa", kappa), msg


@pytest.mark.parametrize("kappa", [0.2499, -0.2499])
def test_marginally_stable_lattice_is_accepted_and_has_a_positive_elastic_energy(kappa, rng):
    """Accepted parameters give a positive-definite elastic energy: its softest mode (the
    checkerboard for kappa > 0, the uniform shift for kappa < 0) costs (k - 4|kappa|)/2 per
    site, and random configurations cost more."""
    p = HolsteinParams(k=1.0, kappa=kappa)
    L = 6
    softest = Lattice(L).sign if kappa > 0 else np.ones((L, L))
    energy = p.elastic_site_energy(softest).sum()
    assert energy == pytest.approx(0.5 * L * L * (p.k - 4 * abs(p.kappa)), rel=1e-12)
    assert energy > 0
    Q = rng.standard_normal((20, L, L))
    per_site = p.elastic_site_energy(Q).sum((-2, -1)) / (Q * Q).sum((-2, -1))
    assert (per_site >= 0.5 * (p.k - 4 * abs(p.kappa)) - 1e-12).all()


@pytest.mark.parametrize(
    ("check", "name", "value"),
    [
        (check_size, "L", 5),
        (check_size, "L", 7),
        (check_size, "L", 2),
        (check_size, "L", 0),
        (check_size, "L", -4),
        (check_size, "L", 4.5),
        (check_filling, "f", 0.0),
        (check_filling, "f", -0.1),
        (check_filling, "f", 1.0),
        (check_filling, "f", 1.5),
        (check_filling, "f", math.nan),
        (check_filling, "f", math.inf),
        (check_temperature, "T", -0.1),
        (check_temperature, "T", -1e-12),
        (check_temperature, "T", math.nan),
        (check_temperature, "T", math.inf),
    ],
)
def test_invalid_L_f_T_raise_naming_them(check, name, value):
    with pytest.raises(ValueError) as info:
        check(value)
    assert _names_value(str(info.value), name, value), str(info.value)


@pytest.mark.parametrize("L", [5, 2, 3])
def test_lattice_rejects_bad_size(L):
    with pytest.raises(ValueError, match=rf"L={L}\b"):
        Lattice(L)


def test_validators_accept_edges():
    assert check_temperature(0) == 0.0
    assert check_filling(1e-9) == 1e-9
    assert check_size(4) == 4
    assert check_size(12.0) == 12


# Hypothesis: the validity predicate, written independently of the implementation.
_any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10.0, 10.0),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300]),
)


def _valid(d: dict) -> bool:
    if not all(math.isfinite(v) for v in d.values()):
        return False
    return (
        d["t"] > 0 and d["mass"] > 0 and d["dt"] > 0 and d["gamma"] >= 0
        and d["k"] - 4 * abs(d["kappa"]) > 0
    )


_valid_params = st.builds(
    dict,
    t=st.floats(1e-6, 1e6),
    g=st.floats(-1e6, 1e6),
    kappa=st.floats(-1e3, 1e3),
    mass=st.floats(1e-6, 1e6),
    gamma=st.one_of(st.just(0.0), st.floats(0.0, 1e6)),
    dt=st.floats(1e-9, 1e3),
    margin=st.floats(1e-6, 1e6),
).map(lambda d: {**{k: v for k, v in d.items() if k != "margin"},
                 "k": 4 * abs(d["kappa"]) + d["margin"]})


@settings(max_examples=150, deadline=None)
@given(_valid_params)
def test_valid_params_construct_and_round_trip(d):
    if not _valid(d):  # 4|kappa| + margin can round back to 4|kappa| for tiny margins
        with pytest.raises(ValueError):
            HolsteinParams(**d)
        return
    p = HolsteinParams(**d)
    assert p.to_dict() == d
    q = HolsteinParams.from_dict({**p.to_dict(), "unrelated_attr": "ignored"})
    assert q == p
    assert q.matches(p)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: _any_float for name in CONTRACT_DEFAULTS}))
def test_params_raise_exactly_when_invalid(d):
    if _valid(d):
        p = HolsteinParams(**d)
        assert p.to_dict() == d
    else:
        with pytest.raises(ValueError):
            HolsteinParams(**d)


def test_matches_detects_a_changed_parameter():
    p = HolsteinParams()
    assert p.matches(HolsteinParams(g=3.5 * (1 + 1e-12)))
    assert not p.matches(HolsteinParams(g=3.6))


# --------------------------------------------------------------------------------- Lattice


@pytest.mark.parametrize("L", [4, 6, 8])
def test_neighbour_table_is_symmetric(L):
    lat = Lattice(L)
    nb = lat.neighbors
    assert nb.shape == (L * L, 4)
    for i in range(lat.N):
        assert len(set(nb[i])) == 4
        assert i not in nb[i]
        for j in nb[i]:
            assert i in nb[j]
    # +x of -x is the site itself, same for y.
    i = np.arange(lat.N)
    assert np.array_equal(nb[nb[i, 1], 0], i)
    assert np.array_equal(nb[nb[i, 3], 2], i)
    # Each site has Manhattan distance 1 to its neighbours (periodic).
    x, y = np.divmod(i, L)
    for c in range(4):
        nx, ny = np.divmod(nb[:, c], L)
        dx = np.minimum((nx - x) % L, (x - nx) % L)
        dy = np.minimum((ny - y) % L, (y - ny) % L)
        assert np.all(dx + dy == 1)


def test_bonds_and_hopping_matrix(params):
    lat = Lattice(6)
    assert lat.bonds.shape == (2 * lat.N, 2)
    assert len({tuple(sorted(b)) for b in lat.bonds}) == 2 * lat.N
    H = lat.hopping_matrix(params.t)
    assert np.array_equal(H, H.T)
    assert np.all((H == 0) | (H == -params.t))
    assert np.all((H != 0).sum(1) == 4)
    # Free band: eps(k) = -2t (cos kx + cos ky).
    q = 2 * np.pi * np.arange(6) / 6
    band = -2 * params.t * (np.cos(q)[:, None] + np.cos(q)[None, :])
    assert np.allclose(np.linalg.eigvalsh(H), np.sort(band.ravel()), atol=1e-12)


def test_sign_is_checkerboard():
    lat = Lattice(4)
    s = lat.sign
    assert s[0, 0] == 1 and s[0, 1] == -1 and s[1, 0] == -1 and s[1, 1] == 1
    assert np.array_equal(s * Lattice.neighbor_sum(s), -4 * np.ones((4, 4)))


def test_staggered_sign_numpy_and_torch_agree_on_any_grid():
    torch = pytest.importorskip("torch")
    s = staggered_sign(3, 5)
    x, y = np.indices((3, 5))
    assert np.array_equal(s, (-1.0) ** (x + y))
    t = staggered_sign(3, 5, like=torch.zeros(1, dtype=torch.float32))
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), s)


def test_neighbor_sum_numpy_in_place_and_torch_equal_four_rolls(rng):
    torch = pytest.importorskip("torch")
    Q = rng.standard_normal((3, 6, 6))
    rolls = sum(np.roll(Q, s, a) for a in (-2, -1) for s in (1, -1))
    out = np.empty_like(Q)
    assert Lattice.neighbor_sum(Q, out=out) is out
    np.testing.assert_allclose(out, rolls, rtol=0, atol=1e-14)
    np.testing.assert_allclose(Lattice.neighbor_sum(torch.from_numpy(Q)).numpy(), rolls,
                               rtol=0, atol=1e-14)


def test_elastic_force_is_minus_gradient_of_elastic_energy(params, rng):
    Q = rng.standard_normal((6, 6))
    F = params.elastic_force(Q)
    h = 1e-6
    for site in [(0, 0), (2, 3), (5, 5)]:
        Qp, Qm = Q.copy(), Q.copy()
        Qp[site] += h
        Qm[site] -= h
        dE = (params.elastic_site_energy(Qp).sum() - params.elastic_site_energy(Qm).sum()) / (2 * h)
        assert F[site] == pytest.approx(-dE, abs=1e-8)


def test_density_from_force_inverts_the_force_law(params, rng):
    from cdwdata import ed

    Q = rng.standard_normal((2, 6, 6))
    res = ed.solve(Q, 0.1, 0.4, params)
    np.testing.assert_allclose(params.density_from_force(res.F, Q, 0.4), res.n, atol=1e-12)
    free = HolsteinParams(g=0.0)
    assert np.array_equal(free.density_from_force(res.F, Q, 0.4), np.full_like(Q, 0.4))


CENTERS = [(0, 0), (2, 3), (5, 1)]


@pytest.mark.parametrize("center", CENTERS)
@pytest.mark.parametrize("L", [4, 6])
def test_d4_permutations_form_a_group_fixing_the_centre(L, center):
    lat = Lattice(L)
    perms = [lat.d4_permutation(op, center) for op in range(8)]
    as_tuples = {tuple(p) for p in perms}
    assert len(as_tuples) == 8, "the 8 operations must be distinct"
    for p in perms:
        assert np.array_equal(np.sort(p), np.arange(lat.N)), "not a permutation"
    assert tuple(perms[0]) == tuple(range(lat.N)), "op 0 must be the identity"
    c = (center[0] % L) * L + center[1] % L
    for p in perms:
        assert p[c] == c, "the centre must be fixed"
    # Closure: applying p then q is the permutation p[q]; it must be one of the eight.
    for p, q in itertools.product(perms, repeat=2):
        assert tuple(p[q]) in as_tuples
    # Inverses exist within the set.
    for p in perms:
        assert tuple(np.argsort(p)) in as_tuples


@pytest.mark.parametrize("center", CENTERS)
def test_d4_permutations_preserve_neighbours(center):
    lat = Lattice(6)
    bonds = {frozenset(b) for b in lat.bonds.tolist()}
    for op in range(8):
        p = lat.d4_permutation(op, center)
        assert {frozenset((int(p[i]), int(p[j]))) for i, j in lat.bonds} == bonds


def test_apply_d4_and_translate_move_values(rng):
    lat = Lattice(6)
    Q = rng.normal(size=(2, 6, 6))
    # 90-degree rotation about the origin: (x, y) -> (-y, x), i.e. new[x, y] = old[y, -x].
    R = lat.apply_d4(Q, 1)
    for x, y in itertools.product(range(6), repeat=2):
        assert R[..., x, y].tolist() == Q[..., y, (-x) % 6].tolist()
    # Four rotations are the identity; the mirror squared is the identity.
    R4 = Q
    for _ in range(4):
        R4 = lat.apply_d4(R4, 1)
    assert np.array_equal(R4, Q)
    assert np.array_equal(lat.apply_d4(lat.apply_d4(Q, 4), 4), Q)
    T = Lattice.translate(Q, 1, 2)
    assert T[..., 1, 2].tolist() == Q[..., 0, 0].tolist()
    assert np.array_equal(Lattice.translate(T, -1, -2), Q)


def test_shells_of_default_cutoff():
    shells = Lattice(8).shells(math.sqrt(13))
    d2 = [round(d * d) for d, _ in shells]
    assert d2 == [1, 2, 4, 5, 8, 9, 10, 13]
    assert [len(o) for _, o in shells] == [4, 4, 4, 8, 4, 4, 8, 8]
