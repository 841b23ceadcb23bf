"""One writer per store: a second writer stops with one line naming the holder.

A separate process holds the writer lock of a store (as a running ``cdw`` job does); every
kind of second writer (``--resume``, ``--overwrite``, ``cdw ed-dataset``, ``cdw analyze
--overwrite`` of the same output) must exit 2 with one line naming the holder's host and PID,
and leave the store untouched. A lock left by a SIGKILLed holder is taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soak
from conftest import TINY_ARGS, tree_hash

from cdwdata import storelock
from cdwdata.errors import StoreBusyError

pytestmark = pytest.mark.reliability

HOLD = """
import sys, time
from cdwdata.storelock import writing
with writing(sys.argv[1], "cdw quench --out elsewhere"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """``holder(path)`` starts a process that holds the lock of ``path``; returns it."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                                env=soak.cdw_env(), text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _refused(cdw, argv, holder_pid: int) -> str:
    rc, _, err = cdw(*argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (argv, rc, err)
    line = lines[0]
    assert f"PID {holder_pid} on {socket.gethostname()}" in line, line
    assert "cdw quench --out elsewhere" in line and "being written" in line
    return line


def test_second_writers_are_refused_and_the_store_is_untouched(tiny_store, tmp_path, cdw,
                                                               holder):
    path = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, path)
    before = tree_hash(path)
    proc = holder(path)
    _refused(cdw, ("ed-quench", *TINY_ARGS, "--out", path, "--resume"), proc.pid)
    _refused(cdw, ("ed-quench", *TINY_ARGS, "--out", path, "--overwrite"), proc.pid)
    _refused(cdw, ("quench", "--model", "ed", "--L", "8", "--out", path, "--overwrite",
                   "--no-progress"), proc.pid)
    assert tree_hash(path) == before
    record = json.loads(storelock.lock_files(path)[1].read_text())
    assert record["pid"] == proc.pid and record["host"] == socket.gethostname()


def test_ed_dataset_and_analyze_outputs_are_locked_too(tiny_store, tmp_path, cdw, holder):
    ts = tmp_path / "ts.zarr"
    proc = holder(ts)
    _refused(cdw, ("ed-dataset", "--L", "8", "--f", "0.5", "--random", "2", "--quench-runs",
                   "0", "--out", ts, "--workers", "1", "--no-progress"), proc.pid)
    assert not ts.exists()
    out = tmp_path / "analysis"
    proc2 = holder(out)
    _refused(cdw, ("analyze", tiny_store, "--out", out, "--overwrite"), proc2.pid)
    assert not out.exists()


def test_a_lock_left_by_a_killed_writer_is_taken_over(tiny_store, tmp_path, cdw, holder,
                                                      caplog):
    path = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, path)
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert storelock.read_holder(path).pid == proc.pid, "a SIGKILL leaves the record behind"
    rc, _, err = cdw("ed-quench", *TINY_ARGS, "--out", path, "--resume")
    assert rc == 0, err
    assert f"taking over the lock left by PID {proc.pid}" in caplog.text
    assert storelock.read_holder(path) is None, "a clean exit removes the record"
    soak.compare_stores(path, tiny_store)


def test_the_lock_is_released_after_errors_and_reentrant(tmp_path):
    path = tmp_path / "x.zarr"
    with pytest.raises(RuntimeError), storelock.writing(path, "first"):
        raise RuntimeError("boom")
    assert storelock.read_holder(path) is None
    with storelock.writing(path, "outer"), storelock.writing(path, "inner"):
        assert storelock.read_holder(path).command == "outer"
    assert storelock.read_holder(path) is None


def _plant_record(path: Path, host: str, age_s: float) -> None:
    record = storelock.lock_files(path)[1]
    record.write_text(json.dumps({"host": host, "pid": 12345, "started": "2026-01-01T00:00:00",
                                  "command": "cdw quench on another node"}))
    stamp = time.time() - age_s
    os.utime(record, (stamp, stamp))


def test_shared_filesystem_records_of_other_hosts(tmp_path, caplog):
    """Where the OS lock is node-local, a fresh record of another host still refuses the
    second writer; one not refreshed for STALE_AFTER_S is taken over."""
    path = tmp_path / "x.zarr"
    _plant_record(path, "node-17", age_s=5)
    with pytest.raises(StoreBusyError, match=r"PID 12345 on node-17 .*refreshed 5 s ago"):
        storelock.StoreLock(path).acquire()
    _plant_record(path, "node-17", age_s=storelock.STALE_AFTER_S + 5)
    with storelock.writing(path, "mine"):
        assert storelock.read_holder(path).command == "mine"
    assert "taking over the lock left by PID 12345 on node-17" in caplog.text


def test_the_holder_refreshes_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(storelock, "HEARTBEAT_S", 0.05)
    path = tmp_path / "x.zarr"
    with storelock.writing(path):
        record = storelock.lock_files(path)[1]
        old = time.time() - 100
        os.utime(record, (old, old))
        time.sleep(0.3)
        assert time.time() - record.stat().st_mtime < 5
