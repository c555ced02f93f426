"""PNG figures: image grids and labelled strips with Pillow, line charts with matplotlib.

matplotlib is used only through its object-oriented API (a Figure on an Agg canvas, never pyplot), so
charts draw in worker threads without a display; it is imported on first use because the import is slow."""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
# Line colours in order; after the last one they repeat with the next line style.
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207))
LINE_STYLES = ("-", "--", ":", "-.")
DPI = 100
MARKED_POINTS_LIMIT = 40  # longer lines are drawn without a marker on each point
LEGEND_INSIDE_LIMIT = 6  # a longer legend goes to the right of the axes
FONT_SIZE = 13


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes, with `text` as tEXt/iTXt chunks (key -> value) when given."""
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def gray_image(pixels, scale: int = 1) -> Image.Image:
    """A 2-D array of floats in [0, 1] (numpy, or a CPU torch tensor) as a grayscale image."""
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array of pixels, got shape {array.shape}")
    image = Image.fromarray(np.clip(np.rint(array * 255), 0, 255).astype(np.uint8), mode="L")
    return upscale(image, scale)


def upscale(image: Image.Image, factor: int) -> Image.Image:
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def grid(images: Sequence[Image.Image], columns: int, padding: int = 2, background: int = 128) -> Image.Image:
    """Images of one size in rows of `columns`, left to right then top to bottom (torchvision's make_grid,
    on the images' own 8-bit values: nothing is rounded)."""
    import torch
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import make_grid

    if not images:
        raise ValueError("grid needs at least one image")
    mode = images[0].mode
    tiles = torch.stack([pil_to_tensor(image.convert(mode)) for image in images])
    return to_pil_image(make_grid(tiles, nrow=columns, padding=padding, pad_value=background)).convert(mode)


def labelled_rows(rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str] = (),
                  column_labels: Sequence[str] = (), padding: int = 4) -> Image.Image:
    """A table of equal-size images on white: optional labels left of each row and under each column."""
    w, h = rows[0][0].size
    text = font()
    label_w = max((int(text.getlength(s)) for s in row_labels), default=0)
    label_w = label_w + 2 * padding if label_w else 0
    caption_h = FONT_SIZE + 2 * padding if column_labels else 0
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (label_w + columns * (w + padding) + padding, len(rows) * (h + padding) + padding + caption_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = padding + r * (h + padding)
        if r < len(row_labels):
            draw.text((padding, top + h // 2), row_labels[r], fill=INK, font=text, anchor="lm")
        for c, image in enumerate(row):
            sheet.paste(image.convert("RGB"), (label_w + padding + c * (w + padding), top))
    for c, caption in enumerate(column_labels):
        x = label_w + padding + c * (w + padding) + w // 2
        draw.text((x, sheet.height - caption_h + padding), caption, fill=INK, font=text, anchor="mt")
    return sheet


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    markers_only: bool = False


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    integer_x: bool = False
    size: tuple[int, int] = (720, 440)


# matplotlib shares font and text caches between figures; one figure is drawn at a time.
_MATPLOTLIB_LOCK = threading.Lock()


def figure_image(draw: Callable[[Figure], None], size: tuple[int, int]) -> Image.Image:
    """An RGB image of `size` pixels of what `draw` puts on a fresh matplotlib figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    with _MATPLOTLIB_LOCK:
        figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        canvas = FigureCanvasAgg(figure)
        draw(figure)
        canvas.draw()
        image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    return image if image.size == size else image.resize(size)  # figsize * dpi may round a pixel off


def plain_text(text: str) -> str:
    """`text` for a matplotlib label: its dollar signs stay dollar signs instead of opening TeX math."""
    return text.replace("$", r"\$")


def series_style(index: int) -> dict:
    """matplotlib colour and line style of the index-th line of a chart."""
    red, green, blue = PALETTE[index % len(PALETTE)]
    return {"color": (red / 255, green / 255, blue / 255),
            "linestyle": LINE_STYLES[(index // len(PALETTE)) % len(LINE_STYLES)]}


def line_chart(chart: Chart) -> Image.Image:
    """Each series as a line with point markers (or markers only), axes with ticks, and a legend."""
    return figure_image(lambda figure: _draw_line_chart(figure, chart), chart.size)


def _draw_line_chart(figure: Figure, chart: Chart) -> None:
    from matplotlib.ticker import MaxNLocator

    axes = figure.add_subplot()
    for index, series in enumerate(chart.series):
        style = series_style(index)
        if series.markers_only:
            axes.plot(series.xs, series.ys, label=plain_text(series.label), color=style["color"],
                      linestyle="none", marker="o", markersize=8, zorder=3)
        else:
            marker = "o" if len(series.xs) <= MARKED_POINTS_LIMIT else None
            axes.plot(series.xs, series.ys, label=plain_text(series.label), linewidth=2, marker=marker, markersize=4, **style)
    axes.set_title(plain_text(chart.title))
    axes.set_xlabel(plain_text(chart.x_label))
    axes.set_ylabel(plain_text(chart.y_label))
    axes.grid(True, color="0.9")
    axes.set_axisbelow(True)
    if chart.integer_x:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(chart.series) > LEGEND_INSIDE_LIMIT:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    elif chart.series:
        axes.legend(fontsize="small")
