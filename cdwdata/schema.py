"""Names, units and long names of every dimension and variable cdwdata stores.

This is the one place where the on-disk vocabulary is spelled out (see docs/conventions.md,
"Names in stored data"). Other modules import these constants instead of typing ``"step"`` or
``"Q"``.
"""

from __future__ import annotations

# --- dimensions -------------------------------------------------------------------------------
T = "T"  # bath temperature of the quench                         (energy, units of t)
F_FILL = "f"  # electron filling fraction                         (dimensionless)
RUN = "run"  # independent realisation index
STEP = "step"  # Langevin step index
X = "x"  # lattice row
Y = "y"  # lattice column
SAMPLE = "sample"  # training-set snapshot index
KX = "kx"  # momentum along x, 2 pi m / L
KY = "ky"  # momentum along y
QR = "q"  # |k - (pi, pi)| for radially averaged S(q, t)
R = "r"  # real-space distance for C(r, t)

# --- coordinates ------------------------------------------------------------------------------
TIME = "time"  # step * dt                                        (1/omega units of the model)
SEED = "seed"  # per-run RNG key material, coordinate on `run`
SOURCE = "source"  # training snapshot origin: "random" | "quench"

# --- variables ----------------------------------------------------------------------------------
Q = "Q"  # lattice distortion                      (..., x, y)
V = "v"  # velocity dQ/dt                          (..., x, y)
N = "n"  # local electron density                  (..., x, y)
FORCE = "F"  # total force on Q                    (..., x, y)
PHI = "phi"  # local CDW order parameter, eq. 12   (..., x, y)
S = "S"  # structure factor S(k,t) or S(q,t)
LDOM = "L"  # domain size from eq. 15
MU = "mu"  # chemical potential of a frame or label   (T, f, run, step) or (sample, label)
T_E = "T_e"  # electron temperature of a grand-canonical label (sample, label)
FRAMES_DONE = "frames_done"  # resume marker: frames fully written per run (T, f, run)

#: (units, long_name) for each variable and coordinate we write.
ATTRS: dict[str, tuple[str, str]] = {
    T: ("t", "bath temperature"),
    F_FILL: ("1", "electron filling fraction"),
    RUN: ("1", "independent run"),
    STEP: ("1", "Langevin step"),
    TIME: ("1/omega", "time since the quench"),
    X: ("lattice spacing", "lattice row"),
    Y: ("lattice spacing", "lattice column"),
    SAMPLE: ("1", "training snapshot"),
    KX: ("1/lattice spacing", "momentum k_x"),
    KY: ("1/lattice spacing", "momentum k_y"),
    QR: ("1/lattice spacing", "distance |k - (pi, pi)| from the CDW wave vector"),
    R: ("lattice spacing", "distance"),
    Q: ("1", "lattice distortion Q"),
    V: ("omega", "lattice velocity dQ/dt"),
    N: ("1", "local electron density"),
    FORCE: ("t", "total force on Q"),
    PHI: ("1", "local CDW order parameter"),
    S: ("1", "structure factor of the electron density"),
    LDOM: ("lattice spacing", "CDW domain size"),
    MU: ("t", "chemical potential"),
    T_E: ("t", "electron temperature of the label"),
    FRAMES_DONE: ("1", "frames completely written (resume marker)"),
    SEED: ("1", "RNG key of the run"),
    SOURCE: ("1", "origin of the training snapshot"),
}


def attrs(name: str) -> dict[str, str]:
    """Return ``{"units": ..., "long_name": ...}`` for a stored variable or coordinate."""
    units, long_name = ATTRS[name]
    return {"units": units, "long_name": long_name}
