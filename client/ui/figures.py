"""Pictures the pages show: a job's metric charts, a group's report figures, an image's settings."""
from __future__ import annotations

import tempfile
from pathlib import Path

from genq.core.report import loss_curves_png

SETTINGS_KEYS = ("parameters", "genq")  # the PNG text chunks an sd image carries its settings in
GROUP_FIGURES = ("loss-curves.png", "final-loss.png", "grid.png")


def metric_chart_png(job_id: str, name: str, points: list[tuple[int, float]]) -> bytes:
    return loss_curves_png([(name, points)], title=f"{job_id[:8]}: {name}", xlabel="step", ylabel=name)


def png_settings(path: Path) -> dict[str, str]:
    """The text chunks of a PNG that hold its settings (nothing when unreadable or absent)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}) or {}
    except OSError:
        return {}
    return {key: text[key] for key in SETTINGS_KEYS if key in text}


def group_figure_png(group, name: str) -> bytes | None:
    """One of the group's report figures (as `client group --report` draws it), or None."""
    from genq.client.groups import write_report

    with tempfile.TemporaryDirectory(prefix="genq-ui-") as folder:
        written = {path.name: path for path in write_report(group, Path(folder))}
        return written[name].read_bytes() if name in written else None


def group_figure_names(group) -> list[str]:
    if group.kind == "train-vae":
        return ["loss-curves.png", "final-loss.png"]
    if group.kind == "sd":
        return ["grid.png"]
    return []
