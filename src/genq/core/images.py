"""PNG figures: image grids (plain, or labelled with a title) with Pillow, line charts with matplotlib.

matplotlib is used only through its object-oriented API (a Figure on an Agg canvas, never pyplot), so
charts draw in worker threads without a display; it is imported on first use because the import is slow."""
from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
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
TITLE_FONT_SIZE = FONT_SIZE + 3
GRID_PADDING = 4  # white between the cells of a labelled grid
MARGIN = 6  # around its labels
ROW_LABEL_MAX_WIDTH = 220
PLACEHOLDER_GRAY = 128
PLACEHOLDER_SIZE = (256, 256)  # cell size when no cell has an image
ELLIPSIS = "…"


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


def square_grid(images: Sequence[Image.Image]) -> Image.Image:
    """The images in a near-square grid, row by row, with no gaps."""
    return grid(images, columns=math.ceil(math.sqrt(len(images))), padding=0, background=0)


def labelled_grid(cells: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str] = (),
                  column_labels: Sequence[str] = (), *, title: str | None = None) -> Image.Image:
    """Images in rows and columns on white; optional labels left of the rows and above the columns, and a title.

    A missing image (None) is a gray cell; images are resized to the first image's size."""
    _check_grid_shape(cells, row_labels, column_labels)
    cell_size = next((image.size for row in cells for image in row if image is not None), PLACEHOLDER_SIZE)
    tiles = [_cell_image(image, cell_size) for row in cells for image in row]
    sheet = grid(tiles, columns=len(cells[0]), padding=GRID_PADDING, background=255)
    if len(tiles) == 1:  # make_grid returns a lone image as it is, without the padding around it
        sheet = ImageOps.expand(sheet, border=GRID_PADDING, fill=BACKGROUND)
    return _add_labels(sheet, cell_size, row_labels, column_labels, title)


def _check_grid_shape(cells: Sequence[Sequence[object]], row_labels: Sequence[str],
                      column_labels: Sequence[str]) -> None:
    if not cells or not cells[0]:
        raise ValueError("the image grid has no cells")
    if row_labels and len(row_labels) != len(cells):
        raise ValueError(f"{len(row_labels)} row labels for {len(cells)} rows of images")
    columns = len(column_labels) if column_labels else len(cells[0])
    for index, row in enumerate(cells):
        if len(row) != columns:
            what = f"{columns} column labels" if column_labels else f"{columns} images in row 0"
            raise ValueError(f"row {index} has {len(row)} images but there are {what}")


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


def _add_labels(grid_image: Image.Image, cell_size: tuple[int, int], row_labels: Sequence[str],
                column_labels: Sequence[str], title: str | None) -> Image.Image:
    if not (row_labels or column_labels or title):
        return grid_image
    text, title_font = font(), font(TITLE_FONT_SIZE)
    row_texts = [_fit(label, text, ROW_LABEL_MAX_WIDTH) for label in row_labels]
    column_texts = [_fit(label, text, cell_size[0]) for label in column_labels]
    label_width = max(int(math.ceil(text.getlength(label))) for label in row_texts) + 2 * MARGIN if row_texts else 0
    column_band = FONT_SIZE + 2 * MARGIN if column_texts else 0
    title_band = TITLE_FONT_SIZE + 2 * MARGIN if title else 0
    sheet = Image.new("RGB", (label_width + grid_image.width, title_band + column_band + grid_image.height), BACKGROUND)
    grid_top = title_band + column_band
    sheet.paste(grid_image, (label_width, grid_top))
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
