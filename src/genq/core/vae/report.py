"""What a group of train-vae jobs draws for its report (TrainVAE.report_figures): every job's training
loss per epoch on one chart, and the final test loss against each swept parameter."""
from __future__ import annotations

from genq.core.report import GroupView, loss_curves_png, metric_against_params_png, point_label

TRAIN_CURVE = "train_loss_per_image"  # the metric train-vae records per epoch
FINAL_LOSS = "test_loss_per_image"  # in its result, and so in the group's table (TrainVAE.summary)


def loss_curves_figure(group: GroupView) -> bytes | None:
    curves = [(point_label(row, group.swept), points) for row in group.table
              if (points := group.metrics(row["id"]).get(TRAIN_CURVE))]
    if not curves:
        return None
    return loss_curves_png(curves, title=f"{group.title}: training loss per image", xlabel="epoch",
                           ylabel="train loss per image")


def final_loss_figure(group: GroupView) -> bytes | None:
    if not group.swept or all(row.get(FINAL_LOSS) is None for row in group.table):
        return None
    return metric_against_params_png(group.table, group.swept, FINAL_LOSS,
                                     title=f"{group.title}: final test loss per image")
