"""One loaded model, four kinds of job: text-to-image, image-to-image, inpainting and upscale.

The img2img and inpainting pipelines are built with diffusers' ``from_pipe`` from the loaded
text-to-image pipeline: they reuse its UNet, VAE, text encoder and scheduler objects, so a replica
holds one copy of the weights whatever mix of jobs it serves. Inpainting with an ordinary (4-channel)
UNet works through the pipeline's latent blending; a dedicated inpainting checkpoint, when
configured, is loaded once beside it and shares nothing (its UNet differs).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from PIL import Image

from serve_app.generation import ImageJob

logger = logging.getLogger("ray.serve")


def _pil(png: bytes, mode: str) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert(mode)


class TaskPipelines:
    def __init__(self, text2img: Any, inpainting: Any | None = None, vae_tiling_pixels: int = 0) -> None:
        self.text2img = text2img
        self._img2img: Any | None = None
        self._inpaint: Any | None = inpainting
        self._dedicated_inpainting = inpainting is not None
        self._vae_tiling_pixels = vae_tiling_pixels

    def for_kind(self, kind: str) -> Any:
        """The pipeline a kind runs on, built on first use (from_pipe: no second copy of weights)."""
        if kind == "txt2img":
            return self.text2img
        if kind in ("img2img", "upscale"):
            if self._img2img is None:
                from diffusers import AutoPipelineForImage2Image

                self._img2img = AutoPipelineForImage2Image.from_pipe(self.text2img)
                self._img2img.set_progress_bar_config(disable=True)
            return self._img2img
        if kind == "inpaint":
            if self._inpaint is None:
                from diffusers import AutoPipelineForInpainting

                self._inpaint = AutoPipelineForInpainting.from_pipe(self.text2img)
                self._inpaint.set_progress_bar_config(disable=True)
            return self._inpaint
        raise ValueError(f"unknown job kind {kind!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "kinds": ["txt2img", "img2img", "inpaint", "upscale"],
            "inpainting_model": "dedicated" if self._dedicated_inpainting else "shared (from_pipe)",
            "vae_tiling_above_pixels": self._vae_tiling_pixels or None,
        }

    def __call__(
        self,
        jobs: list[ImageJob],
        generators: list[Any],
        on_step_end: Callable[..., dict],
        scheduler: Any,
    ) -> Any:
        """One diffusers call for jobs that share a group key (kind, size, steps, strength...)."""
        first = jobs[0]
        pipe = self.for_kind(first.kind)
        pipe.scheduler = scheduler
        negative = [job.negative_prompt for job in jobs]
        kwargs: dict[str, Any] = {
            "prompt": [job.prompt for job in jobs],
            "negative_prompt": negative if any(negative) else None,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            "generator": generators,
            "output_type": "pil",
            "callback_on_step_end": on_step_end,
        }
        if first.kind == "txt2img":
            kwargs.update(width=first.width, height=first.height)
        else:
            kwargs.update(image=[_pil(job.init_image or b"", "RGB") for job in jobs], strength=first.strength)
        if first.kind == "inpaint":
            kwargs.update(
                mask_image=[_pil(job.mask_image or b"", "L") for job in jobs],
                width=first.width,
                height=first.height,
            )
        # Decoding big images in one piece is the VAE's memory peak (8 x 1024^2 at once): decode in
        # tiles above the configured size. Same VAE object for every pipeline, so set it each call.
        vae = pipe.vae
        if self._vae_tiling_pixels and first.width * first.height > self._vae_tiling_pixels:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        return pipe(**kwargs)
