"""A sweep report's charts (loss curves, a metric against each parameter) and the kinds' figures drawn from
a GroupView: the same view whatever the kind, built here without a store."""
import io

import numpy as np
import pytest
from PIL import Image

from genq.core.images import PALETTE
from genq.core.kinds.sd import SD
from genq.core.kinds.train_vae import TrainVAE
from genq.core.report import (CURVES_SIZE, SUBPLOT_SIZE, SUPTITLE_HEIGHT, GroupView, loss_curves_png,
                              metric_against_params_png)
from genq.core.sd.report import grid_figure, prompt_label
from genq.core.vae.report import final_loss_figure, loss_curves_figure

def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def pixels_near(image: Image.Image, color: tuple[int, int, int], tolerance: int = 12) -> int:
    array = np.asarray(image, dtype=np.int16)
    return int((np.abs(array - np.array(color)).max(axis=-1) <= tolerance).sum())


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


# A kind's figures from a GroupView


def view(table, swept, params=None, metrics=None, pictures=None) -> GroupView:
    return GroupView(title="sweep", swept=swept, table=table, params=params or {row["id"]: {} for row in table},
                     metrics=lambda job_id: (metrics or {}).get(job_id, {}),
                     picture=lambda job_id: (pictures or {}).get(job_id))


def test_train_vae_draws_its_loss_curves_and_final_loss_once_there_are_numbers():
    table = [{"id": f"j{i}", "beta": beta, "status": "succeeded", "test_loss_per_image": 150.0 + beta}
             for i, beta in enumerate((1.0, 4.0))]
    metrics = {"j0": {"train_loss_per_image": [(1, 190.0), (2, 180.0)]}, "j1": {"train_loss_per_image": [(1, 200.0)]}}
    assert set(TrainVAE.report_figures) == {"loss-curves.png", "final-loss.png"}
    assert decoded(loss_curves_figure(view(table, ["beta"], metrics=metrics))).size == CURVES_SIZE
    assert decoded(final_loss_figure(view(table, ["beta"]))).size[0] == SUBPLOT_SIZE[0]
    running = [dict(row, status="running", test_loss_per_image=None) for row in table]
    assert loss_curves_figure(view(running, ["beta"])) is None and final_loss_figure(view(running, ["beta"])) is None


def test_sd_grid_has_a_row_per_prompt_and_a_column_per_seed_with_gray_for_a_missing_picture():
    table = [{"id": f"{prompt}-{seed}", "prompt": prompt, "negative": negative, "seed": seed,
              "status": "succeeded" if seed == 1 else "failed"}
             for prompt, negative in (("a cat", "blurry"), ("a dog", None)) for seed in (1, 2, 3)]
    pictures = {row["id"]: Image.new("RGB", (32, 32), (200, 30, 30)) for row in table}
    assert list(SD.report_figures) == ["grid.png"]
    grid = decoded(grid_figure(view(table, ["prompt", "negative", "seed"], pictures=pictures)))
    only_first = decoded(grid_figure(view(table[:1], ["prompt", "negative", "seed"], pictures=pictures)))
    assert grid.width - only_first.width == 2 * (32 + 4) and grid.height - only_first.height == 32 + 4
    assert pixels_near(grid, (200, 30, 30)) == 2 * 32 * 32  # seed 1 of each prompt; the failed jobs are gray
    assert grid_figure(view(table, ["prompt", "negative", "seed"])) is None  # nothing to show yet


def test_a_row_without_a_negative_prompt_is_labelled_by_its_prompt_alone():
    assert prompt_label("a dog", None) == prompt_label("a dog", "") == "a dog"
    assert prompt_label("a cat", "blurry") == "a cat | blurry"
