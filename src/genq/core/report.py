"""A sweep group's comparison report: the view of a group that a kind's figures draw from, and their charts.

A kind names its figures in `JobParams.report_figures`; each is a function of a `GroupView` that returns
PNG bytes (or None when the group has nothing to draw yet). Nothing here reads the database or the artifact
store: the view's caller does. matplotlib is imported on first use (its import is slow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from genq.core.images import ELLIPSIS, Chart, Series, figure_image, line_chart, plain_text, png_bytes, series_style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

CURVES_SIZE = (900, 520)
SUBPLOT_SIZE = (400, 340)
SUBPLOT_COLUMNS = 3
SUPTITLE_HEIGHT = 30
LOG_SCALE_RATIO = 100  # positive numeric values spanning this factor or more get a log axis
CATEGORY_LABEL_CHARS = 18


@dataclass(frozen=True)
class GroupView:
    """A sweep group as a kind's report figures see it, whatever the kind."""

    title: str  # the group's name, else the start of its id
    swept: Sequence[str]  # the swept parameters, in sweep order
    # One line per job in sweep order, as `client group` prints it: id, swept values, status, seconds, the kind's summary.
    table: Sequence[Mapping[str, Any]]
    params: Mapping[str, Mapping[str, Any]]  # job id -> its parameters
    metrics: Callable[[str], Mapping[str, Sequence[tuple[int, float]]]]  # job id -> each metric's (step, value) points
    picture: Callable[[str], "Image.Image | None"]  # job id -> its kind's main picture; None when it has none


ReportFigure = Callable[[GroupView], "bytes | None"]


def point_label(point: Mapping[str, Any], names: Sequence[str]) -> str:
    """"beta=0.5, seed=3": a job's values of `names` (its table line or its parameters); "all" without names."""
    return ", ".join(f"{name}={point.get(name)}" for name in names) or "all"


# Loss curves


def loss_curves_png(curves: Sequence[tuple[str, Sequence[tuple[int, float]]]], *, title: str,
                    xlabel: str = "epoch", ylabel: str = "loss") -> bytes:
    """One line per job, from its (step, value) points, with a legend naming each job."""
    if not curves:
        raise ValueError("loss_curves_png needs at least one curve")
    chart = Chart(title=title, x_label=xlabel, y_label=ylabel, size=CURVES_SIZE)
    for label, points in curves:
        steps = [step for step, _ in points]
        values = [value for _, value in points]
        chart.series.append(Series(label if points else f"{label} (no points)", steps, values))
    chart.integer_x = all(isinstance(step, int) for series in chart.series for step in series.xs)
    return png_bytes(line_chart(chart))


# A metric against each swept parameter


def metric_against_params_png(rows: Sequence[Mapping[str, object]], params: Sequence[str], metric: str,
                              *, title: str) -> bytes:
    """One panel per swept parameter: each job's `metric` (y) at its value of that parameter (x).

    Jobs that share a value but differ in other parameters are drawn as separate points, and a line joins
    the mean at each value. Rows whose metric is None (or NaN) are left out."""
    if not params:
        raise ValueError("metric_against_params_png needs at least one parameter")
    measured = [(row, value) for row in rows if (value := _metric_value(row, metric)) is not None]
    columns = min(len(params), SUBPLOT_COLUMNS)
    panel_rows = math.ceil(len(params) / columns)
    size = (SUBPLOT_SIZE[0] * columns, SUBPLOT_SIZE[1] * panel_rows + SUPTITLE_HEIGHT)

    def draw(figure: Figure) -> None:
        figure.suptitle(plain_text(title))
        for index, param in enumerate(params):
            axes = figure.add_subplot(panel_rows, columns, index + 1)
            points = [(row.get(param), value) for row, value in measured]
            _draw_metric_panel(axes, points, param, metric, with_legend=index == 0)

    return png_bytes(figure_image(draw, size))


def _metric_value(row: Mapping[str, object], metric: str) -> float | None:
    value = row.get(metric)
    if value is None:
        return None
    if not _is_real(value):
        raise ValueError(f"metric {metric!r} must be a number, got {value!r}")
    return None if math.isnan(value) else float(value)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_real(value) and math.isfinite(value)


def _draw_metric_panel(axes: Axes, points: list[tuple[object, float]], param: str, metric: str,
                       *, with_legend: bool) -> None:
    axes.set_xlabel(plain_text(param))
    axes.set_ylabel(plain_text(metric))
    axes.grid(True, color="0.9")
    axes.set_axisbelow(True)
    if not points:
        axes.text(0.5, 0.5, plain_text(f"no job has {metric}"), transform=axes.transAxes, ha="center", va="center", color="0.4")
        return
    numeric = all(_is_number(x) for x, _ in points)
    if not numeric:  # categories by their text, so lists, None and mixed types are all fine
        points = [(str(x), y) for x, y in points]
    values = sorted({x for x, _ in points}) if numeric else _in_first_seen_order(x for x, _ in points)
    position = {value: value if numeric else index for index, value in enumerate(values)}
    style = series_style(0)
    axes.scatter([position[x] for x, _ in points], [y for _, y in points], color=style["color"], alpha=0.55,
                 label="job", zorder=3)
    means = [_mean([y for x, y in points if x == value]) for value in values]
    axes.plot([position[value] for value in values], means, color=style["color"], linewidth=1.5,
              marker="_", markersize=14, label="mean at this value", zorder=2)
    if numeric:
        _maybe_log_scale(axes, values)
    else:
        _label_categories(axes, values)
    if with_legend:
        axes.legend(fontsize="small")


def _in_first_seen_order(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _maybe_log_scale(axes: Axes, values: Sequence[float]) -> None:
    low, high = min(values), max(values)
    if low > 0 and high / low >= LOG_SCALE_RATIO:
        axes.set_xscale("log")


def _label_categories(axes: Axes, values: Sequence[str]) -> None:
    crowded = len(values) > 3
    axes.set_xticks(range(len(values)), [plain_text(_shorten_chars(value, CATEGORY_LABEL_CHARS)) for value in values],
                    rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set_xlim(-0.5, len(values) - 0.5)


def _shorten_chars(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
