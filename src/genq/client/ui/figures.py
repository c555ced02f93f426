"""Pictures the pages show whatever the job's kind: a job's metric charts, an image's settings."""
from __future__ import annotations

from pathlib import Path

from genq.core.report import loss_curves_png

SETTINGS_KEYS = ("parameters", "genq")  # the PNG text chunks an image carries its settings in


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
