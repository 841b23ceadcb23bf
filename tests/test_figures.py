"""cdwdata.figures: every paper figure is written, and the numbers drawn are the data's.

Tiny data: TDGL-toy quenches (8x8, a few runs, 60 steps; seconds) analysed with
``cdwdata.summaries.analyze_store``. Each figure writes a PNG and a JSON sidecar of the
numbers drawn; the tests compare the sidecar with the stores and with
:mod:`cdwdata.analysis` computed directly, never pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from cdwdata import analysis, figures, schema, store
from cdwdata.errors import InputError
from cdwdata.quench import QuenchConfig, run_quench
from cdwdata.summaries import AnalysisSettings, analyze_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("figdata")
    cfg = QuenchConfig(L=8, temperatures=(0.1, 0.3), fillings=(0.5, 0.4), runs=3, steps=60,
                       save_every=10, seed=3, forcefield="tdgl", frame_vars=("Q", "n"))
    run_quench(cfg, root / "a.zarr", progress=False)
    run_quench(cfg.replace(seed=4), root / "b.zarr", progress=False)
    out = analyze_store(root / "a.zarr", root / "analysis", AnalysisSettings(window=(0.5, 3.0),
                                                                             n_boot=20))
    return {"traj": root / "a.zarr", "other": root / "b.zarr", **out}


def _check_png(path):
    assert path.exists() and path.suffix == ".png"
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) > 2000
    assert figures.sidecar_path(path).exists()
    return figures.read_sidecar(path)


def test_fig3_correlations_are_the_ensemble_means(data, tmp_path):
    steps = [10, 30, 60]
    png = figures.fig3_correlations(data["other"], data["traj"], steps, tmp_path / "f3.png")
    drawn = _check_png(png)
    assert [p["f"] for p in drawn["panels"]] == [0.5, 0.4] and drawn["steps"] == steps
    ds = store.open_dataset(data["other"])
    for panel in drawn["panels"]:
        Q = ds[schema.Q].sel({schema.T: 0.1, schema.F_FILL: panel["f"]})
        C = analysis.correlation_function(Q.sel(step=steps)).compute()
        keep = C[schema.R].values <= 4 + 1e-12  # r <= L/2
        for cur in panel["curves"]:
            mean = C.sel(step=cur["step"]).mean(schema.RUN).values[keep]
            np.testing.assert_allclose(cur["ml_mean"], mean, rtol=1e-12)
            assert np.all(np.asarray(cur["ed_sem"]) > 0)
        assert panel["runs"] == {"ml": 3, "ed": 3}
    # the same store as "ML" and "ED": the curves coincide exactly
    same = figures.read_sidecar(figures.fig3_correlations(data["traj"], data["traj"], steps,
                                                          tmp_path / "same.png"))
    assert all(c["rms_diff"] == 0.0 for p in same["panels"] for c in p["curves"])


def test_fig4_snapshots_from_phi_or_density(data, tmp_path):
    drawn = _check_png(figures.fig4_snapshots(data["order-parameter"], tmp_path / "f4.png",
                                              T=0.3, f=0.4, run=1, steps=[0, 20, 60]))
    phi = store.open_dataset(data["order-parameter"])[schema.PHI].sel(T=0.3, f=0.4).isel(run=1)
    want = [float(np.abs(phi.sel(step=s).values).mean()) for s in (0, 20, 60)]
    np.testing.assert_allclose(drawn["mean_abs_phi"], want, rtol=1e-6)
    assert drawn["time"] == [0.0, 1.0, 3.0]
    # a trajectory store: phi is computed from n (eq. 12) and gives the same numbers
    again = _check_png(figures.fig4_snapshots(data["traj"], tmp_path / "f4b.png", T=0.3,
                                              f=0.4, run=1, steps=[0, 20, 60]))
    np.testing.assert_allclose(again["mean_abs_phi"], want, rtol=1e-5)


def test_fig5_structure_factor_peak(data, tmp_path):
    ds = store.open_dataset(data["structure-factor"])
    drawn = _check_png(figures.fig5_structure_factor(ds, tmp_path / "f5.png"))
    S = ds[schema.S].isel(T=0, f=0).mean(schema.RUN)
    for s, peak in zip(drawn["steps"], drawn["S_at_Q"], strict=True):
        assert peak == pytest.approx(float(S.sel(step=s, kx=np.pi, ky=np.pi)), rel=1e-6)
    assert 0 not in drawn["steps"]
    Sq = ds["Sq_mean"].isel(T=0, f=0).sel(step=drawn["steps"][-1]).values
    np.testing.assert_allclose(drawn["Sq"][str(drawn["steps"][-1])], Sq[1:], rtol=1e-12)


def test_fig6_collapse_quality_and_guides(data, tmp_path):
    drawn = _check_png(figures.fig6_collapse(data["structure-factor"], data["domain-size"],
                                             tmp_path / "f6.png"))
    sf = store.open_dataset(data["structure-factor"])
    dom = store.open_dataset(data["domain-size"])
    assert [p["T"] for p in drawn["panels"]] == [0.1, 0.3]
    steps = drawn["steps"]
    for panel in drawn["panels"]:
        Sq = sf["Sq_mean"].sel(T=panel["T"], f=0.5, step=steps).compute()
        L = dom["L_mean"].sel(T=panel["T"], f=0.5, step=steps).compute()
        x, y = analysis.scaling_collapse(Sq, L)
        assert panel["collapse_msd"] == pytest.approx(float(analysis.collapse_quality(x, y)))
        assert set(panel["guides"]) <= {"-3", "-2"} and panel["guides"]
        slope = sf["porod_slope"].sel(T=panel["T"], f=0.5, step=steps[-1])
        if np.isfinite(slope):
            assert panel["porod_slope"] == pytest.approx(float(slope))
        # the guides are drawn over the windows cdw analyze fitted
        cell = sf.sel(T=panel["T"], f=0.5, step=steps[-1])
        L_last = float(L.sel(step=steps[-1]))
        if "-3" in panel["guides"]:
            want = [float(cell["porod_q_min"]) * L_last, float(cell["porod_q_max"]) * L_last]
            np.testing.assert_allclose(panel["guides"]["-3"]["fit_range"], want)
        np.testing.assert_allclose(panel["guides"]["-2"]["fit_range"],
                                   np.array(sf.attrs["large_q_window"]) * L_last)
        assert panel["collapse_msd_window"] == pytest.approx(
            float(sf["collapse_msd"].sel(T=panel["T"], f=0.5)))
    t = dict(zip(sf[schema.STEP].values.tolist(), sf[schema.TIME].values.tolist(),
                 strict=True))
    lo, hi = drawn["late_window"]
    assert all(lo <= t[s] <= hi for s in steps)


def test_fig7_growth_draws_the_stored_fits(data, tmp_path):
    dom, gro = data["domain-size"], data["growth-exponents"]
    drawn = _check_png(figures.fig7_growth([dom, dom], [gro, gro], tmp_path / "f7.png",
                                           titles=["(a)", "(b)"]))
    g = store.open_dataset(gro).load()
    assert len(drawn["panels"]) == 2 and drawn["allen_cahn_exponent"] == 0.5
    cells = drawn["panels"][0]["cells"]
    assert {(c["T"], c["f"]) for c in cells} == {(0.1, 0.5), (0.1, 0.4), (0.3, 0.5), (0.3, 0.4)}
    for c in cells:
        cell = g.sel(T=c["T"], f=c["f"])
        assert c["alpha"] == pytest.approx(float(cell["alpha"]), rel=1e-12)
        assert c["alpha_err"] == pytest.approx(float(cell["alpha_err"]), rel=1e-12)
        assert c["prefactor"] == pytest.approx(float(cell["prefactor"]), rel=1e-12)
        assert c["window"] == [0.5, 3.0] == g.attrs["window"]
    # a single pair gives one panel
    one = figures.read_sidecar(figures.fig7_growth(dom, gro, tmp_path / "f7b.png"))
    assert len(one["panels"]) == 1


def test_fig8_density_last_complete_frame(data, tmp_path):
    drawn = _check_png(figures.fig8_density(data["traj"], tmp_path / "f8.png", crop=6))
    assert drawn["step"] == 60 and drawn["time"] == 3.0
    n = store.open_dataset(data["traj"])[schema.N].sel(T=0.1, step=60).isel(run=0)
    for panel in drawn["panels"]:
        assert panel["mean_n"] == pytest.approx(float(n.sel(f=panel["f"]).mean()), rel=1e-6)


def test_bad_inputs_are_refused(data, tmp_path):
    with pytest.raises(InputError, match="step"):
        figures.fig3_correlations(data["traj"], data["traj"], [15], tmp_path / "x.png")
    with pytest.raises(InputError, match="PNG"):
        figures.fig8_density(data["traj"], tmp_path / "x.pdf")
    with pytest.raises(InputError, match="structure-factor"):
        figures.fig5_structure_factor(data["domain-size"], tmp_path / "x.png")
    with pytest.raises(InputError, match="T=0.2"):
        figures.fig4_snapshots(data["traj"], tmp_path / "x.png", T=0.2)
    assert not (tmp_path / "x.png").exists()


@pytest.fixture()
def partial(data, tmp_path):
    """A copy of the trajectory store as it looks while still being written: T = 0.1, f = 0.5,
    run 0 has 5 frames (to step 40), run 1 has 3, everything else none yet."""
    import shutil

    import zarr

    path = tmp_path / "partial.zarr"
    shutil.copytree(data["traj"], path)
    done = zarr.open_group(str(path), mode="r+")[schema.FRAMES_DONE]
    new = np.zeros(done.shape, dtype=done.dtype)
    new[0, 0, 0], new[0, 0, 1] = 5, 3
    done[...] = new
    return path


def test_snapshots_of_a_store_being_written_show_its_last_frames(partial, tmp_path):
    # Fig. 4 of run 0: its own last frame (step 40), not the last frame of every run (none)
    drawn = _check_png(figures.fig4_snapshots(partial, tmp_path / "f4.png", T=0.1, f=0.5,
                                              run=0))
    assert drawn["steps"][-1] == 40 and drawn["time"][-1] == 2.0
    last = _check_png(figures.fig4_snapshots(partial, tmp_path / "f4l.png", T=0.1, f=0.5,
                                             run=1, steps="last"))
    assert last["steps"] == [20]
    n = store.open_dataset(partial)[schema.N].sel(T=0.1, f=0.5, step=20).isel(run=1)
    want = float(np.abs(analysis.order_parameter(n).values).mean())
    assert last["mean_abs_phi"] == [pytest.approx(want, rel=1e-6)]
    # Fig. 8: the last frame of the runs shown
    drawn = _check_png(figures.fig8_density(partial, tmp_path / "f8.png", T=0.1,
                                            fillings=[0.5], run=0))
    assert drawn["step"] == 40 and drawn["time"] == 2.0
    with pytest.raises(InputError, match="no complete frame"):
        figures.fig8_density(partial, tmp_path / "x.png", T=0.3)
    with pytest.raises(InputError, match="no complete frame"):
        figures.fig4_snapshots(partial, tmp_path / "x.png", T=0.3, steps="last")


def test_snapshots_default_to_the_last_frame_of_a_finished_store(data, tmp_path):
    for src in (data["traj"], data["order-parameter"]):
        drawn = figures.read_sidecar(figures.fig4_snapshots(src, tmp_path / "f4.png",
                                                            steps="last"))
        assert drawn["steps"] == [60] and drawn["time"] == [3.0]
    drawn = figures.read_sidecar(figures.fig8_density(data["traj"], tmp_path / "f8.png"))
    assert drawn["step"] == 60
