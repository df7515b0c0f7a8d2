"""Live previews of a render: the current step's latents through a tiny autoencoder.

Decoding with the model's own VAE at every few steps would cost about as much as a denoising step
for the whole batch; a TAESD-style ``AutoencoderTiny`` (about 1M parameters, e.g.
``madebyollin/taesd`` for SD 1.5/2.x, ``madebyollin/taesdxl`` for SDXL) decodes a rough image for a
small fraction of that. Only images whose caller streams progress are decoded, only every
``preview_every_steps`` steps, and the preview is a small JPEG, so a batch without watchers pays
nothing and one with watchers pays a few milliseconds per preview (measured into the batch log as
``preview_s``).

Two halves, because the denoising loop must not wait for the CPU (issue 23): ``pixels`` runs in the
step callback on the pipeline thread and only queues device work (decode, resize to the preview
size, uint8, an asynchronous copy to pinned host memory with a CUDA event after it); ``encode`` runs
in the replica's encode pool, waits for that event and makes the JPEGs. ``decode`` does both, for
callers that want the bytes at once (the bench, tests).

Each family previews with a decoder made for its latents (``preview_vae`` per catalogue entry, else
``speed.preview_vae``): TAESD/TAESDXL for 4-channel UNet latents, TAESD3 for SD 3.5, TAEF1 for
FLUX.1 once its packed latents are unpacked; a decoder whose channels do not match the model's
latents is refused at load (the model then reports no previews), and FLUX.2 has none.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from serve_app.config.families import FamilySpec
from serve_app.config.settings import AppSettings
from serve_app.config.speed import SpeedSettings
from serve_app.engine.model.families import preview_latents
from serve_app.engine.model.loading import model_entry, resolve_model_source

logger = logging.getLogger("ray.serve")


def model_latent_channels(pipe: Any, family: FamilySpec) -> int | None:
    """Channels of the latents a preview decoder receives (after unpacking, for packed ones)."""
    vae = getattr(pipe, "vae", None)
    channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    return int(channels) if channels is not None else None


@dataclass
class PreviewPixels:
    """Preview pixels on their way to the host: uint8 (N, H, W, C) rows for ``indices``."""

    indices: list[int]
    pixels: Any  # a host tensor; on CUDA still being copied until ``ready`` has passed
    ready: Any = None  # CUDA event recorded after the copy, or None where the copy was synchronous

    def wait(self) -> Any:
        if self.ready is not None:
            self.ready.synchronize()  # blocks this (encode) thread only, never the denoising one
        return self.pixels.numpy()


class PreviewDecoder:
    def __init__(
        self,
        decoder: Any,
        every_steps: int,
        size: int,
        pipe: Any = None,
        family: FamilySpec | None = None,
        source: str | None = None,
    ) -> None:
        self._decoder = decoder
        self.every_steps = every_steps
        self.size = size
        self._pipe = pipe
        self._family = family
        self.source = source

    @classmethod
    def for_model(cls, settings: AppSettings, pipe: Any, device: str, dtype: str) -> PreviewDecoder | None:
        """The entry's preview decoder (or the app's), when one is configured and fits its latents."""
        entry = model_entry(settings)
        family = entry.spec
        source = entry.preview_vae or settings.speed.preview_vae
        if not source or family.preview == "none":
            return None
        speed = settings.speed.model_copy(update={"preview_vae": source})
        loaded = cls.load(speed, device, dtype)
        if loaded is None:
            return None
        wanted = model_latent_channels(pipe, family)
        have = getattr(loaded._decoder.config, "latent_channels", None)
        if wanted is not None and have is not None and int(have) != wanted:
            logger.warning(
                "preview decoder %s takes %s-channel latents; %s makes %s: no previews for it",
                source, have, entry.name, wanted,
            )
            return None
        return cls(loaded._decoder, loaded.every_steps, loaded.size, pipe, family, source)

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
        return {"every_steps": self.every_steps, "size": self.size, "decoder": self.source}

    def pixels(
        self, latents: Any, indices: list[int], width: int | None = None, height: int | None = None
    ) -> PreviewPixels | None:
        """Queue the preview decode of the latents at ``indices`` (rows of the batch); no host sync.

        Packed (FLUX.1) latents need the image size to unpack; without it a square image is
        assumed, and a sequence that is no square grid previews nothing.
        """
        import math

        import torch

        if not indices:
            return None
        if self._family is not None and self._pipe is not None:
            if self._family.preview == "packed" and (width is None or height is None):
                side = math.isqrt(int(latents.shape[1]))
                if side * side != latents.shape[1]:
                    return None
                width = height = side * 2 * int(self._pipe.vae_scale_factor)
            latents = preview_latents(self._pipe, self._family, latents, width or 0, height or 0)
            if latents is None:
                return None
        with torch.no_grad():
            rows = latents[indices].to(self._decoder.device, self._decoder.dtype)
            images = self._decoder.decode(rows).sample.float()
            # Longest side ``size`` on the device: fewer bytes cross to the host, and the encoder
            # thread only compresses.
            height_px, width_px = images.shape[-2:]
            scale = self.size / max(height_px, width_px)
            if scale < 1:
                target = (max(1, round(height_px * scale)), max(1, round(width_px * scale)))
                images = torch.nn.functional.interpolate(images, size=target, mode="bilinear", antialias=True)
            pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
            if pixels.device.type != "cuda":
                return PreviewPixels(list(indices), pixels.contiguous().cpu())
            # A device-to-host copy with non_blocking lands in pinned memory and returns at once.
            host = pixels.contiguous().to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            return PreviewPixels(list(indices), host, ready)

    @staticmethod
    def encode(pending: PreviewPixels) -> dict[int, bytes]:
        """JPEGs of queued preview pixels (blocking: the replica runs it in its encode pool)."""
        from PIL import Image

        previews = {}
        for index, array in zip(pending.indices, pending.wait(), strict=True):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=70)
            previews[index] = buffer.getvalue()
        return previews

    def decode(
        self, latents: Any, indices: list[int], width: int | None = None, height: int | None = None
    ) -> dict[int, bytes]:
        """JPEG previews of the latents at ``indices`` at once: ``pixels`` then ``encode``."""
        pending = self.pixels(latents, indices, width, height)
        return self.encode(pending) if pending is not None else {}
