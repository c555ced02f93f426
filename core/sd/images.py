"""PNG files for generated images: settings in text chunks, and a grid of a batch."""
from __future__ import annotations

import io
import json
import math
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.sd.schedulers import SAMPLER_LABELS


def parameters_text(settings: dict[str, Any]) -> str:
    """The `parameters` text the popular UIs write and read (prompt, negative line, settings line)."""
    lines = [settings["prompt"]]
    if settings.get("negative_prompt"):
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    fields = [
        f"Steps: {settings['steps']}",
        f"Sampler: {SAMPLER_LABELS.get(settings['scheduler'], settings['scheduler'])}",
        f"CFG scale: {settings['guidance']}",
        f"Seed: {settings['seed']}",
        f"Size: {settings['width']}x{settings['height']}",
        f"Model: {settings['model']}",
    ]
    if settings.get("batch_size", 1) > 1:
        fields += [f"Batch size: {settings['batch_size']}", f"Batch pos: {settings['image_index']}"]
    lines.append(", ".join(fields))
    return "\n".join(lines)


def png_bytes(image: Image.Image, settings: dict[str, Any] | None = None) -> bytes:
    """PNG bytes; with `settings`, a `parameters` chunk (UI style) and a `genq` chunk (the same as JSON)."""
    info = None
    if settings is not None:
        info = PngInfo()
        info.add_text("parameters", parameters_text(settings))
        info.add_text("genq", json.dumps(settings, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def make_grid(images: list[Image.Image]) -> Image.Image:
    """The images in a near-square grid, row by row."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height), "black")
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * width, (i // cols) * height))
    return grid
