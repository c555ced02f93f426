"""An sd image as PNG bytes that carry its settings in text chunks: `parameters`, as the popular UIs
write and read it, and `genq`, the same settings as JSON."""
from __future__ import annotations

import json
from typing import Any

from PIL import Image

from genq.core.images import png_bytes
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

