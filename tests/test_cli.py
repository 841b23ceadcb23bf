"""The ``cdw`` dispatcher: mistakes end in one line and exit code 2, bugs keep their traceback."""

from __future__ import annotations

import numpy as np
import pytest

from cdwdata import cli
from cdwdata.commands import analyze
from cdwdata.errors import ParameterError


def _run_raising(monkeypatch, err: BaseException):
    def run(args):
        raise err

    monkeypatch.setattr(analyze, "run", run)
    return cli.main(["analyze", "somewhere.zarr"])


def test_a_cdwdata_error_is_one_line_and_exit_2(monkeypatch, capsys):
    assert _run_raising(monkeypatch, ParameterError("L=7 is not allowed")) == 2
    err = capsys.readouterr().err
    assert err == "cdw analyze: error: L=7 is not allowed\n"


def test_an_os_error_is_one_line_and_exit_2(monkeypatch, capsys):
    assert _run_raising(monkeypatch, FileNotFoundError(2, "No such file", "x.zarr")) == 2
    assert capsys.readouterr().err == "cdw analyze: error: No such file: x.zarr\n"


def test_a_bare_value_error_from_numpy_is_a_bug_and_keeps_its_traceback(monkeypatch):
    def run(args):
        np.reshape(np.arange(3), (2, 2))  # ValueError from inside numpy: a bug, not a mistake

    monkeypatch.setattr(analyze, "run", run)
    with pytest.raises(ValueError, match="reshape"):
        cli.main(["analyze", "somewhere.zarr"])
