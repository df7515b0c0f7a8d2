"""One loaded model, four kinds of job: text-to-image, image-to-image, inpainting and upscale.

The img2img and inpainting pipelines are built with diffusers' ``from_pipe`` from the loaded
text-to-image pipeline: they reuse its UNet, VAE, text encoder and scheduler objects, so a replica
holds one copy of the weights whatever mix of jobs it serves. Inpainting with an ordinary (4-channel)
UNet works through the pipeline's latent blending; a dedicated inpainting checkpoint
(``inpainting_model``), when configured, is loaded once beside it. Upscale is resize + a
low-strength img2img pass ("hires fix") unless a dedicated 2x upscaler (``upscaler_model``, the
shape of stabilityai/sd-x2-latent-upscaler) is configured; then that renders the upscale.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from PIL import Image

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageSpec
from serve_app.engine.model.families import adjust_arguments
from serve_app.engine.model.loading import resolve_model_source
from serve_app.engine.model.safety import StandaloneChecker

logger = logging.getLogger("ray.serve")

# Pipelines whose output_type="latent" is exactly what ``vae.decode`` takes after scaling (no packed
# latents, no shift): the replica's finish stage decodes these (serve_app/engine/render.py).
LATENT_PIPELINES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
    }
)


def _pil(png: bytes, mode: str) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert(mode)


def load_dedicated(source: str, auto_class: Any, settings: AppSettings, plan: Any) -> Any:
    """A dedicated checkpoint (hub id, local folder or s3:// prefix), on the replica's device."""
    import torch

    path, is_local = resolve_model_source(source, settings)
    pipe = auto_class.from_pretrained(path, dtype=getattr(torch, plan.dtype), local_files_only=is_local)
    pipe = pipe.to(plan.device)
    pipe.set_progress_bar_config(disable=True)
    logger.info("loaded %s from %s", type(pipe).__name__, source)
    return pipe


class TaskPipelines:
    def __init__(
        self,
        text2img: Any,
        inpainting: Any | None = None,
        vae_tiling_pixels: int = 0,
        upscaler: Any | None = None,
        standalone_checker: StandaloneChecker | None = None,
    ) -> None:
        self.text2img = text2img
        # Checks the images of pipelines that return images and ship no checker (FLUX, SD 3.5).
        self.standalone_checker = standalone_checker
        self._img2img: Any | None = None
        self._inpaint: Any | None = inpainting
        self._dedicated_inpainting = inpainting is not None
        self._upscaler = upscaler
        self._vae_tiling_pixels = vae_tiling_pixels

    @classmethod
    def load(cls, text2img: Any, settings: AppSettings, plan: Any) -> TaskPipelines:
        from diffusers import AutoPipelineForInpainting, DiffusionPipeline

        standalone = None
        if settings.safety_checker and settings.safety_checker_model:
            if getattr(text2img, "safety_checker", None) is None:
                standalone = StandaloneChecker.load(
                    settings.safety_checker_model, plan.device, plan.dtype, settings
                )
                # Where the replica's finish stage decodes latents itself it checks with the
                # pipeline's safety_checker and feature_extractor: give it the standalone ones.
                text2img.safety_checker = standalone.checker
                text2img.feature_extractor = standalone.feature_extractor
        return cls(
            text2img,
            inpainting=load_dedicated(settings.inpainting_model, AutoPipelineForInpainting, settings, plan)
            if settings.inpainting_model
            else None,
            upscaler=load_dedicated(settings.upscaler_model, DiffusionPipeline, settings, plan)
            if settings.upscaler_model
            else None,
            vae_tiling_pixels=settings.vae_tiling_pixels,
            standalone_checker=standalone,
        )

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

    def stops_at_latents(self, kind: str) -> bool:
        """Whether this kind's pipeline can return latents for the finish stage to decode.

        The dedicated upscaler predates ``output_type="latent"`` handling of this kind, and
        pipelines of other families may pack their latents: those return images as before.
        """
        if kind == "upscale" and self._upscaler is not None:
            return False
        pipe = self.for_kind(kind)
        return type(pipe).__name__ in LATENT_PIPELINES and getattr(pipe, "vae", None) is not None

    def describe(self) -> dict[str, Any]:
        return {
            "kinds": ["txt2img", "img2img", "inpaint", "upscale"],
            "inpainting_model": "dedicated" if self._dedicated_inpainting else "shared (from_pipe)",
            "upscaler": type(self._upscaler).__name__ if self._upscaler is not None else "img2img refine",
            "vae_tiling_above_pixels": self._vae_tiling_pixels or None,
        }

    def __call__(
        self,
        jobs: list[ImageSpec],
        generators: list[Any],
        on_step_end: Callable[..., dict],
        scheduler: Any,
        output_type: str = "pil",
    ) -> Any:
        """One diffusers call for jobs that share a group key (kind, size, steps, strength...).

        ``output_type="latent"`` stops before the VAE (the replica's finish stage decodes); only
        for kinds where ``stops_at_latents`` says the pipeline can.
        """
        first = jobs[0]
        if first.kind == "upscale" and self._upscaler is not None:
            return self._dedicated_upscale(jobs, generators, on_step_end)
        pipe = self.for_kind(first.kind)
        pipe.scheduler = scheduler
        negative = [job.negative_prompt for job in jobs]
        kwargs: dict[str, Any] = {
            "prompt": [job.prompt for job in jobs],
            "negative_prompt": negative if any(negative) else None,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            "generator": generators,
            "output_type": output_type,
            "callback_on_step_end": on_step_end,
        }
        kwargs = adjust_arguments(pipe, kwargs, jobs)  # per family (serve_app/engine/model/families.py)
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
        output = pipe(**kwargs)
        return self._checked(output, kwargs.get("output_type", "pil"))

    def _checked(self, output: Any, output_type: str) -> Any:
        """Images from a pipeline without a checker of its own, through the standalone one."""
        if self.standalone_checker is None or output_type == "latent":
            return output  # latents: the finish stage checks them (LoadedModel.safety_checker)
        if getattr(output, "nsfw_content_detected", None) is not None:
            return output  # the pipeline checked them itself
        images, flags = self.standalone_checker.check(list(output.images))
        output.images = images
        output.nsfw_content_detected = flags
        return output

    def _dedicated_upscale(
        self, jobs: list[ImageSpec], generators: list[Any], on_step_end: Callable[..., dict]
    ) -> Any:
        """The 2x latent upscaler on the picture at its original size.

        The ingress hands every upscale job its picture already resized to the output size (the
        shape the img2img refine needs); halving it back restores the original's pixels closely
        enough for a model that re-renders detail anyway. This pipeline predates
        ``callback_on_step_end``: progress comes through its old ``callback``, and it cannot be
        interrupted between steps.
        """
        first = jobs[0]
        pipe = self._upscaler
        images = [
            _pil(job.init_image or b"", "RGB").resize(
                (job.width // 2, job.height // 2), Image.Resampling.LANCZOS
            )
            for job in jobs
        ]
        negative = [job.negative_prompt for job in jobs]

        def legacy_callback(step: int, timestep: Any, latents: Any) -> None:
            on_step_end(pipe, step, timestep, {})

        return pipe(
            prompt=[job.prompt for job in jobs],
            negative_prompt=negative if any(negative) else None,
            image=images,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            output_type="pil",
            callback=legacy_callback,
        )
