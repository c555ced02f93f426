"""Pillow figures: sizes and layout of grids, labelled rows and the line chart."""
import io

import numpy as np
import pytest
from PIL import Image

from genq.core.images import Chart, Series, gray_image, grid, labelled_rows, line_chart, nice_ticks, png_bytes


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


def test_nice_ticks():
    assert nice_ticks(0, 10, count=6) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.5, 1.5, count=8, integer=True) == [1]
    assert nice_ticks(140, 190) == [140, 150, 160, 170, 180, 190]
