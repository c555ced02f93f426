"""What a job's page shows first: its kind's main results (JobParams.main_results), each image's settings once,
and its metrics split into charts (series with more than one point, train and test of one measure together)
and plain numbers."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatch

from genq.client.ui.figures import png_settings
from genq.core.kinds import KINDS

SERIES_PREFIXES = ("train_", "test_", "val_", "valid_")  # train_loss and test_loss are one chart: "loss"


@dataclass
class Picture:
    row: object  # its artifact row
    settings: dict[str, str] = field(default_factory=dict)  # its PNG text chunks (sd: parameters, genq)

    @property
    def seed(self):
        try:
            return json.loads(self.settings.get("genq", "")).get("seed")
        except ValueError:
            return None


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def result_patterns(kind: str) -> tuple[str, ...]:
    cls = KINDS.get(kind)
    if cls is None:
        return ()
    return tuple(cls.main_results) or ((cls.main_picture,) if cls.main_picture else ())


def pictures(kind: str, rows, store) -> tuple[list[Picture], list[Picture]]:
    """(the main results in the kind's order, the job's other images), each with its settings."""
    images = sorted((row for row in rows if row.media_type.startswith("image/")), key=lambda row: natural_key(row.name))
    main: list[Picture] = []
    for pattern in result_patterns(kind):
        main += [Picture(row, png_settings(store, row)) for row in images
                 if fnmatch(row.name, pattern) and row.name not in {p.row.name for p in main}]
    chosen = {p.row.name for p in main}
    return main, [Picture(row, png_settings(store, row)) for row in images if row.name not in chosen]


def chart_name(metric: str) -> str:
    for prefix in SERIES_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def split_metrics(counts: list[tuple[str, int]]) -> tuple[dict[str, list[str]], list[str]]:
    """({chart: its metrics}, metrics of one point that belong to no chart): a chart for each measure with a
    series of more than one point; its one-point companions (a test loss after the last epoch) join it."""
    charts: dict[str, list[str]] = {}
    for name, count in counts:
        if count > 1:
            charts.setdefault(chart_name(name), []).append(name)
    numbers = []
    for name, count in counts:
        if count <= 1:
            if chart_name(name) in charts:
                charts[chart_name(name)].append(name)
            else:
                numbers.append(name)
    return charts, numbers
