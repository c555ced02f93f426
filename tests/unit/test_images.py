"""Figures: sizes and layout of grids and labelled rows (Pillow), and the line chart (matplotlib)."""
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from genq.core.images import PALETTE, Chart, Series, gray_image, grid, labelled_rows, line_chart, png_bytes, series_style


def test_gray_image_maps_unit_floats_to_bytes_and_scales():
    image = gray_image(np.array([[0.0, 0.5], [1.0, 2.0]]), scale=3)
    assert image.mode == "L" and image.size == (6, 6)
    assert [image.getpixel((0, 0)), image.getpixel((3, 0)), image.getpixel((0, 3)), image.getpixel((3, 3))] == [0, 128, 255, 255]


def test_gray_image_refuses_a_batch():
    with pytest.raises(ValueError, match="2-D"):
        gray_image(np.zeros((1, 2, 2)))


def test_grid_fills_rows_left_to_right():
    tiles = [Image.new("L", (4, 3), value) for value in (10, 20, 30)]
    sheet = grid(tiles, columns=2, padding=1, background=0)
    assert sheet.size == (2 * 5 + 1, 2 * 4 + 1)
    assert sheet.getpixel((1, 1)) == 10 and sheet.getpixel((6, 1)) == 20 and sheet.getpixel((1, 5)) == 30
    assert sheet.getpixel((6, 5)) == 0  # the empty cell


def test_labelled_rows_leave_room_for_labels_and_captions():
    tile = Image.new("L", (10, 10), 255)
    plain = labelled_rows([[tile, tile]], padding=2)
    assert plain.size == (2 * 12 + 2, 14)
    labelled = labelled_rows([[tile, tile], [tile, tile]], row_labels=["a", "b"], column_labels=["x", "y"], padding=2)
    assert labelled.width > plain.width and labelled.height > 2 * 12 + 2


def test_line_chart_renders_a_png_of_the_requested_size():
    chart = Chart(title="t", x_label="epoch", y_label="loss", integer_x=True, size=(300, 200))
    chart.series.append(Series("train", [1, 2, 3], [5.0, 3.0, 2.5]))
    chart.series.append(Series("test", [3], [2.7], markers_only=True))
    data = png_bytes(line_chart(chart))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (300, 200)


def test_a_single_point_chart_does_not_divide_by_zero():
    chart = Chart(title="t", x_label="x", y_label="y", integer_x=True)
    chart.series.append(Series("only", [1], [7.0]))
    assert line_chart(chart).size == chart.size


def pixels_near(image: Image.Image, color: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels are within `tolerance` of `color` on every channel."""
    array = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(array - np.array(color)).max(axis=-1) <= tolerance).sum())


def three_series_chart(title: str = "loss") -> Chart:
    chart = Chart(title=title, x_label="epoch", y_label="loss", integer_x=True)
    chart.series.append(Series("a", [1, 2, 3, 4], [4.0, 3.0, 2.5, 2.2]))
    chart.series.append(Series("b", [1, 2, 3, 4], [5.0, 4.0, 3.5, 3.1]))
    chart.series.append(Series("test", [4], [2.6], markers_only=True))
    return chart


def test_line_chart_draws_each_series_in_its_own_colour():
    image = line_chart(three_series_chart())
    for color in PALETTE[:3]:
        assert pixels_near(image, color) > 30, color
    assert pixels_near(image, PALETTE[3]) == 0  # a fourth colour only for a fourth series


def axes_top(gray: np.ndarray) -> int:
    """The row of the axes' top edge: the first row that is dark across more than half the width."""
    return int(np.argmax((gray < 100).mean(axis=1) > 0.5))


def test_line_chart_draws_the_title_above_the_axes():
    with_title = np.asarray(line_chart(three_series_chart("loss per image")).convert("L"))
    without = np.asarray(line_chart(three_series_chart("")).convert("L"))
    assert axes_top(with_title) > axes_top(without) + 5
    assert (with_title[: axes_top(with_title)] < 100).sum() > 20
    assert (without[: axes_top(without)] < 100).sum() == 0


def test_line_chart_labels_with_dollar_signs_are_text_not_tex():
    chart = three_series_chart(r"cost $\frac{ in $")
    chart.series[0].label = "lr=$1"
    assert line_chart(chart).size == chart.size


def test_series_beyond_the_palette_change_line_style():
    first, again = series_style(0), series_style(len(PALETTE))
    assert first["color"] == again["color"] and first["linestyle"] != again["linestyle"]


def test_charts_drawn_from_threads_match_one_drawn_alone():
    alone = np.asarray(line_chart(three_series_chart()))
    with ThreadPoolExecutor(max_workers=4) as pool:
        drawn = list(pool.map(lambda _: np.asarray(line_chart(three_series_chart())), range(4)))
    assert all(np.array_equal(alone, image) for image in drawn)
