"""Presets of the paper reproduction (``pipelines/reproduce.py``): small frozen dataclasses.

A preset is the whole definition of a reproduction run. Every value in it is written to
``pipeline.json`` and, as the JSON attr ``pipeline_config``, into every store the pipeline
makes (STYLE principle 9), so a store alone says which pipeline settings produced it.

Four presets are built in:

* ``small``: the whole chain on a 2-core laptop in about two minutes (tiny lattices, a
  handful of ED samples, 3 epochs, a few hundred Langevin steps). Its numbers are a smoke
  test of the machinery, not physics.
* ``full``: the paper's scale (40x40 ED training sets of 600 snapshots per filling, 200x200
  quenches of 20 000 steps, 40x40 ML vs ED correlations over 30 runs) for a GPU node or a
  Dask cluster.
* ``paper``: the paper's quench scale (200x200, t = 1000, 4 runs per cell) with the shipped
  grand-canonical model, for a long CPU job or a GPU.
* ``cpu``: what one 2-core CPU can do in about half an hour with the shipped models
  (64x64 quenches of 6000 steps; C(r, t) against the training set's ED quenches). Its
  results are shipped in ``cdwdata/results/paper-cpu``.

A preset can also be read from a YAML file (:func:`load`): a mapping with the fields of
:class:`Preset`, nested sections as mappings; missing fields keep the ``small`` defaults
unless the file names ``base: full``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdwdata import analysis

#: Filling fractions of the paper's three ML models.
PAPER_FILLINGS = (0.5, 0.4, 0.3)


@dataclass(frozen=True)
class TrainsetStage:
    """ED training set per filling (:class:`cdwdata.trainset.TrainsetConfig`).

    ``n_random`` random configurations plus ``quench_runs * quench_steps /
    quench_save_every`` snapshots of ED-Langevin quenches at temperature ``T`` (the paper:
    200 random + 400 quench snapshots on 40x40 at T = 0.1).
    """

    L: int = 12
    T: float = 0.1
    n_random: int = 12
    quench_runs: int = 2
    quench_steps: int = 200
    quench_save_every: int = 20
    seed: int = 0


@dataclass(frozen=True)
class TrainingStage:
    """Training of one direct-force model per filling (:func:`cdwdata.ml.train.train`)."""

    kind: str = "force"
    #: what a force model learns: ``"total"`` force (paper) or ``"electronic"`` g(n - 1/2)
    #: with the exact elastic force added (see ``cdw train --target``)
    target: str = "total"
    #: ``"mse"`` (paper) or ``"huber"`` (see ``cdw train --loss``)
    loss: str = "mse"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    schedule: str = "plateau"
    patience: int = 30
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class QuenchStage:
    """The two ML quench ensembles of section IV.

    Ensemble A (``T-scan``): f = ``f_fixed`` at every T of ``T_scan`` (paper Figs. 4-7a).
    Ensemble B (``f-scan``): T = ``T_fixed`` at every f of ``f_scan`` (Figs. 7b, 8), each
    filling with its own model. B uses the seed ``seed + 1``, so its (T_fixed, f_fixed) cell
    is an independent ensemble, not a copy of A's.
    """

    L: int = 16
    steps: int = 400
    save_every: int = 20
    runs: int = 2
    T_scan: tuple[float, ...] = (0.1, 0.2, 0.3)
    f_fixed: float = 0.5
    f_scan: tuple[float, ...] = PAPER_FILLINGS
    T_fixed: float = 0.1
    seed: int = 0
    frame_dtype: str = "float32"
    compute_dtype: str = "float32"
    #: hidden-layer precision of a grand-canonical model ("float32" or "bf16")
    precision: str = "float32"
    #: with --use-shipped-models: one shipped model for every cell, named by version (a run
    #: resumed after a new default model is shipped keeps its model); "" = holstein-f{f}
    shipped_model: str = ""
    #: with --use-shipped-models: ensemble B's model if it differs from ``shipped_model``
    #: ("" = the same); each ensemble is one model, the two ensembles may differ
    shipped_model_f_scan: str = ""


@dataclass(frozen=True)
class AnalysisStage:
    """``cdw analyze`` settings (:class:`cdwdata.summaries.AnalysisSettings`).

    ``fit_steps`` is the late-time window of the growth-exponent fit in Langevin steps
    (converted to time with dt); the Porod windows are those of ``cdw analyze`` (the
    intermediate one chosen from the measured wall density unless ``porod_qL`` is given).
    """

    fit_steps: tuple[int, int] = (40, 400)
    porod_qL: tuple[float, float] | None = None
    large_q: tuple[float, float] = analysis.LARGE_Q
    n_boot: int = 200
    seed: int = 0


@dataclass(frozen=True)
class CorrelationStage:
    """ML vs ED quenches on a small lattice for C(r, t) = <Q_i Q_j> (paper Fig. 3).

    ML and ED runs share seeds, hence hot starts and thermal noise; ``show_steps`` are the
    steps drawn (each a multiple of ``save_every``). ``ed_store`` names an existing, complete
    ED-Langevin trajectory store made with exactly these settings (L, T, fillings, runs,
    steps, save_every, seed and the model parameters; checked), for example the quenches of
    an ED training set (``<trainset>-quench.zarr``): it is copied instead of recomputed.
    """

    L: int = 12
    T: float = 0.1
    fillings: tuple[float, ...] = (0.5, 0.4)
    runs: int = 3
    steps: int = 200
    save_every: int = 20
    show_steps: tuple[int, ...] = (20, 100, 200)
    seed: int = 0
    ed_store: str = ""  # reuse this ED-Langevin trajectory store instead of recomputing it


@dataclass(frozen=True)
class Preset:
    """One reproduction run (see the module docstring)."""

    name: str = "small"
    description: str = ("smoke-test scale: the whole chain on a 2-core CPU in about two "
                        "minutes; numbers are not physics")
    fillings: tuple[float, ...] = PAPER_FILLINGS
    params: dict[str, float] = field(default_factory=dict)  # HolsteinParams overrides
    torch_threads: int = 1
    trainset: TrainsetStage = field(default_factory=TrainsetStage)
    training: TrainingStage = field(default_factory=TrainingStage)
    quench: QuenchStage = field(default_factory=QuenchStage)
    analysis: AnalysisStage = field(default_factory=AnalysisStage)
    correlation: CorrelationStage = field(default_factory=CorrelationStage)
    expected_time: str = "about 2 minutes on a 2-core CPU"

    def __post_init__(self) -> None:
        q, c, a = self.quench, self.correlation, self.analysis
        for name, stage in (("quench", q), ("correlation", c)):
            if stage.steps % stage.save_every:
                raise ValueError(f"{self.name}: {name}.steps={stage.steps} is not a multiple "
                                 f"of save_every={stage.save_every}")
        bad = [s for s in c.show_steps if s % c.save_every or not 0 <= s <= c.steps]
        if bad:
            raise ValueError(f"{self.name}: correlation.show_steps {bad} are not saved frames "
                             f"(multiples of {c.save_every} up to {c.steps})")
        lo, hi = a.fit_steps
        if not 0 < lo < hi <= q.steps:
            raise ValueError(f"{self.name}: analysis.fit_steps={a.fit_steps} must satisfy "
                             f"0 < lo < hi <= quench.steps={q.steps}")
        if (hi - lo) // q.save_every < 2:
            raise ValueError(f"{self.name}: analysis.fit_steps={a.fit_steps} holds fewer than "
                             f"3 frames (save_every={q.save_every})")
        needed = set(q.f_scan) | {q.f_fixed} | set(c.fillings)
        missing = sorted(needed - set(self.fillings))
        if missing:
            raise ValueError(f"{self.name}: no model for f={missing}: add them to fillings")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every value (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes) -> Preset:
        return dataclasses.replace(self, **changes)


SMALL = Preset()

FULL = Preset(
    name="full",
    description=("paper scale (section III-IV): 40x40 ED training sets, 200x200 ML quenches "
                 "of 20000 steps, 40x40 ML vs ED correlations over 30 runs"),
    trainset=TrainsetStage(L=40, T=0.1, n_random=200, quench_runs=8, quench_steps=500,
                           quench_save_every=10, seed=0),
    training=TrainingStage(kind="force", epochs=500, batch_size=1024, lr=1e-3,
                           schedule="plateau", patience=30, seed=0),
    quench=QuenchStage(L=200, steps=20000, save_every=100, runs=8, seed=0),
    analysis=AnalysisStage(fit_steps=(2000, 20000), n_boot=500),
    correlation=CorrelationStage(L=40, T=0.1, fillings=(0.5, 0.4), runs=30, steps=2000,
                                 save_every=100, show_steps=(200, 500, 1000, 2000), seed=0),
    expected_time=("estimated 3-5 hours on one GPU node (1 H100 + 16 cores, --device cuda); "
                   "not yet timed end to end, see pipelines/README.md"),
)

CPU = Preset(
    name="cpu",
    description=("reduced scale for one 2-core CPU, run with --use-shipped-models: 64x64 ML "
                 "quenches of 6000 steps (t = 300), 3 runs per cell; ML vs ED C(r,t) on 40x40 "
                 "against the 15 ED-Langevin quenches per filling of the shipped models' "
                 "training set (data/trainset-L40-quench.zarr); the results shipped in "
                 "cdwdata/results/paper-cpu were made with it"),
    trainset=TrainsetStage(L=40, T=0.1, n_random=200, quench_runs=15, quench_steps=300,
                           quench_save_every=10, seed=0),
    # without --use-shipped-models the pipeline trains canonical per-filling models with these
    # settings (those of the earlier canonical models, benchmarks/baselines); with it, the
    # quenches use the shipped grand-canonical model (README, "The force field")
    training=TrainingStage(kind="force", target="electronic", loss="huber", epochs=40,
                           batch_size=1024, lr=1e-3, schedule="cosine", patience=40, seed=0),
    quench=QuenchStage(L=64, steps=6000, save_every=60, runs=3, seed=0),
    analysis=AnalysisStage(fit_steps=(600, 6000), n_boot=500),
    correlation=CorrelationStage(L=40, T=0.1, fillings=PAPER_FILLINGS, runs=15, steps=300,
                                 save_every=10, show_steps=(50, 100, 300), seed=0,
                                 ed_store="data/trainset-L40-quench.zarr"),
    expected_time=("about 40-50 minutes on a 2-core CPU with --use-shipped-models (measured: "
                   "52 min of stage time, 31 of them the T-scan sharing the machine with "
                   "an ED job; the f-scan alone took 19 min)"),
)

PAPER = Preset(
    name="paper",
    description=("the paper's quench scale with the shipped grand-canonical model, run with "
                 "--use-shipped-models: 200x200 ML quenches of 20000 steps (t = 1000), frames "
                 "every 100 steps, 4 runs per cell (T = 0.1, 0.2, 0.3 at f = 0.5; f = 0.5, "
                 "0.4, 0.3 at T = 0.1), alpha fitted over t = 100..1000; ML vs ED C(r, t) on "
                 "40x40 against the held-out ED-Langevin quenches "
                 "(data/ed-quench-heldout-L40.zarr, README 'The force field')"),
    trainset=CPU.trainset,
    training=CPU.training,
    # bf16 hidden layers: 1.4x faster, L(t) and <|phi|> within 0.2 % of float32 with the same
    # noise (benchmarks/README.md, "Precision")
    # ensemble A (T-scan) with holstein-gc-v5, the default model when it was started;
    # ensemble B (f-scan) with holstein-gc-v12, 3x cheaper late in a quench and 1.3-2.5x
    # closer to KPM at 200x200 (README, "The force field"); their common cell (T = 0.1,
    # f = 0.5) compares the two models at paper scale
    quench=QuenchStage(L=200, steps=20000, save_every=100, runs=4, seed=0, precision="bf16",
                       shipped_model="holstein-gc-v5", shipped_model_f_scan="holstein-gc-v12"),
    analysis=AnalysisStage(fit_steps=(2000, 20000), n_boot=500),
    correlation=CorrelationStage(L=40, T=0.1, fillings=PAPER_FILLINGS, runs=4, steps=2000,
                                 save_every=20, show_steps=(200, 1000, 2000), seed=1001,
                                 ed_store="data/ed-quench-heldout-L40.zarr"),
    expected_time=("1.6e10 site-steps: hours on a 2-core CPU (benchmarks/README.md, whole "
                   "Langevin steps), minutes on one GPU; resumable stage by stage"),
)

PRESETS = {"small": SMALL, "full": FULL, "cpu": CPU, "paper": PAPER}

_SECTIONS = {"trainset": TrainsetStage, "training": TrainingStage, "quench": QuenchStage,
             "analysis": AnalysisStage, "correlation": CorrelationStage}


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_dict(d: dict[str, Any], base: Preset = SMALL) -> Preset:
    """A preset from a (YAML/JSON) mapping; unknown keys raise ValueError."""
    d = dict(d)
    d.pop("base", None)
    known = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown preset field(s) {unknown}; known: {sorted(known)}")
    changes: dict[str, Any] = {}
    for key, value in d.items():
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            fields = {f.name for f in dataclasses.fields(cls)}
            bad = sorted(set(value or {}) - fields)
            if bad:
                raise ValueError(f"unknown field(s) {bad} in section {key!r}; known: "
                                 f"{sorted(fields)}")
            changes[key] = dataclasses.replace(
                getattr(base, key), **{k: _tuples(v) for k, v in (value or {}).items()})
        else:
            changes[key] = _tuples(value) if key != "params" else dict(value or {})
    return dataclasses.replace(base, **changes)


def load(name_or_path: str) -> Preset:
    """A built-in preset by name (``small``, ``full``) or one read from a YAML file."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"preset {name_or_path!r}: not one of {sorted(PRESETS)} and no such "
                         "YAML file")
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a preset file must be a mapping of preset fields")
    base = PRESETS.get(str(doc.get("base", "small")))
    if base is None:
        raise ValueError(f"{path}: base={doc.get('base')!r} is not one of {sorted(PRESETS)}")
    doc.setdefault("name", path.stem)
    return from_dict(doc, base)
