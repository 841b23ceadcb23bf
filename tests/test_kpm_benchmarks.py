"""The KPM benchmark scripts run (tiny sizes, no stores needed), so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path, *extra) -> dict:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out",
                    str(tmp_path), *extra], check=True, timeout=600, cwd=ROOT,
                   capture_output=True)
    name = script.removesuffix(".py").replace("_", "-") + "-smoke.json"
    return json.loads((tmp_path / name).read_text())


def test_accuracy_script_meets_its_tolerance(tmp_path):
    rep = _run("kpm_accuracy.py", tmp_path, "--T", "0.2", "--f", "0.5", "--tols", "1e-4")
    assert len(rep["default_tol"]) == 1 and rep["worst_default_error"] <= 1e-3
    assert rep["tolerance_sweep"][0]["max_abs_error"] <= 1e-4


def test_cost_script_reports_every_size(tmp_path):
    rep = _run("kpm_cost.py", tmp_path, "--backends", "scipy")
    assert [r["L"] for r in rep["scaling"]] == [8, 16]
    assert all(r["seconds_per_step"] > 0 for r in rep["scaling"])
