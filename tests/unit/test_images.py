"""Figures: sizes and layout of plain and labelled image grids (Pillow), and the line chart (matplotlib)."""
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from genq.core.images import (GRID_PADDING, MARGIN, PALETTE, PLACEHOLDER_GRAY, PLACEHOLDER_SIZE, ROW_LABEL_MAX_WIDTH, Chart,
                              Series, gray_image, grid, labelled_grid, line_chart, png_bytes, series_style, square_grid)

RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 30)


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


def test_square_grid_is_near_square_without_gaps():
    tiles = [Image.new("RGB", (4, 3), (value, 0, 0)) for value in (10, 20, 30, 40, 50)]
    sheet = square_grid(tiles)
    assert sheet.size == (3 * 4, 2 * 3)
    assert sheet.getpixel((0, 0)) == (10, 0, 0) and sheet.getpixel((4, 3)) == (50, 0, 0)


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


def cell_box(sheet: Image.Image, cell_size, rows: int, columns: int, row: int, column: int):
    """Where cell (row, column) lies: the grid sits in the bottom-right corner, labels left of and above it."""
    width, height = cell_size
    grid_width = columns * (width + GRID_PADDING) + GRID_PADDING
    grid_height = rows * (height + GRID_PADDING) + GRID_PADDING
    left = sheet.width - grid_width + GRID_PADDING + column * (width + GRID_PADDING)
    top = sheet.height - grid_height + GRID_PADDING + row * (height + GRID_PADDING)
    return left, top, left + width, top + height


# The labelled grid


def grid_sheet(cells, rows=("seed 1", "seed 2"), columns=("a cat", "a dog", "a fox"), title=None) -> Image.Image:
    return labelled_grid(cells, list(rows), list(columns), title=title)


def test_grid_is_rows_by_columns_cells_plus_label_margins():
    small = [[Image.new("RGB", (40, 30), RED)] * 3] * 2
    large = [[Image.new("RGB", (64, 50), RED)] * 3] * 2
    small_sheet, large_sheet = grid_sheet(small), grid_sheet(large)
    assert large_sheet.width - small_sheet.width == 3 * (64 - 40)
    assert large_sheet.height - small_sheet.height == 2 * (50 - 30)
    grid_width, grid_height = 3 * (40 + GRID_PADDING) + GRID_PADDING, 2 * (30 + GRID_PADDING) + GRID_PADDING
    assert small_sheet.width > grid_width + 20 and small_sheet.height > grid_height + 10  # room for the labels


def test_cells_hold_their_images_and_a_missing_one_is_gray():
    cells = [[Image.new("RGB", (60, 40), RED), None, Image.new("RGB", (60, 40), BLUE)],
             [Image.new("L", (60, 40), 255), Image.new("RGB", (60, 40), GREEN), None]]
    sheet = grid_sheet(cells)
    expected = {(0, 0): RED, (0, 2): BLUE, (1, 0): (255, 255, 255), (1, 1): GREEN}
    for (row, column), color in expected.items():
        cell = np.asarray(sheet.crop(cell_box(sheet, (60, 40), 2, 3, row, column)))
        assert (cell == color).all(), (row, column)
    for row, column in ((0, 1), (1, 2)):
        cell = np.asarray(sheet.crop(cell_box(sheet, (60, 40), 2, 3, row, column))).astype(int)
        assert (cell[0, 0] == PLACEHOLDER_GRAY).all() and (cell[-1, -1] == PLACEHOLDER_GRAY).all()
        assert (cell[..., 0] == cell[..., 1]).all() and (cell[..., 1] == cell[..., 2]).all()  # gray throughout


def test_images_of_another_size_are_resized_to_the_first():
    cells = [[Image.new("RGB", (60, 40), RED), Image.new("RGB", (120, 80), BLUE)]]
    sheet = grid_sheet(cells, rows=["seed 1"], columns=["a", "b"])
    same = grid_sheet([[Image.new("RGB", (60, 40), RED)] * 2], rows=["seed 1"], columns=["a", "b"])
    assert sheet.size == same.size
    assert (np.asarray(sheet.crop(cell_box(sheet, (60, 40), 1, 2, 0, 1))) == BLUE).all()


def test_a_grid_with_no_image_at_all_uses_placeholder_cells():
    sheet = grid_sheet([[None]], rows=["failed"], columns=["prompt"])
    cell = np.asarray(sheet.crop(cell_box(sheet, PLACEHOLDER_SIZE, 1, 1, 0, 0)))
    assert (cell[0, 0] == PLACEHOLDER_GRAY).all() and (cell[-1, -1] == PLACEHOLDER_GRAY).all()
    assert sheet.width > PLACEHOLDER_SIZE[0] + 2 * GRID_PADDING


def test_long_labels_are_cut_short():
    long_prompt = "a photograph of an astronaut riding a horse on the moon, highly detailed, " * 10
    cells = [[Image.new("RGB", (64, 64), RED)] * 2]
    sheet = grid_sheet(cells, rows=[long_prompt], columns=[long_prompt, long_prompt], title=long_prompt)
    grid_width = 2 * (64 + GRID_PADDING) + GRID_PADDING
    assert sheet.width <= grid_width + ROW_LABEL_MAX_WIDTH + 2 * MARGIN + 1


def test_a_title_adds_a_band_above_the_labels():
    cells = [[Image.new("RGB", (32, 32), RED)] * 3] * 2
    assert grid_sheet(cells, title="sweep 12").height > grid_sheet(cells).height


@pytest.mark.parametrize("cells, rows, columns, message", [
    ([], [], [], "no cells"),
    ([[]], ["r"], [], "no cells"),
    ([[None, None]], ["r1", "r2"], ["a", "b"], "2 row labels for 1 rows"),
    ([[None, None]], ["r"], ["a"], "row 0 has 2 images but there are 1 column labels"),
    ([[None, None], [None]], ["r1", "r2"], ["a", "b"], "row 1 has 1 images"),
])
def test_grid_shape_mistakes_are_refused(cells, rows, columns, message):
    with pytest.raises(ValueError, match=message):
        labelled_grid(cells, rows, columns)


def test_labels_are_optional_and_the_grid_alone_has_no_margins():
    tile = Image.new("L", (10, 10), 255)
    plain = labelled_grid([[tile, tile]])
    assert plain.size == (2 * (10 + GRID_PADDING) + GRID_PADDING, 10 + 2 * GRID_PADDING)
    with_rows = labelled_grid([[tile, tile], [tile, tile]], row_labels=["a", "b"])
    with_columns = labelled_grid([[tile, tile]], column_labels=["x", "y"])
    assert with_rows.width > plain.width and with_rows.height == 2 * (10 + GRID_PADDING) + GRID_PADDING
    assert with_columns.width == plain.width and with_columns.height > plain.height
