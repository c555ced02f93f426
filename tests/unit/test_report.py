"""A sweep report's figures: loss curves, a metric against each parameter, and the labelled image grid."""
import io

import numpy as np
import pytest
from PIL import Image

from genq.core.images import PALETTE
from genq.core.report import (CURVES_SIZE, GRID_PADDING, MARGIN, PLACEHOLDER_GRAY, PLACEHOLDER_SIZE, ROW_LABEL_MAX_WIDTH,
                              SUBPLOT_SIZE, SUPTITLE_HEIGHT, labelled_image_grid_png, loss_curves_png, metric_against_params_png)

RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 30)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def pixels_near(image: Image.Image, color: tuple[int, int, int], tolerance: int = 12) -> int:
    array = np.asarray(image, dtype=np.int16)
    return int((np.abs(array - np.array(color)).max(axis=-1) <= tolerance).sum())


def cell_box(sheet: Image.Image, cell_size, rows: int, columns: int, row: int, column: int):
    """Where cell (row, column) lies: the grid sits in the bottom-right corner, labels left of and above it."""
    width, height = cell_size
    grid_width = columns * (width + GRID_PADDING) + GRID_PADDING
    grid_height = rows * (height + GRID_PADDING) + GRID_PADDING
    left = sheet.width - grid_width + GRID_PADDING + column * (width + GRID_PADDING)
    top = sheet.height - grid_height + GRID_PADDING + row * (height + GRID_PADDING)
    return left, top, left + width, top + height


# Loss curves


def test_loss_curves_draw_one_colour_per_job():
    curves = [(f"lr={lr}", [(epoch, 10.0 / (epoch + i)) for epoch in range(1, 11)]) for i, lr in enumerate((0.1, 0.01, 0.001))]
    image = decoded(loss_curves_png(curves, title="train loss"))
    assert image.size == CURVES_SIZE
    for color in PALETTE[:3]:
        assert pixels_near(image, color) > 50, color
    assert pixels_near(image, PALETTE[3]) == 0


def test_a_job_without_points_is_listed_and_does_not_break_the_chart():
    curves = [("done", [(1, 3.0), (2, 2.0)]), ("failed $5", [])]
    assert decoded(loss_curves_png(curves, title="loss", xlabel="step", ylabel="nats")).size == CURVES_SIZE


def test_loss_curves_need_a_curve():
    with pytest.raises(ValueError, match="at least one curve"):
        loss_curves_png([], title="t")


# A metric against each parameter


SWEEP_ROWS = [{"lr": lr, "sampler": sampler, "loss": 1.0 + lr * 10 + (0.2 if sampler == "ddim" else 0.0)}
              for lr in (0.001, 0.01, 0.1) for sampler in ("ddim", "euler a")]


def test_one_panel_per_parameter():
    one = decoded(metric_against_params_png(SWEEP_ROWS, ["lr"], "loss", title="loss"))
    two = decoded(metric_against_params_png(SWEEP_ROWS, ["lr", "sampler"], "loss", title="loss"))
    assert two.width - one.width == SUBPLOT_SIZE[0] and two.height == one.height
    assert pixels_near(two, PALETTE[0]) > 100  # the mean lines are drawn in the first series colour


def test_more_parameters_wrap_onto_a_second_row_of_panels():
    rows = [dict(row, seed=i, steps=20, cfg=7.5) for i, row in enumerate(SWEEP_ROWS)]
    four = decoded(metric_against_params_png(rows, ["lr", "sampler", "seed", "steps"], "loss", title="loss"))
    assert four.size == (3 * SUBPLOT_SIZE[0], 2 * SUBPLOT_SIZE[1] + SUPTITLE_HEIGHT)


def test_non_numeric_and_missing_parameter_values_are_categories():
    rows = [{"sampler": "ddim", "size": [512, 512], "loss": 1.0},
            {"sampler": None, "size": [768, 768], "loss": 2.0},
            {"sampler": "euler a with a very long name indeed", "loss": 1.5}]
    image = decoded(metric_against_params_png(rows, ["sampler", "size"], "loss", title="loss"))
    assert image.width == 2 * SUBPLOT_SIZE[0]


def test_rows_without_the_metric_are_left_out():
    rows = SWEEP_ROWS + [{"lr": "not run", "sampler": "ddim", "loss": None}, {"lr": 0.5, "loss": float("nan")}]
    assert decoded(metric_against_params_png(rows, ["lr"], "loss", title="loss")).width == SUBPLOT_SIZE[0]
    nothing = [{"lr": 0.1, "loss": None}]
    assert decoded(metric_against_params_png(nothing, ["lr"], "loss", title="loss")).width == SUBPLOT_SIZE[0]


def test_a_metric_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="'loss' must be a number"):
        metric_against_params_png([{"lr": 0.1, "loss": "low"}], ["lr"], "loss", title="loss")
    with pytest.raises(ValueError, match="at least one parameter"):
        metric_against_params_png(SWEEP_ROWS, [], "loss", title="loss")


# The labelled image grid


def grid_sheet(cells, rows=("seed 1", "seed 2"), columns=("a cat", "a dog", "a fox"), title=None) -> Image.Image:
    return decoded(labelled_image_grid_png(cells, list(rows), list(columns), title=title))


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
        labelled_image_grid_png(cells, rows, columns)
