"""The interactive coarsening explorer: it builds, renders, and reacts to its widgets.

The browser test serves the app on 127.0.0.1 and drives headless Chromium through selenium
(Debian ``chromium`` + ``chromium-driver``; ``.ci/system-deps`` installs them). It is skipped
when either is missing.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from cdwdata import explore
from cdwdata.errors import InputError, ParameterError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Tiny ED quench: L = 8, two temperatures, two runs, frames every 4 of 40 steps."""
    path = tmp_path_factory.mktemp("explore") / "tiny.zarr"
    return explore.demo_store(path, L=8, steps=40, save_every=4, runs=2,
                              temperatures=(0.1, 0.2))


def _models(layout):
    from bokeh.document import Document

    doc = Document()
    root = layout.get_root(doc)
    doc.add_root(root)
    return root


def test_app_builds_and_renders(store, tmp_path):
    from bokeh.models import GlyphRenderer, Image

    layout = explore.app(store)
    root = _models(layout)
    glyphs = [type(r.glyph) for r in root.select({"type": GlyphRenderer})]
    assert Image in glyphs  # the field image
    assert len(glyphs) > 5  # L(t) curves, fit, collapse curves
    from panel.widgets import Widget

    labels = {getattr(w, "label", None) or w.name for w in layout.select(Widget)}
    assert {"field", "T", "f", "run", "step", "fit window (time)"} <= labels
    html = tmp_path / "explorer.html"
    layout.save(str(html))
    assert html.stat().st_size > 10_000 and "bokeh" in html.read_text().lower()


def test_image_follows_the_widgets(store):
    ex = explore.Explorer(store)
    a = ex.frame("phi", 0.1, 0.5, 0, 0).values
    b = ex.frame("phi", 0.1, 0.5, 0, 40).values
    c = ex.frame("phi", 0.2, 0.5, 1, 40).values
    assert a.shape == (8, 8) and not np.allclose(a, b) and not np.allclose(b, c)
    n = ex.frame("n", 0.1, 0.5, 0, 40).values
    phi_ref = (n - 0.25 * (np.roll(n, 1, 0) + np.roll(n, -1, 0) + np.roll(n, 1, 1)
                           + np.roll(n, -1, 1))) * (-1.0) ** np.add.outer(range(8), range(8))
    np.testing.assert_allclose(b, phi_ref, atol=1e-12)
    img = ex.image("phi", 0.1, 0.5, 0, 40)
    np.testing.assert_allclose(np.sort(img.data["phi"].values.ravel()), np.sort(b.ravel()))


def test_growth_and_collapse_views(store):
    ex = explore.Explorer(store)
    cell = ex.cell(0.1, 0.5)
    assert cell["L"].dims == ("run", "step") and np.all(cell["t"] > 0)
    assert np.all(np.isfinite(cell["L"].values)) and np.all(cell["L"].values > 0)
    lo, hi = ex.default_window(0.1, 0.5)
    assert 0 < lo < hi == cell["t"][-1]
    growth = ex.growth(0.1, 0.5, window=(cell["t"][0], hi))
    assert "alpha=" in growth.opts.get().kwargs["title"]
    assert any("fit" in str(el.label) for el in growth)
    short = ex.growth(0.1, 0.5, window=(hi, hi))
    assert "no fit" in short.opts.get().kwargs["title"]
    collapse = ex.collapse(0.1, 0.5)
    assert len(collapse) >= 2
    assert ex.cell(0.1, 0.5) is cell  # cached


def test_explorer_and_cdw_analyze_give_one_growth_exponent(store, tmp_path, capsys):
    """One store, one alpha: the explorer's default window is the one cdw analyze fits over
    (and prints, and stores), so both give the same alpha and error."""
    from cdwdata import analysis, cli
    from cdwdata.store import open_dataset

    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    growth = open_dataset(out / "growth-exponents.zarr")
    lo, hi = growth.attrs["window"]
    assert f"t = {lo:g} .. {hi:g}" in printed
    t = open_dataset(store)["time"].values
    assert (lo, hi) == analysis.growth_window(t)
    ex = explore.Explorer(store)
    for T in ex.coords("T"):
        assert ex.default_window(T, 0.5) == (lo, hi)
        fit = analysis.growth_exponent(ex.cell(T, 0.5)["L"], window=(lo, hi))
        stored = growth.sel(T=T, f=0.5)
        for name in (analysis.ALPHA, analysis.ALPHA_ERR):
            assert float(fit[name]) == pytest.approx(float(stored[name]), rel=1e-9, abs=1e-12)
        title = ex.growth(T, 0.5).opts.get().kwargs["title"]
        assert f"alpha={float(fit[analysis.ALPHA]):.3f}" in title and f"t={lo:.3g}" in title


def test_growth_window_is_the_last_decade_or_every_frame_of_a_short_run():
    from cdwdata import analysis

    t = np.arange(0, 101, 1.0)
    assert analysis.growth_window(t) == (10.0, 100.0)
    short = np.array([0.0, 5.0, 50.0, 100.0])  # two times in the last decade
    assert analysis.growth_window(short) == (5.0, 100.0)
    with pytest.raises(InputError):
        analysis.growth_window([0.0])


def test_log_ticks_do_not_crowd_a_short_axis():
    assert [t for t, _ in explore.log_ticks([0.8, 3.0, 8.0])] == [1.0, 2.0, 5.0]
    assert [t for t, _ in explore.log_ticks(np.linspace(0.394, 0.552, 7))] == [0.4, 0.5]
    assert explore.log_ticks([0.42, 0.43]) == [(0.42, "0.42"), (0.43, "0.43")]
    assert [label for _, label in explore.log_ticks([1.0, 1000.0])] == [
        "1", "2", "5", "10", "20", "50", "100", "200", "500", "1e+03"]
    assert explore.log_ticks([0.0, -1.0, np.nan]) == []


def test_sidebar_widgets_fit_the_sidebar(store):
    ex = explore.Explorer(store)
    for widget in ex.widgets().values():
        assert widget.sizing_mode == "stretch_width"


def test_dataset_input_without_ensemble_dims(store):
    from cdwdata.store import open_dataset

    ds = open_dataset(store).isel(T=0, f=0, run=0)  # scalar T, f, run coordinates
    ex = explore.Explorer(ds)
    assert ex.ds.sizes["run"] == 1 and ex.coords("T") == [0.1]
    assert ex.frame("phi", 0.1, 0.5, 0, 8).shape == (8, 8)
    only_q = open_dataset(store)[["Q"]]
    assert explore.Explorer(only_q).fields == ["Q"]


def test_bad_input(store, tmp_path):
    import xarray as xr

    with pytest.raises(InputError, match="dims"):
        explore.Explorer(xr.Dataset({"a": ("x", np.zeros(3))}))
    with pytest.raises(InputError, match="store path or an xarray.Dataset"):
        explore.Explorer(42)
    with pytest.raises(ParameterError, match="port"):
        explore.serve(store, port=0)
    from cdwdata.cli import main

    assert main(["explore", str(tmp_path / "missing.zarr")]) == 2


# --- browser -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((explore.LOOPBACK, 0))
        return s.getsockname()[1]


_JS_DEEP = """
function deep(root, sel, out) {
  root.querySelectorAll(sel).forEach(e => out.push(e));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
}
"""
_JS_IMAGE_STATE = """
const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
if (!doc) return null;
let slider = null, img = null, title = null;
for (const m of doc.all_models) {
  const kind = m.constructor.__name__;
  if (kind === 'Slider') slider = m;
  if (kind === 'GlyphRenderer' && m.glyph.constructor.__name__ === 'Image') {
    const a = m.data_source.data.image[0];
    let s = 0; for (let i = 0; i < a.length; i++) s += (i + 1) * a[i];
    img = s;
  }
  if (kind === 'Title' && String(m.text).startsWith('phi')) title = m.text;
}
return {slider: slider ? [slider.start, slider.end, slider.value] : null, image: img,
        title: title};
"""


def _wait(fn, timeout: float, what: str, poll: float = 0.25):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def test_browser_renders_and_step_widget_changes_the_image(store):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium "
                    "chromium-driver, or run .ci/system-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    port = _free_port()
    server = explore.serve(store, port=port, threaded=True, verbose=False)
    profile = tempfile.mkdtemp(prefix="cdw-chromium-")
    driver = None
    try:
        opts = Options()
        opts.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-extensions",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):
            opts.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        except Exception as err:  # a broken browser install is not a failure of cdwdata
            pytest.skip(f"headless chromium does not start here: {str(err).splitlines()[0]}")
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        url = f"http://{explore.LOOPBACK}:{port}/"
        _wait(lambda: _listening(port), 30, "the server to listen")
        driver.get(url)

        def state(ok):
            s = driver.execute_script(_JS_IMAGE_STATE)
            return s if s and s["slider"] and s["image"] is not None and ok(s) else None

        canvases = _wait(lambda: driver.execute_script(
            _JS_DEEP + "return deep(document, 'canvas', []).length"), 60, "a canvas")
        assert canvases >= 1
        before = _wait(lambda: state(lambda s: True), 60, "the field image")
        start, end, value = before["slider"]
        assert value == end  # the explorer opens at the last frame
        assert "step=40" in before["title"]
        shot_before = driver.get_screenshot_as_png()

        # move the step slider to the first frame, as a user dragging it would
        driver.execute_script("""
            for (const m of Bokeh.documents[0].all_models)
              if (m.constructor.__name__ === 'Slider') m.value = m.start;""")
        after = _wait(lambda: state(lambda s: s["image"] != before["image"]
                                    and "step=0" in str(s["title"])), 60, "the image to change")
        assert after["slider"][2] == start
        assert driver.get_screenshot_as_png() != shot_before
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((explore.LOOPBACK, port)) == 0
