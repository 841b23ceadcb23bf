"""pipelines/reproduce.py: the small preset end to end, reruns, resume, refusals.

The end-to-end run (about 1.5 minutes on a loaded 2-core machine) is done once per module;
the tests then check its outputs, that a rerun skips every stage without starting a Dask
cluster, that ``--resume`` continues a partial store bit for bit, and that a changed
configuration is refused.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cdwdata import catalog, schema, store

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
sys.path.insert(0, str(PIPELINES))
import presets  # noqa: E402
import reproduce  # noqa: E402

STAGES = ["trainset", "train", "validate", "quench-T-scan", "quench-f-scan", "analyze-T-scan",
          "analyze-f-scan", "correlation-ed", "correlation-ml", "catalog", "figures", "summary"]
KINDS = {"training-set", "model", "trajectory", "order-parameter", "structure-factor",
         "domain-size", "growth-exponents"}


def _run(argv):
    rc = reproduce.main([str(a) for a in argv])
    return rc


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "small"
    lines: list[str] = []
    ctx = reproduce.Context(preset=presets.SMALL, out=out, command="test", log=lines.append)
    t0 = time.perf_counter()
    record = reproduce.run_pipeline(ctx)
    return {"out": out, "record": json.loads(json.dumps(record)), "log": lines,
            "wall": time.perf_counter() - t0}


# --- presets (fast) -----------------------------------------------------------------------------
def test_presets_are_complete_and_paper_scale():
    small, full = presets.load("small"), presets.load("full")
    for p in (small, full):
        assert p.quench.T_scan == (0.1, 0.2, 0.3) and p.quench.f_fixed == 0.5
        assert p.quench.f_scan == (0.5, 0.4, 0.3) and p.quench.T_fixed == 0.1
        assert set(p.fillings) == {0.5, 0.4, 0.3}
        json.dumps(p.to_dict())
    assert full.quench.L == 200 and full.quench.steps >= 20000 and full.quench.runs >= 4
    assert full.correlation.L == 40 and full.correlation.runs == 30
    assert full.trainset.L == 40
    assert full.trainset.n_random + full.trainset.quench_runs * (
        full.trainset.quench_steps // full.trainset.quench_save_every) == 600
    assert small.quench.L <= 24 and small.quench.runs == 2
    cpu = presets.load("cpu")
    assert cpu.correlation.ed_store and cpu.correlation.L == cpu.trainset.L == 40
    assert cpu.correlation.runs == cpu.trainset.quench_runs  # the training set's ED quenches
    assert cpu.correlation.fillings == cpu.fillings


def test_cpu_preset_runs_on_the_shipped_grand_canonical_model():
    """--use-shipped-models takes holstein-f{f}: the one grand-canonical model at each filling
    of the preset, whose card covers the preset's fillings and temperatures."""
    from cdwdata.ml.forcefield import model_file
    from cdwdata.ml.modelfile import read_card

    cpu = presets.load("cpu")
    stems = {model_file(f"holstein-f{f:g}") for f in cpu.fillings}
    assert len(stems) == 1
    card, _ = read_card(stems.pop())
    assert card["kind"] in ("density", "levels") and card["grand_canonical"]
    lo, hi = card["filling_range"]
    assert all(lo <= f <= hi for f in cpu.fillings)
    tlo, thi = card["temperature_range"]
    assert all(tlo <= T <= thi for T in cpu.quench.T_scan)


def test_yaml_preset_overrides_and_rejects_unknown_keys(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: small\nquench: {runs: 3, T_scan: [0.1, 0.3]}\ntraining: {epochs: 2}\n")
    p = presets.load(str(f))
    assert p.name == "mine" and p.quench.runs == 3 and p.quench.T_scan == (0.1, 0.3)
    assert p.training.epochs == 2 and p.quench.L == presets.SMALL.quench.L
    f.write_text("quench: {run: 3}\n")
    with pytest.raises(ValueError, match="run"):
        presets.load(str(f))
    with pytest.raises(ValueError, match="fit_steps"):
        presets.SMALL.replace(analysis=presets.AnalysisStage(fit_steps=(300, 900)))
    assert _run(["--preset", "nonesuch", "--out", tmp_path / "x"]) == 2


def test_dry_run_plans_every_stage_and_touches_nothing(tmp_path, capsys):
    ctx = reproduce.Context(preset=presets.FULL, out=tmp_path / "full")
    steps = reproduce.plan(ctx)
    assert [s["name"] for s in steps] == STAGES
    assert all(s["state"] == "to run" for s in steps)
    assert "200x200" in steps[3]["what"] and "20000 steps" in steps[3]["what"]
    assert _run(["--preset", "full", "--dry-run", "--out", tmp_path / "full"]) == 0
    assert "quench-f-scan" in capsys.readouterr().out
    assert not (tmp_path / "full").exists()


def test_shipped_models_missing_fails_clearly(tmp_path, monkeypatch, capsys):
    import cdwdata.ml.forcefield as ff

    monkeypatch.setattr(ff, "list_models", lambda folder=None: [])
    assert _run(["--use-shipped-models", "--out", tmp_path / "s"]) == 2
    err = capsys.readouterr().err
    assert "--use-shipped-models" in err and "holstein-f0.5" in err and "none yet" in err
    assert not (tmp_path / "s" / "quench").exists()


def test_each_ensemble_has_one_model_and_t_scan_config_is_unchanged(tmp_path):
    """The paper preset runs ensemble B on its own model; ensemble A's stage config (what a
    resumed run compares with its marker) holds no trace of B's."""
    paper = presets.load("paper")
    ctx = reproduce.Context(preset=paper, out=tmp_path / "p", use_shipped_models=True)
    assert ctx.forcefield("T-scan") == paper.quench.shipped_model == "holstein-gc-v5"
    assert ctx.forcefield("f-scan") == paper.quench.shipped_model_f_scan == "holstein-gc-v12"
    assert ctx.model_names() == ["holstein-gc-v5", "holstein-gc-v12"]
    a = reproduce.quench_stage(ctx, "T-scan").config["quench"]
    b = reproduce.quench_stage(ctx, "f-scan").config["quench"]
    assert "shipped_model_f_scan" not in a and a["shipped_model"] == "holstein-gc-v5"
    assert b["shipped_model"] == "holstein-gc-v12"
    assert {k: v for k, v in a.items() if k != "shipped_model"} == \
        {k: v for k, v in b.items() if k != "shipped_model"}
    same = reproduce.Context(preset=presets.load("cpu"), out=tmp_path / "c",
                             use_shipped_models=True)
    assert same.forcefield("f-scan") == same.forcefield("T-scan") == "holstein-f{f}"
    trained = reproduce.Context(preset=paper, out=tmp_path / "t")
    assert trained.forcefield("f-scan").endswith("holstein-f{f}")


def test_only_plans_the_named_stages_and_rejects_unknown_ones(tmp_path, capsys):
    ctx = reproduce.Context(preset=presets.FULL, out=tmp_path / "full",
                            only=("quench-f-scan", "analyze-f-scan"))
    states = {s["name"]: s["state"] for s in reproduce.plan(ctx)}
    assert states["quench-f-scan"] == states["analyze-f-scan"] == "to run"
    assert states["quench-T-scan"] == "not selected (--only)"
    assert _run(["--preset", "small", "--out", tmp_path / "s", "--only", "nope"]) == 2
    assert "--only 'nope' is not a stage" in capsys.readouterr().err
    assert not (tmp_path / "s" / "quench").exists()


# --- the small preset end to end (slow) ----------------------------------------------------------
@pytest.mark.slow
def test_every_stage_ran_and_wrote_its_outputs(small_run):
    out, record = small_run["out"], small_run["record"]
    assert [s["name"] for s in record["stages"]] == STAGES
    assert all(s["status"] == "ran" for s in record["stages"])
    for s in record["stages"]:
        for o in s["outputs"]:
            assert (out / o).exists(), o
        assert s["time_s"] > 0
    saved = json.loads((out / "pipeline.json").read_text())
    assert saved["preset"] == presets.SMALL.to_dict()
    assert [s["name"] for s in saved["stages"]] == STAGES and saved["wall_s"] > 0
    for name in reproduce.FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert any("done in" in line for line in small_run["log"])


@pytest.mark.slow
def test_stores_carry_the_pipeline_config(small_run):
    out = small_run["out"]
    want = presets.SMALL.to_dict()
    for rel, stage in (("data/trainset.zarr", "trainset"), ("quench/T-scan.zarr",
                                                            "quench-T-scan"),
                       ("analysis/f-scan/growth-exponents.zarr", "analyze-f-scan"),
                       ("correlation/ed.zarr", "correlation-ed")):
        attrs = store.read_attrs(out / rel)
        assert json.loads(attrs["pipeline_config"]) == want
        assert attrs["pipeline_stage"] == stage and attrs["pipeline_preset"] == "small"
    # the ML ensembles ran with the models trained here, one per filling
    attrs = store.read_attrs(out / "quench" / "f-scan.zarr")
    assert attrs["models"] == {f"{f:g}": str((out / "models").resolve() / f"holstein-f{f:g}")
                               for f in (0.5, 0.4, 0.3)}


@pytest.mark.slow
def test_catalog_lists_every_kind(small_run):
    cat = catalog.open(small_run["out"] / "catalog.yaml")
    kinds = {cat.entries[name].metadata["kind"] for name in catalog.entries(cat)}
    assert kinds == KINDS
    models = catalog.search(cat, kind="model")
    assert {m.metadata["f"][0] for m in models.values()} == {0.5, 0.4, 0.3}


@pytest.mark.slow
def test_growth_exponents_cover_the_preset_cells(small_run):
    out, q = small_run["out"], presets.SMALL.quench
    a = store.open_dataset(out / "analysis" / "T-scan" / "growth-exponents.zarr").load()
    b = store.open_dataset(out / "analysis" / "f-scan" / "growth-exponents.zarr").load()
    assert a[schema.T].values.tolist() == list(q.T_scan)
    assert a[schema.F_FILL].values.tolist() == [q.f_fixed]
    assert b[schema.T].values.tolist() == [q.T_fixed]
    assert b[schema.F_FILL].values.tolist() == list(q.f_scan)
    dt = 0.05
    assert a.attrs["window"] == pytest.approx([s * dt for s in presets.SMALL.analysis.fit_steps])
    assert np.isfinite(a["alpha"]).all() and np.isfinite(b["alpha"]).all()
    summary = (out / "summary.md").read_text()
    for T in q.T_scan:
        assert f"| T-scan | {T:g} | {q.f_fixed:g} | {float(a['alpha'].sel(T=T, f=0.5)):.3f} |" \
            in summary
    for f in q.f_scan:
        assert f"| f-scan | {q.T_fixed:g} | {f:g} | {float(b['alpha'].sel(T=0.1, f=f)):.3f} |" \
            in summary
    for f in (0.5, 0.4, 0.3):
        rep = json.loads((out / "validation" / f"holstein-f{f:g}-validation.json").read_text())
        assert f"| {f:g} | holstein-f{f:g} | {rep['force']['rmse']:.4f} |" in summary


@pytest.mark.slow
def test_rerun_skips_every_stage(small_run):
    out = small_run["out"]
    lines: list[str] = []
    ctx = reproduce.Context(preset=presets.SMALL, out=out, command="test rerun",
                            log=lines.append)
    t0 = time.perf_counter()
    record = reproduce.run_pipeline(ctx)
    wall = time.perf_counter() - t0
    assert [s["status"] for s in record["stages"]] == ["skipped"] * len(STAGES)
    assert {s["state"] for s in reproduce.plan(ctx)} == {"complete"}
    assert not any("dask:" in line for line in lines)  # no cluster was started
    assert wall < max(15.0, small_run["wall"] / 4)
    assert json.loads((out / "pipeline.json").read_text())["stages"][0]["status"] == "skipped"


@pytest.mark.slow
def test_changed_config_is_refused(small_run, tmp_path, capsys):
    f = tmp_path / "other.yaml"
    f.write_text("name: small\ntraining: {epochs: 4}\n")
    assert _run(["--preset", f, "--out", small_run["out"]]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "training.epochs: 3 -> 4" in err


@pytest.mark.slow
def test_resume_continues_a_partial_store(small_run, capsys):
    """A store cut short is refused without --resume and finished bit for bit with it."""
    import zarr

    out = small_run["out"]
    path = out / "quench" / "f-scan.zarr"
    n_frames = presets.SMALL.quench.steps // presets.SMALL.quench.save_every + 1
    before = np.asarray(zarr.open_group(str(path))[schema.N][0, 1, 0, -1])
    zarr.open_group(str(path), mode="r+")[schema.FRAMES_DONE][0, 1, 0] = n_frames - 1
    assert _run(["--out", out]) == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(["--out", out, "--resume"]) == 0
    rec = json.loads((out / "pipeline.json").read_text())
    status = {s["name"]: s["status"] for s in rec["stages"]}
    assert status["quench-f-scan"] == "ran" and status["quench-T-scan"] == "skipped"
    assert status["analyze-f-scan"] == "ran" and status["figures"] == "ran"
    assert (store.frames_done(path) == n_frames).all()
    after = np.asarray(zarr.open_group(str(path))[schema.N][0, 1, 0, -1])
    np.testing.assert_array_equal(after, before)


def test_ed_store_is_reused_only_when_it_matches(small_run, tmp_path):
    """correlation.ed_store: the training set's ED quenches stand in for the ED correlation
    runs when (and only when) they were made with the same settings."""
    from cdwdata import HolsteinParams

    ts = presets.SMALL.trainset
    src = small_run["out"] / "data" / "trainset-quench.zarr"
    same = presets.CorrelationStage(L=ts.L, T=ts.T, fillings=presets.SMALL.fillings,
                                    runs=ts.quench_runs, steps=ts.quench_steps,
                                    save_every=ts.quench_save_every, show_steps=(),
                                    seed=ts.seed, ed_store=str(src))
    dest = tmp_path / "correlation" / "ed.zarr"
    assert reproduce.reuse_ed_store(src, dest, same, HolsteinParams()) == src.resolve()
    a, b = store.open_dataset(src), store.open_dataset(dest)
    np.testing.assert_array_equal(a[schema.Q].values, b[schema.Q].values)
    import dataclasses

    for change, word in (({"runs": ts.quench_runs + 1}, "runs"), ({"seed": 7}, "seed"),
                         ({"fillings": (0.5,)}, "fillings"), ({"L": ts.L + 2}, "L")):
        with pytest.raises(reproduce.PipelineError, match=word):
            reproduce.reuse_ed_store(src, dest, dataclasses.replace(same, **change),
                                     HolsteinParams())
    with pytest.raises(reproduce.PipelineError, match="params"):
        reproduce.reuse_ed_store(src, dest, same, HolsteinParams(g=3.0))
    with pytest.raises(reproduce.PipelineError, match="no zarr store"):
        reproduce.reuse_ed_store(tmp_path / "nothing.zarr", dest, same, HolsteinParams())


def test_publish_ships_summaries_not_trajectories(small_run, tmp_path):
    import publish

    dest = tmp_path / "results" / "small"
    files = publish.publish(small_run["out"], dest)
    assert not any("quench" in p.parts or p.name == "trajectory" for p in files)
    for ens in ("T-scan", "f-scan"):
        S = store.open_dataset(dest / ens / "structure-factor.zarr")
        assert "S" not in S and {"Sq", "Sq_mean", "Sq_sem"} <= set(S.data_vars)
        src = store.open_dataset(small_run["out"] / "analysis" / ens / "structure-factor.zarr")
        np.testing.assert_array_equal(S["Sq_mean"].values, src["Sq_mean"].values)
    cat = catalog.build([dest], tmp_path / "cat.yaml")
    kinds = {catalog.metadata(cat, e)["kind"] for e in catalog.entries(cat)}
    assert kinds == {"structure-factor", "domain-size", "growth-exponents"}
    hits = catalog.search(cat, kind="growth-exponents")
    assert len(hits) == 2
    g = catalog.read(cat, next(iter(hits)))
    assert g["alpha"].dims == ("T", "f") and "alpha_err" in g
    assert (dest / "figures" / "fig7-growth.png").exists() and (dest / "summary.md").exists()


def test_until_stops_after_a_stage_and_a_rerun_continues(small_run, tmp_path):
    """--until: stages after it are not started; the completed ones are skipped later."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(small_run["out"], out)
    for marker in ("figures", "summary"):
        (out / ".pipeline" / f"{marker}.json").unlink()
    lines: list[str] = []
    ctx = reproduce.Context(preset=presets.SMALL, out=out, command="test", log=lines.append,
                            until="catalog")
    record = reproduce.run_pipeline(ctx)
    assert record["stopped_after"] == "catalog"
    assert [s["name"] for s in record["stages"]] == STAGES[:STAGES.index("catalog") + 1]
    assert not (out / ".pipeline" / "figures.json").exists()
    # the rest in a second invocation: its summary reports the earlier stages' own times
    record = reproduce.run_pipeline(reproduce.Context(preset=presets.SMALL, out=out,
                                                      command="test", log=lines.append))
    status = {s["name"]: s["status"] for s in record["stages"]}
    assert status["figures"] == status["summary"] == "ran" and status["train"] == "skipped"
    made = json.loads((out / ".pipeline" / "train.json").read_text())["time_s"]
    summary = (out / "summary.md").read_text()
    assert f"| train | done earlier | {made:.1f} |" in summary
    with pytest.raises(reproduce.PipelineError, match="not a stage"):
        reproduce.run_pipeline(reproduce.Context(preset=presets.SMALL, out=out,
                                                 log=lines.append, until="nope"))


def test_only_runs_the_named_stages_with_its_own_record(small_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(small_run["out"], out)
    (out / ".pipeline" / "analyze-f-scan.json").unlink()
    before = (out / "pipeline.json").read_text()
    lines: list[str] = []
    record = reproduce.run_pipeline(reproduce.Context(
        preset=presets.SMALL, out=out, command="test", log=lines.append,
        only=("analyze-f-scan",)))
    status = {s["name"]: (s["status"], s.get("reason")) for s in record["stages"]}
    assert status["analyze-f-scan"] == ("ran", None)
    assert all(v == ("skipped", "--only") for k, v in status.items() if k != "analyze-f-scan")
    assert (out / ".pipeline" / "analyze-f-scan.json").exists()
    assert (out / "pipeline.json").read_text() == before
    assert json.loads((out / "pipeline.analyze-f-scan.json").read_text())["stages"] \
        == record["stages"]


def test_publish_one_ensemble_of_a_run_still_going(small_run, tmp_path):
    import publish

    dest = tmp_path / "results" / "partial"
    label = "test scale, T-scan cells so far"
    files = publish.publish_analysis(small_run["out"] / "analysis" / "T-scan", dest, "T-scan",
                                     label)
    assert {p.parent.name for p in files if p.name == "zarr.json" and p.parent.suffix} \
        == {"domain-size.zarr", "growth-exponents.zarr", "structure-factor.zarr"}
    assert "S" not in store.open_dataset(dest / "T-scan" / "structure-factor.zarr")
    cat = catalog.build([dest], tmp_path / "cat.yaml")
    metas = [catalog.metadata(cat, e) for e in catalog.entries(cat)]
    assert sorted(m["kind"] for m in metas) == ["domain-size", "growth-exponents",
                                                "structure-factor"]
    assert all(m["description"].startswith(label) for m in metas)
    with pytest.raises(SystemExit, match="not a cdw analyze output"):
        publish.publish_analysis(tmp_path, dest, "T-scan", label)
    pngs = publish.draw_figures(small_run["out"] / "analysis" / "T-scan",
                                small_run["out"] / "quench" / "T-scan.zarr", dest, "T-scan",
                                T=[0.1], f=[0.5])
    assert [p.name for p in pngs] == [f"fig{k}-t-scan.png" for k in (
        "4-phi-snapshots", "5-structure-factor", "6-collapse", "7-growth", "8-density")]
    assert all(p.stat().st_size > 0 for p in pngs)
