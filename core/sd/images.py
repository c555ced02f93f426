"""PNG files for generated images: settings in text chunks, and a grid of a batch."""
from __future__ import annotations

import json
import math
from typing import Any

from PIL import Image

from genq.core.images import grid, png_bytes
from genq.core.sd.schedulers import SAMPLER_LABELS


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


def settings_png(image: Image.Image, settings: dict[str, Any]) -> bytes:
    """PNG bytes with a `parameters` chunk (UI style) and a `genq` chunk (the same settings as JSON)."""
    return png_bytes(image, {"parameters": parameters_text(settings), "genq": json.dumps(settings, ensure_ascii=False)})


def make_grid(images: list[Image.Image]) -> Image.Image:
    """The images in a near-square grid, row by row."""
    return grid(images, columns=math.ceil(math.sqrt(len(images))), padding=0, background=0)
