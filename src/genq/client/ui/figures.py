"""Pictures the pages show whatever the job's kind: a job's metric charts, an image's settings."""
from __future__ import annotations

from genq.core.report import loss_curves_png
from genq.core.store.artifacts import ArtifactUnreadable

SETTINGS_KEYS = ("parameters", "genq")  # the PNG text chunks an image carries its settings in


def metric_chart_png(job_id: str, name: str, points: list[tuple[int, float]]) -> bytes:
    return loss_curves_png([(name, points)], title=f"{job_id[:8]}: {name}", xlabel="step", ylabel=name)


def png_settings(store, row) -> dict[str, str]:
    """The text chunks of a PNG artifact that hold its settings, read from the artifact store (nothing
    when unreadable or absent)."""
    import io

    from PIL import Image

    try:
        store.check_recorded(row.job_id, row.name, row.relative_path)
        with store.open(row.relative_path) as source:
            data = source.read(row.size + 1)
        with Image.open(io.BytesIO(data)) as image:
            text = getattr(image, "text", {}) or {}
    except (OSError, ArtifactUnreadable):
        return {}
    return {key: text[key] for key in SETTINGS_KEYS if key in text}
