"""Smoke test of `python -m bench.sd_queue`: a handful of tiny sd jobs through two real genq-workers,
batched and not."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_sd_queue_benchmark_prints_its_ratio_last(capsys):
    from bench import sd_queue

    sd_queue.main(["--jobs", "6", "--steps", "2", "--repeats", "1"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-3:]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("unbatched ", "batched "))}
    assert rows["unbatched"][1:3] == ["1", "6"] and rows["batched"][1:3] == ["8", "6"], lines  # the table's rows
