"""What a group of sd jobs draws for its report (SD.report_figures): one labelled grid of each job's first
image, a row per prompt (with its negative prompt when that is swept too, as a prompt file does) and a
column per combination of the other swept values."""
from __future__ import annotations

from typing import Any

from PIL import Image

from genq.core.images import labelled_grid, png_bytes
from genq.core.report import GroupView, point_label
from genq.core.store.states import JobStatus

ROW_PARAMS = ("prompt", "negative")


def grid_figure(group: GroupView) -> bytes | None:
    column_names = [name for name in group.swept if name not in ROW_PARAMS]
    row_labels: dict[tuple, str] = {}  # (prompt, negative) -> its label, in sweep order
    column_labels: list[str] = []
    images: dict[tuple[tuple, str], Image.Image] = {}
    for row in group.table:
        prompt = row.get("prompt", group.params[row["id"]].get("prompt"))
        row_key = (prompt, row.get("negative") if "negative" in group.swept else None)
        row_labels.setdefault(row_key, prompt_label(*row_key))
        column = point_label(row, column_names)
        if column not in column_labels:
            column_labels.append(column)
        if row["status"] == JobStatus.SUCCEEDED.value and (image := group.picture(row["id"])) is not None:
            images[(row_key, column)] = image  # a missing one stays a gray cell
    if not images:
        return None
    cells = [[images.get((r, c)) for c in column_labels] for r in row_labels]
    return png_bytes(labelled_grid(cells, list(row_labels.values()), column_labels, title=group.title))


def prompt_label(prompt: Any, negative: Any) -> str:
    """"prompt | negative", or the prompt alone when there is no negative prompt."""
    return f"{prompt} | {negative}" if negative else str(prompt)
