"""PNG figures with Pillow only: image grids, labelled strips, and a small line chart."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GRID_LINE = (225, 225, 225)
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189))
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


def grid(images: Sequence[Image.Image], columns: int, padding: int = 2, background: int | tuple = 128) -> Image.Image:
    """Images of one size in rows of `columns`, left to right then top to bottom."""
    if not images:
        raise ValueError("grid needs at least one image")
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    mode = images[0].mode
    sheet = Image.new(mode, (columns * (w + padding) + padding, rows * (h + padding) + padding), background)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet.paste(image, (padding + c * (w + padding), padding + r * (h + padding)))
    return sheet


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


def nice_ticks(low: float, high: float, count: int = 6, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    span = max(high - low, 1e-12)
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _format_tick(value: float) -> str:
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(chart: Chart) -> Image.Image:
    """Each series as a line with point markers (or markers only), axes with ticks, and a legend."""
    width, height = chart.size
    left, right, top, bottom = 90, 24, 40, 56
    xs = [x for s in chart.series for x in s.xs]
    ys = [y for s in chart.series for y in s.ys]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = min(ys), max(ys)
    pad = (y_high - y_low) * 0.08 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_low) / (x_high - x_low) * (width - left - right)
        py = top + (y_high - y) / (y_high - y_low) * (height - top - bottom)
        return px, py

    image = Image.new("RGB", chart.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    text = font()
    for y in nice_ticks(y_low, y_high):
        _, py = to_px(x_low, y)
        draw.line([(left, py), (width - right, py)], fill=GRID_LINE)
        draw.text((left - 6, py), _format_tick(y), fill=INK, font=text, anchor="rm")
    for x in nice_ticks(x_low, x_high, count=8, integer=chart.integer_x):
        px, _ = to_px(x, y_low)
        draw.line([(px, height - bottom), (px, height - bottom + 4)], fill=INK)
        draw.text((px, height - bottom + 6), _format_tick(x), fill=INK, font=text, anchor="mt")
    draw.rectangle([left, top, width - right, height - bottom], outline=INK)
    draw.text((width // 2, 12), chart.title, fill=INK, font=font(FONT_SIZE + 2), anchor="mt")
    draw.text(((left + width - right) // 2, height - 18), chart.x_label, fill=INK, font=text, anchor="mm")
    y_caption = Image.new("RGB", (int(text.getlength(chart.y_label)) + 4, FONT_SIZE + 4), BACKGROUND)
    ImageDraw.Draw(y_caption).text((2, 2), chart.y_label, fill=INK, font=text)
    y_caption = y_caption.rotate(90, expand=True)
    image.paste(y_caption, (6, (top + height - bottom) // 2 - y_caption.height // 2))

    for i, series in enumerate(chart.series):
        color = PALETTE[i % len(PALETTE)]
        points = [to_px(x, y) for x, y in zip(series.xs, series.ys)]
        if len(points) > 1 and not series.markers_only:
            draw.line(points, fill=color, width=2)
        radius = 5 if series.markers_only else 3
        for px, py in points:
            draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=color)
        legend_y = top + 10 + i * (FONT_SIZE + 6)
        legend_x = width - right - 10 - int(text.getlength(series.label))
        draw.ellipse([legend_x - 16, legend_y - 4, legend_x - 8, legend_y + 4], fill=color)
        draw.text((legend_x, legend_y), series.label, fill=INK, font=text, anchor="lm")
    return image
