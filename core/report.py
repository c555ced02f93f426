"""Figures for a sweep group's comparison report: plain data in, PNG bytes out.

Nothing here reads the database or the artifact store; the report gathers the jobs' numbers and images
and passes them in. torch/torchvision and matplotlib are imported on first use (their imports are slow).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from genq.core.images import (BACKGROUND, FONT_SIZE, INK, Chart, Series, figure_image, font, line_chart, plain_text,
                              png_bytes, series_style)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CURVES_SIZE = (900, 520)
SUBPLOT_SIZE = (400, 340)
SUBPLOT_COLUMNS = 3
SUPTITLE_HEIGHT = 30
LOG_SCALE_RATIO = 100  # positive numeric values spanning this factor or more get a log axis
CATEGORY_LABEL_CHARS = 18

PLACEHOLDER_GRAY = 128
PLACEHOLDER_SIZE = (256, 256)  # cell size when no cell has an image
GRID_PADDING = 4
MARGIN = 6
ROW_LABEL_MAX_WIDTH = 220
TITLE_FONT_SIZE = FONT_SIZE + 3
ELLIPSIS = "…"


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


# A labelled grid of images


def labelled_image_grid_png(cells: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
                            column_labels: Sequence[str], *, title: str | None = None) -> bytes:
    """Images in rows and columns, row labels at the left, column labels on top, an optional title above.

    A missing image (None) is a gray cell; images are resized to the first image's size."""
    _check_grid_shape(cells, row_labels, column_labels)
    cell_size = next((image.size for row in cells for image in row if image is not None), PLACEHOLDER_SIZE)
    grid = _image_grid(cells, cell_size, columns=len(column_labels))
    return png_bytes(_add_labels(grid, cell_size, row_labels, column_labels, title))


def _check_grid_shape(cells: Sequence[Sequence[object]], row_labels: Sequence[str],
                      column_labels: Sequence[str]) -> None:
    if not cells or not cells[0]:
        raise ValueError("the image grid has no cells")
    if len(row_labels) != len(cells):
        raise ValueError(f"{len(row_labels)} row labels for {len(cells)} rows of images")
    for index, row in enumerate(cells):
        if len(row) != len(column_labels):
            raise ValueError(f"row {index} has {len(row)} images but there are {len(column_labels)} column labels")


def _image_grid(cells: Sequence[Sequence[Image.Image | None]], cell_size: tuple[int, int], columns: int) -> Image.Image:
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import make_grid

    tiles = [pil_to_tensor(_cell_image(image, cell_size)) for row in cells for image in row]
    grid = to_pil_image(make_grid(tiles, nrow=columns, padding=GRID_PADDING, pad_value=255))
    if len(tiles) == 1:  # make_grid returns a lone image as it is, without the padding around it
        grid = ImageOps.expand(grid, border=GRID_PADDING, fill=BACKGROUND)
    return grid


def _cell_image(image: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    if image is None:
        return _placeholder(size)
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def _placeholder(size: tuple[int, int]) -> Image.Image:
    tile = Image.new("RGB", size, (PLACEHOLDER_GRAY,) * 3)
    text = font()
    if text.getlength("no image") < size[0] - 2 * MARGIN:
        ImageDraw.Draw(tile).text((size[0] // 2, size[1] // 2), "no image", fill=(90, 90, 90), font=text, anchor="mm")
    return tile


def _add_labels(grid: Image.Image, cell_size: tuple[int, int], row_labels: Sequence[str],
                column_labels: Sequence[str], title: str | None) -> Image.Image:
    text, title_font = font(), font(TITLE_FONT_SIZE)
    row_texts = [_fit(label, text, ROW_LABEL_MAX_WIDTH) for label in row_labels]
    column_texts = [_fit(label, text, cell_size[0]) for label in column_labels]
    label_width = max(int(math.ceil(text.getlength(label))) for label in row_texts) + 2 * MARGIN
    column_band = FONT_SIZE + 2 * MARGIN
    title_band = TITLE_FONT_SIZE + 2 * MARGIN if title else 0
    sheet = Image.new("RGB", (label_width + grid.width, title_band + column_band + grid.height), BACKGROUND)
    grid_top = title_band + column_band
    sheet.paste(grid, (label_width, grid_top))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((sheet.width // 2, MARGIN), _fit(title, title_font, sheet.width - 2 * MARGIN),
                  fill=INK, font=title_font, anchor="mt")
    cell_width, cell_height = cell_size
    for index, label in enumerate(column_texts):
        center = label_width + GRID_PADDING + index * (cell_width + GRID_PADDING) + cell_width // 2
        draw.text((center, grid_top - MARGIN), label, fill=INK, font=text, anchor="md")
    for index, label in enumerate(row_texts):
        middle = grid_top + GRID_PADDING + index * (cell_height + GRID_PADDING) + cell_height // 2
        draw.text((MARGIN, middle), label, fill=INK, font=text, anchor="lm")
    return sheet


def _fit(label: str, text_font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float) -> str:
    """`label` on one line, cut short with an ellipsis where it is wider than `max_width` pixels."""
    label = " ".join(label.split())
    if text_font.getlength(label) <= max_width:
        return label
    low, high = 0, len(label)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if text_font.getlength(label[:middle].rstrip() + ELLIPSIS) <= max_width:
            low = middle
        else:
            high = middle - 1
    return label[:low].rstrip() + ELLIPSIS
