"""Live previews of a render: the current step's latents through a tiny autoencoder.

Decoding with the model's own VAE at every few steps would cost about as much as a denoising step
for the whole batch; a TAESD-style ``AutoencoderTiny`` (about 1M parameters, e.g.
``madebyollin/taesd`` for SD 1.5/2.x, ``madebyollin/taesdxl`` for SDXL) decodes a rough image for a
small fraction of that. Only images whose caller streams progress are decoded, only every
``preview_every_steps`` steps, and the preview is a small JPEG, so a batch without watchers pays
nothing and one with watchers pays a few milliseconds per preview (measured into the batch log as
``preview_s``).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from serve_app.config.speed import SpeedSettings
from serve_app.engine.model.loading import resolve_model_source

logger = logging.getLogger("ray.serve")


class PreviewDecoder:
    def __init__(self, decoder: Any, every_steps: int, size: int) -> None:
        self._decoder = decoder
        self.every_steps = every_steps
        self.size = size

    @classmethod
    def load(cls, speed: SpeedSettings, device: str, dtype: str) -> PreviewDecoder | None:
        """The configured tiny autoencoder on the replica's device, or None when none is configured."""
        if not speed.preview_vae:
            return None
        import torch
        from diffusers import AutoencoderTiny

        source, is_local = resolve_model_source(speed.preview_vae)
        decoder = AutoencoderTiny.from_pretrained(
            source, dtype=getattr(torch, dtype), local_files_only=is_local
        ).to(device)
        decoder.eval()
        return cls(decoder, speed.preview_every_steps, speed.preview_size)

    def due(self, step: int, total: int) -> bool:
        """Every ``every_steps`` steps, never on the last one (the real image follows at once)."""
        return step < total and step % self.every_steps == 0

    def describe(self) -> dict[str, Any]:
        return {"every_steps": self.every_steps, "size": self.size}

    def decode(self, latents: Any, indices: list[int]) -> dict[int, bytes]:
        """JPEG previews of the latents at ``indices`` (rows of the batch), longest side ``size``."""
        import torch
        from PIL import Image

        if not indices:
            return {}
        with torch.no_grad():
            rows = latents[indices].to(self._decoder.device, self._decoder.dtype)
            images = self._decoder.decode(rows).sample
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        previews = {}
        for index, array in zip(indices, pixels, strict=True):
            image = Image.fromarray(array)
            image.thumbnail((self.size, self.size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=70)
            previews[index] = buffer.getvalue()
        return previews
