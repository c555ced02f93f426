"""Text prompts to CLIP embeddings, with the negative prompt as the unconditional side of guidance."""
from __future__ import annotations

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from genq.core.kinds.sd import uses_guidance


def truncation_warning(tokenizer: CLIPTokenizer, text: str, what: str = "prompt") -> str | None:
    """A one-line warning when `text` has more tokens than CLIP reads (77 with the two specials)."""
    limit = tokenizer.model_max_length
    ids = tokenizer(text, truncation=False).input_ids  # [BOS, ..., EOS]
    if len(ids) <= limit:
        return None
    dropped = tokenizer.decode(ids[limit - 1 : -1])
    return f"{what} is {len(ids)} tokens, longer than the {limit} CLIP reads; this part was dropped: {dropped!r}"


def _embed(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, texts: list[str], device: torch.device) -> torch.Tensor:
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    hidden = text_encoder(tokens.input_ids.to(device))[0]  # (B, 77, dim): last hidden state
    return hidden.to(dtype=text_encoder.dtype, device=device)


def _per_image(embeds: torch.Tensor, num_images: int) -> torch.Tensor:
    batch, length, _ = embeds.shape
    return embeds.repeat(1, num_images, 1).view(batch * num_images, length, -1)  # (B*n, 77, dim)


def encode_prompt(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    negative_prompt: str | None,
    num_images: int,
    device: torch.device | str,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds, negative_embeds), each (num_images, 77, dim); negative_embeds is None without guidance.

    The negative side is the empty prompt when none is given. The caller concatenates
    [negative, positive] for one batched UNet call.
    """
    device = torch.device(device)
    if not uses_guidance(guidance):
        return _per_image(_embed(tokenizer, text_encoder, [prompt], device), num_images), None
    # Both sides in one text-encoder pass: rows are independent (same length, no padding mask).
    prompt_embeds, negative_embeds = _embed(tokenizer, text_encoder, [prompt, negative_prompt or ""], device).chunk(2)
    return _per_image(prompt_embeds, num_images), _per_image(negative_embeds, num_images)
