"""AUTOMATIC1111's web API under ``/sdapi/v1/``: the tools and bots that speak it use us unchanged.

Each request becomes ordinary ``ImageSpec``s (``build_image_specs``, then ``image_inputs.image_specs`` for
img2img, inpainting and upscale), so A1111 callers batch with every other caller. What A1111 names
differently is translated at this edge: ``cfg_scale`` is guidance, ``batch_size`` x ``n_iter`` images
with consecutive seeds, ``sampler_name`` + ``scheduler`` resolve onto our schedulers, and the answer
is A1111's ``{images, parameters, info}`` with ``info`` a JSON string. Bad values are 400s naming
the A1111 field.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from PIL import Image

from serve_app.api.a1111.checkpoints import CurrentCheckpoint, find_checkpoint, lora_items, sd_models
from serve_app.api.a1111.infotext import Generation
from serve_app.api.a1111.inpaint import a1111_mask, fill_masked, overlay
from serve_app.api.a1111.protocol import (
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    ImagesResponse,
    Img2ImgRequest,
    ProcessingRequest,
    ProgressResponse,
    Txt2ImgRequest,
)
from serve_app.api.a1111.samplers import (
    ResolvedSampler,
    for_family,
    resolve_sampler,
    sampler_items,
    scheduler_items,
)
from serve_app.api.a1111.tasks import A1111Tasks
from serve_app.config.settings import AppSettings
from serve_app.core.content_policy import raise_if_all_flagged
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import decode_base64_image, fit, image_specs
from serve_app.core.images import MAX_SEED, ImageResult, ImageSpec, random_seed
from serve_app.core.model_choice import LoraRequest, parse_lora_tags, resolve_model
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.engine.client import ModelClient
from serve_app.storage import ImageStore


def _side(value: int | None, field: str, settings: AppSettings) -> int:
    """A1111 renders multiples of 8 (the latent grid): round down, then the configured bounds."""
    side = (value if value is not None else 512) // 8 * 8
    if not settings.min_size <= side <= settings.max_size:
        raise InvalidRequestError(
            f"'{field}' must be between {settings.min_size} and {settings.max_size}, got {value}.",
            param=field,
        )
    return side


def _resolved(body: ProcessingRequest) -> ResolvedSampler:
    return resolve_sampler(body.sampler_name, body.sampler_index, body.scheduler)


def _prompt_loras(
    prompt: str, model: str, body: ProcessingRequest, settings: AppSettings
) -> tuple[str, list[LoraRequest]]:
    """A1111's ``<lora:name:weight>`` tags: the prompt without them, and the LoRAs (checked here, so
    a bad one is a 400 naming ``prompt``, where the caller wrote it)."""
    cleaned, loras = parse_lora_tags(prompt)
    if body.disable_extra_networks:
        return cleaned, []  # A1111 strips the tags and applies nothing
    try:
        resolve_model(settings.catalogue, model, loras)
    except InvalidRequestError as error:
        raise InvalidRequestError(error.message, param="prompt", code=error.code) from None
    return cleaned, loras


def _text_jobs(
    body: ProcessingRequest, count: int, settings: AppSettings, sampler: ResolvedSampler, current: str
) -> list[ImageSpec]:
    """``current``: the checkpoint when ``override_settings`` names none (see a1111_checkpoints)."""
    model = (
        find_checkpoint(
            (body.override_settings or {}).get("sd_model_checkpoint"),
            settings.catalogue,
            "override_settings.sd_model_checkpoint",
        )
        or current
    )
    if count > settings.max_images:
        raise InvalidRequestError(
            f"batch_size x n_iter is {count} images; at most {settings.max_images} per request.",
            param="batch_size",
        )
    width, height = _side(body.width, "width", settings), _side(body.height, "height", settings)
    prompt, loras = _prompt_loras(body.prompt or "", model, body, settings)
    # Per family: "Euler" on FLUX is the flow-matching Euler; an SD-only sampler is a 400.
    sampler = for_family(sampler, settings.catalogue.entry(model).family, model)
    params = GenerationParams(
        # build_image_specs wants a prompt to check; A1111 allows an empty one, restored below.
        prompt=prompt if prompt.strip() else "-",
        negative_prompt=body.negative_prompt or "",
        size=f"{width}x{height}",
        seed=body.seed,
        steps=body.steps,
        guidance_scale=body.cfg_scale,
        scheduler=sampler.scheduler,
        model=model,
        loras=loras,
    )
    return [replace(job, prompt=prompt) for job in build_image_specs(params, count, settings)]


def _subseeds(subseed: int | None, count: int) -> list[int]:
    first = subseed if subseed is not None and subseed >= 0 else random_seed()
    return [(first + index) % (MAX_SEED + 1) for index in range(count)]


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def _answer(
    body: ProcessingRequest,
    jobs: Sequence[ImageSpec],
    results: Sequence[ImageResult | None],
    sampler: ResolvedSampler,
    settings: AppSettings,
    parameters: dict[str, Any],
    denoising_strength: float | None = None,
    extra: dict[str, Any] | None = None,
) -> ImagesResponse:
    """Images finished (an interrupt leaves the others out) and not flagged, with their infotexts."""
    raise_if_all_flagged([r for r in results if r is not None])
    kept = [(index, r) for index, r in enumerate(results) if r is not None and not r.nsfw_content_detected]
    subseeds = _subseeds(body.subseed, len(jobs))
    first = jobs[0]
    generation = Generation(
        # As A1111 reports them: with their <lora:...> tags, so the infotext renders the image again.
        prompts=[body.prompt or "" for _ in kept],
        negative_prompts=[jobs[index].negative_prompt for index, _ in kept],
        seeds=[r.seed for _, r in kept],
        subseeds=[subseeds[index] for index, _ in kept],
        width=first.width,
        height=first.height,
        steps=first.steps,
        cfg_scale=first.guidance_scale,
        sampler=sampler.sampler,
        schedule=sampler.schedule,
        batch_size=body.batch_size or 1,
        model=first.model or settings.served_model_name,
        denoising_strength=denoising_strength,
        extra=extra,
    )
    images = [_b64(r.png) for _, r in kept] if body.send_images is not False else []
    return ImagesResponse(images=images, parameters=parameters, info=generation.info())


def _img2img_jobs(
    body: Img2ImgRequest, settings: AppSettings, sampler: ResolvedSampler, current: str
) -> tuple[list[ImageSpec], list[tuple[Image.Image, Image.Image] | None]]:
    """The jobs, and per job the (original, mask) to composite the result over when inpainting."""
    if not body.init_images:
        raise InvalidRequestError(
            "'init_images' is required: one or more base64 images.", param="init_images"
        )
    for index, value in enumerate(body.init_images):
        if value.startswith(("http://", "https://")):
            raise InvalidRequestError(
                "Image URLs are not fetched; send the image as base64 or a data URL.",
                param=f"init_images.{index}",
            )
    batch_size, n_iter = body.batch_size or 1, body.n_iter or 1
    if len(body.init_images) > 1:
        # A1111: several init images make a batch of that many, image i at position i.
        if len(body.init_images) > batch_size:
            raise InvalidRequestError(
                f"{len(body.init_images)} init_images for batch_size {batch_size}: send at most batch_size.",
                param="init_images",
            )
        batch_size = len(body.init_images)
    images = [decode_base64_image(v, f"init_images.{i}", settings) for i, v in enumerate(body.init_images)]
    mask = decode_base64_image(body.mask, "mask", settings) if body.mask else None
    strength = body.denoising_strength if body.denoising_strength is not None else 0.75
    mode = body.resize_mode or 0
    jobs = _text_jobs(body, batch_size * n_iter, settings, sampler, current)
    prepared: list[ImageSpec] = list(jobs)
    overlays: list[tuple[Image.Image, Image.Image] | None] = [None] * len(jobs)
    for position, image in enumerate(images):
        indexes = [i for i in range(len(jobs)) if i % len(images) == position]
        subset = [jobs[i] for i in indexes]
        if mask is None:
            converted = image_specs(
                subset,
                "img2img",
                image,
                strength,
                resize_mode=mode,
                strength_field="denoising_strength",
                catalogue=settings.catalogue,
                image_field="init_images",
            )
        else:
            if mask.size != image.size:
                raise InvalidRequestError(
                    f"'mask' is {mask.width}x{mask.height} but the image is {image.width}x{image.height}.",
                    param="mask",
                )
            blur_x = body.mask_blur if body.mask_blur is not None else (body.mask_blur_x or 0)
            blur_y = body.mask_blur if body.mask_blur is not None else (body.mask_blur_y or 0)
            prepared_mask = a1111_mask(mask, bool(body.inpainting_mask_invert), blur_x, blur_y)
            width, height = subset[0].width, subset[0].height
            original = fit(image.convert("RGB"), width, height, mode)
            fitted_mask = fit(prepared_mask, width, height, mode)
            start = fill_masked(original, fitted_mask) if (body.inpainting_fill or 0) == 0 else original
            converted = image_specs(
                subset,
                "inpaint",
                start,
                strength,
                mask=fitted_mask,
                strength_field="denoising_strength",
                catalogue=settings.catalogue,
                image_field="init_images",
            )
            for i in indexes:
                overlays[i] = (original, fitted_mask)
        for i, job in zip(indexes, converted, strict=True):
            prepared[i] = job
    return prepared, overlays


def _composited(
    results: Sequence[ImageResult | None], overlays: Sequence[tuple[Image.Image, Image.Image] | None]
) -> list[ImageResult | None]:
    return [
        replace(r, png=overlay(r.png, *over))
        if r is not None and over is not None and not r.nsfw_content_detected
        else r
        for r, over in zip(results, overlays, strict=True)
    ]


def _upscale_size(
    body: ExtrasSingleImageRequest, image: Image.Image, settings: AppSettings
) -> tuple[int, int]:
    if body.resize_mode == 0:
        width, height = int(image.width * body.upscaling_resize), int(image.height * body.upscaling_resize)
        field = "upscaling_resize"
    else:
        width, height = body.upscaling_resize_w, body.upscaling_resize_h
        field = (
            "upscaling_resize_w"
            if not settings.min_size <= width <= settings.max_size
            else "upscaling_resize_h"
        )
    width, height = width // 8 * 8, height // 8 * 8
    if not (
        settings.min_size <= width <= settings.max_size and settings.min_size <= height <= settings.max_size
    ):
        raise InvalidRequestError(
            f"The upscaled image would be {width}x{height}; each side must be between "
            f"{settings.min_size} and {settings.max_size}.",
            param=field,
        )
    return width, height


def default_options() -> dict[str, Any]:
    """The A1111 options clients read; others they set are kept and echoed, with no effect."""
    return {
        "sd_checkpoint_hash": None,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
        "eta_noise_seed_delta": 0,
        "img2img_fix_steps": False,
    }


def create_a1111_router(
    client: ModelClient, settings: AppSettings, dependencies: Sequence[Any], store: ImageStore
) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=list(dependencies), tags=["AUTOMATIC1111"])
    tasks = A1111Tasks()
    options = default_options()
    catalogue = settings.catalogue
    checkpoint = CurrentCheckpoint(store, catalogue)

    @router.post("/txt2img", response_model=ImagesResponse)
    async def txt2img(body: Txt2ImgRequest) -> ImagesResponse:
        sampler = _resolved(body)
        batch_size = body.batch_size or 1
        current = await checkpoint.get()
        jobs = _text_jobs(body, batch_size * (body.n_iter or 1), settings, sampler, current)
        task = tasks.start(body.force_task_id, "txt2img", jobs, batch_size)
        results = await tasks.run(task, client, jobs)
        parameters = body.model_dump(mode="json")
        return await asyncio.to_thread(_answer, body, jobs, results, sampler, settings, parameters)

    @router.post("/img2img", response_model=ImagesResponse)
    async def img2img(body: Img2ImgRequest) -> ImagesResponse:
        sampler = _resolved(body)
        current = await checkpoint.get()
        jobs, overlays = await asyncio.to_thread(_img2img_jobs, body, settings, sampler, current)
        task = tasks.start(body.force_task_id, "img2img", jobs, body.batch_size or 1)
        results = await tasks.run(task, client, jobs)
        results = await asyncio.to_thread(_composited, results, overlays)
        parameters = body.model_dump(mode="json")
        if not body.include_init_images:
            parameters.update(init_images=None, mask=None)
        extra = (
            {"Mask blur": body.mask_blur if body.mask_blur is not None else body.mask_blur_x}
            if body.mask
            else None
        )
        return await asyncio.to_thread(
            _answer, body, jobs, results, sampler, settings, parameters, jobs[0].strength, extra
        )

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    async def extra_single_image(body: ExtrasSingleImageRequest) -> ExtrasSingleImageResponse:
        """Upscale: a Lanczos resize to the target size, then img2img at ``upscale_strength`` with an
        empty prompt to put back the detail a resize cannot invent (whatever ``upscaler_1`` names)."""
        if not body.image:
            raise InvalidRequestError("'image' is required: a base64 image.", param="image")
        image = await asyncio.to_thread(decode_base64_image, body.image, "image", settings)
        width, height = _upscale_size(body, image, settings)
        # Enough steps that the refining pass at upscale_strength runs at least one.
        steps = min(settings.max_steps, max(settings.default_steps, math.ceil(1 / settings.upscale_strength)))
        params = GenerationParams(
            prompt="upscale", size=f"{width}x{height}", steps=steps, model=await checkpoint.get()
        )
        crop = 1 if body.resize_mode == 1 and body.upscaling_crop else 0
        jobs = await asyncio.to_thread(
            image_specs,
            build_image_specs(params, 1, settings),
            "upscale",
            image,
            settings.upscale_strength,
            None,
            crop,
            catalogue=settings.catalogue,
        )
        jobs = [replace(job, prompt="") for job in jobs]
        task = tasks.start(None, "extras", jobs, 1)
        (result,) = await tasks.run(task, client, jobs)
        if result is None:
            return ExtrasSingleImageResponse(html_info="<p>Interrupted.</p>", image=None)
        raise_if_all_flagged([result])
        info = (
            f"<p>Upscaled {image.width}x{image.height} to {width}x{height}: Lanczos resize, then "
            f"img2img at strength {settings.upscale_strength} (seed {result.seed}).</p>"
        )
        return ExtrasSingleImageResponse(html_info=info, image=_b64(result.png))

    @router.get("/progress", response_model=ProgressResponse)
    async def progress(
        skip_current_image: bool = False,
        id_task: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ProgressResponse:
        """The caller's task when ``id_task`` names it (its ``force_task_id``), else the oldest
        A1111 task running on this ingress; no live previews (``current_image`` is null)."""
        return tasks.progress(id_task)

    @router.post("/interrupt")
    async def interrupt() -> dict[str, Any]:
        tasks.interrupt()
        return {}

    @router.get("/samplers")
    async def samplers() -> list[dict[str, Any]]:
        return sampler_items()

    @router.get("/schedulers")
    async def schedulers() -> list[dict[str, Any]]:
        return scheduler_items()

    @router.get("/upscalers")
    async def upscalers() -> list[dict[str, Any]]:
        """Any name is accepted and runs the one upscale there is (resize + img2img refinement)."""
        return [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in ("None", "Lanczos")
        ]

    @router.get("/sd-models")
    async def list_sd_models() -> list[dict[str, Any]]:
        """Every catalogue entry, titled by its name (what ``sd_model_checkpoint`` takes)."""
        return sd_models(catalogue)

    @router.get("/loras")
    async def loras() -> list[dict[str, Any]]:
        """The LoRAs a prompt can name as ``<lora:name:weight>`` (A1111's Lora extension's listing)."""
        return lora_items(catalogue)

    @router.post("/refresh-checkpoints")
    async def refresh_checkpoints() -> None:
        """The catalogue is the config file's: nothing to rescan (clients call this before listing)."""

    @router.post("/refresh-loras")
    async def refresh_loras() -> None:
        """As refresh-checkpoints."""

    @router.get("/options")
    async def get_options() -> dict[str, Any]:
        return {**options, "sd_model_checkpoint": await checkpoint.get()}

    @router.post("/options")
    async def set_options(body: Annotated[dict[str, Any], Body()]) -> None:
        """``sd_model_checkpoint`` switches the checkpoint of A1111 requests that name none, on every
        replica and across restarts (stored); other keys are kept per replica and echoed by GET."""
        name = find_checkpoint(body.get("sd_model_checkpoint"), catalogue, "sd_model_checkpoint")
        if name is not None:
            await checkpoint.set(name)
        options.update({k: v for k, v in body.items() if k != "sd_model_checkpoint"})

    @router.get("/scripts")
    async def scripts() -> dict[str, list[str]]:
        """No scripts run here (clients probe this to find extensions)."""
        return {"txt2img": [], "img2img": []}

    return router
