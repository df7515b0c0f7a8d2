"""OpenAI's ``POST /v1/images/edits`` and ``/v1/images/variations``, on Stable Diffusion.

The official ``openai`` SDK's ``images.edit`` and ``images.create_variation`` send multipart forms:
``image`` (``image[]`` when it sends a list), optional ``mask``, ``prompt``, ``n``, ``size``,
``response_format`` and fields we ignore (``model``, ``quality``...). Our diffusion extensions ride
along as extra form fields: ``strength``, ``seed``, ``steps``, ``guidance_scale``, ``scheduler``,
``negative_prompt``.

- An edit with a mask (or an image with transparent pixels and no mask) is inpainting: OpenAI's
  convention, fully transparent = repaint; a mask without alpha is read as white = repaint.
- An edit without any mask is image-to-image at ``strength``.
- A variation is image-to-image of the picture alone at ``variation_strength``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from serve_app.api.openai.protocol import ImageGenerationResponse, image_entries
from serve_app.config.settings import AppSettings
from serve_app.core.content_policy import raise_if_all_flagged
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import (
    decode_image,
    has_transparency,
    image_specs,
    mask_from_alpha,
    output_size,
)
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.engine.client import ModelClient
from serve_app.storage import ImageStore, save_results


class EditForm(BaseModel):
    """The form fields we read; anything else an SDK sends is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | None = Field(default=None, max_length=100_000)
    negative_prompt: str = Field(default="", max_length=100_000)
    n: int = Field(default=1, ge=1, le=64)
    size: str | None = Field(default=None, max_length=20)
    response_format: Literal["b64_json", "url"] = "b64_json"
    strength: float | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = Field(default=None, max_length=40)


def openai_images_response(
    results: Sequence[ImageResult],
    jobs: list[ImageSpec],
    prompt: str,
    response_format: str,
    store: ImageStore,
    settings: AppSettings,
    base_url: str,
    source: str = "api",
) -> ImageGenerationResponse:
    """OpenAI's ``{created, data}``: base64 PNGs, or URLs of the images stored with their records.

    All flagged by the safety checker: a 400 before anything is stored. Some flagged: they are stored
    too (their records say so) and their entries carry an error instead of an image.
    """
    raise_if_all_flagged(results)
    if response_format == "url":
        image_ids = save_results(store, settings, jobs, list(results), source)
        data = image_entries(
            results, prompt, lambda index, _: {"url": store.image_url(image_ids[index], base_url)}
        )
    else:
        data = image_entries(
            results, prompt, lambda _, result: {"b64_json": base64.b64encode(result.png).decode()}
        )
    return ImageGenerationResponse(created=int(time.time()), data=data)


async def _read_form(request: Request) -> tuple[EditForm, dict[str, bytes]]:
    form = await request.form()
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for key, value in form.multi_items():
        name = key.removesuffix("[]")
        if isinstance(value, UploadFile):
            if name not in files:  # a list of images: the first one is the picture we start from
                files[name] = await value.read()
        elif name not in fields:
            fields[name] = value
    try:
        return EditForm.model_validate(fields), files
    except ValidationError as error:
        raise _naming_the_field(error) from None


def _naming_the_field(error: ValidationError) -> InvalidRequestError:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return InvalidRequestError(f"'{param}': {first['msg']}.", param=param)


def _generation_params(form: EditForm, prompt: str, size: str) -> GenerationParams:
    try:
        return GenerationParams(
            prompt=prompt,
            negative_prompt=form.negative_prompt,
            size=size,
            seed=form.seed,
            steps=form.steps,
            guidance_scale=form.guidance_scale,
            scheduler=form.scheduler,
        )
    except ValidationError as error:
        raise _naming_the_field(error) from None


# Decoding (up to max_input_pixels), masks, resizing and PNG encoding are CPU work of tens to
# hundreds of milliseconds: on the ingress's event loop they would stall every other caller
# (Discord's 3-second ACKs included), so the routes run these in a worker thread.


def edit_specs(form: EditForm, files: dict[str, bytes], settings: AppSettings) -> list[ImageSpec]:
    """An edit's jobs: inpainting with a mask (given, or the image's transparent pixels), else img2img."""
    image = decode_image(files["image"], "image", settings)
    mask = None
    if "mask" in files:
        uploaded = decode_image(files["mask"], "mask", settings)
        mask = mask_from_alpha(uploaded) if has_transparency(uploaded) else uploaded.convert("L")
    elif has_transparency(image):
        mask = mask_from_alpha(image)
    params = _generation_params(form, form.prompt or "", output_size(image, form.size, settings))
    jobs = build_image_specs(params, form.n, settings)
    if mask is not None:
        strength = form.strength if form.strength is not None else 1.0
        return image_specs(jobs, "inpaint", image, strength, mask=mask, catalogue=settings.catalogue)
    strength = form.strength if form.strength is not None else settings.default_strength
    return image_specs(jobs, "img2img", image, strength, catalogue=settings.catalogue)


def variation_specs(
    form: EditForm, files: dict[str, bytes], prompt: str, settings: AppSettings
) -> list[ImageSpec]:
    """A variation's jobs: image-to-image of the picture alone."""
    image = decode_image(files["image"], "image", settings)
    params = _generation_params(form, prompt or "variation", output_size(image, form.size, settings))
    strength = form.strength if form.strength is not None else settings.variation_strength
    jobs = build_image_specs(params, form.n, settings)
    jobs = image_specs(jobs, "img2img", image, strength, catalogue=settings.catalogue)
    # No prompt (OpenAI's variations take none): an empty one lets the picture alone lead.
    return [replace(job, prompt=prompt) for job in jobs]


def create_image_edit_router(
    client: ModelClient, store: ImageStore, settings: AppSettings, dependencies: Sequence[Any]
) -> APIRouter:
    router = APIRouter(dependencies=list(dependencies))

    @router.post("/v1/images/edits", response_model=ImageGenerationResponse)
    async def create_edit(request: Request) -> ImageGenerationResponse:
        """Inpainting (with a mask or transparent pixels) or image-to-image (without)."""
        form, files = await _read_form(request)
        if "image" not in files:
            raise InvalidRequestError("'image' is required (a PNG, JPEG or WebP file).", param="image")
        if not form.prompt or not form.prompt.strip():
            raise InvalidRequestError("'prompt' is required.", param="prompt")
        jobs = await asyncio.to_thread(edit_specs, form, files, settings)
        results = await client.generate(jobs)
        return await asyncio.to_thread(
            openai_images_response,
            results,
            jobs,
            form.prompt,
            form.response_format,
            store,
            settings,
            settings.base_url_for(str(request.base_url)),
        )

    @router.post("/v1/images/variations", response_model=ImageGenerationResponse)
    async def create_variation(request: Request) -> ImageGenerationResponse:
        """The picture, varied: image-to-image of it alone (an optional ``prompt`` steers it)."""
        form, files = await _read_form(request)
        if "image" not in files:
            raise InvalidRequestError("'image' is required (a PNG, JPEG or WebP file).", param="image")
        prompt = (form.prompt or "").strip()
        jobs = await asyncio.to_thread(variation_specs, form, files, prompt, settings)
        results = await client.generate(jobs)
        return await asyncio.to_thread(
            openai_images_response,
            results,
            jobs,
            prompt,
            form.response_format,
            store,
            settings,
            settings.base_url_for(str(request.base_url)),
        )

    return router
