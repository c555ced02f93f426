"""Smoke test of `python -m bench.remote`: a small sweep and a few single submits over HTTP against in-process, on SQLite."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_remote_benchmark_prints_its_ratios_last(capsys):
    from bench import remote

    remote.main(["--jobs", "20", "--singles", "3", "--repeats", "1", "--store", "sqlite"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: sweep \d+\.\d\d, single \d+\.\d\d", lines[-1]), lines[-3:]
    assert [line.split()[:3] for line in lines[1:5]] == [["sweep", "local", "20"], ["sweep", "http", "20"],
                                                          ["single", "local", "3"], ["single", "http", "3"]]
