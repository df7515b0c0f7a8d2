"""Pictures a prediction starts from: a data URL, or the URL of an image this service stored.

``input.image`` could name any URL, and fetching it from inside the cluster would be a way in
(loopback services, the VPC, the metadata endpoint) and a way to make the service download
anything. So nothing is fetched: a ``data:`` URL carries the image itself, and a URL this service
handed out for a stored image (``/images/<id>.png`` on this host, or the store's own URL, a
presigned S3 one included) is read from the store by its id. Anything else is a 400 naming the
field. Decoding and every check after that are ``image_inputs``', as for every other upload.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import (
    decode_base64_image,
    decode_image,
    image_specs,
    output_size,
    upscale_size,
)
from serve_app.core.images import ImageKind, ImageSpec
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.storage import ImageStore, stored_image_id


class ImageInputFields(BaseModel):
    """The prediction input fields that start a job from a picture (mixed into ``PredictionInput``)."""

    image: str | None = Field(
        default=None,
        description="Start from this picture: a data URL, or the URL of an image this service stored.",
    )
    init_image: str | None = Field(default=None, description="Another name for `image`.")
    mask: str | None = Field(
        default=None, description="Inpainting mask (white = repaint), in the same forms as `image`."
    )
    strength: float | None = Field(
        default=None,
        description="How far from the picture (0..1]; defaults: img2img default_strength, inpainting 1, "
        "upscale upscale_strength.",
    )
    upscale: bool = Field(
        default=False, description="Upscale 2x: the picture resized, then a low-strength img2img pass."
    )


async def read_image_input(
    value: str, field: str, store: ImageStore, settings: AppSettings, base_url: str
) -> Image.Image:
    if value.startswith("data:"):
        return await asyncio.to_thread(decode_base64_image, value, field, settings)
    image_id = stored_image_id(value, store, base_url)
    if image_id is None:
        raise InvalidRequestError(
            f"'{field}' must be a data URL (data:image/png;base64,...) or the URL of an image this "
            "service stored (/images/<id>.png); other URLs are not fetched.",
            param=field,
        )
    png = await asyncio.to_thread(store.get_image, image_id)
    if png is None:
        raise InvalidRequestError(f"'{field}': no stored image {image_id}.", param=field)
    return await asyncio.to_thread(decode_image, png, field, settings)


def _shown(value: str) -> str:
    """How an image input is echoed in the record: a URL as sent, a data URL by its size only."""
    if value.startswith("data:"):
        return f"{value.split(',', 1)[0]},… ({len(value)} characters)"
    return value


async def prediction_image_jobs(
    fields: ImageInputFields,
    params: GenerationParams,
    count: int,
    store: ImageStore,
    settings: AppSettings,
    base_url: str,
) -> tuple[list[ImageSpec] | None, dict[str, Any]]:
    """The jobs of a prediction that starts from a picture (None for text-to-image), and what
    its record's ``input`` should say about the picture (kind, strength, the image's URL)."""
    if fields.image is not None and fields.init_image is not None:
        raise InvalidRequestError("Send 'image' or 'init_image', not both.", param="input.init_image")
    source, field = (fields.image, "input.image")
    if fields.init_image is not None:
        source, field = fields.init_image, "input.init_image"
    if source is None:
        for name in ("mask", "strength"):
            if getattr(fields, name) is not None:
                raise InvalidRequestError(f"'input.{name}' needs 'input.image'.", param=f"input.{name}")
        if fields.upscale:
            raise InvalidRequestError("'input.upscale' needs 'input.image'.", param="input.upscale")
        return None, {}
    if fields.upscale and fields.mask is not None:
        raise InvalidRequestError("An upscale takes no 'input.mask'.", param="input.mask")
    image = await read_image_input(source, field, store, settings, base_url)
    mask = None
    if fields.mask is not None:
        mask = await read_image_input(fields.mask, "input.mask", store, settings, base_url)
    kind: ImageKind
    if fields.upscale:
        kind, default_strength = "upscale", settings.upscale_strength
        size = params.size or upscale_size(image.width, image.height, settings, "input.upscale")
    else:
        kind = "img2img" if mask is None else "inpaint"
        default_strength = settings.default_strength if mask is None else 1.0
        size = output_size(image, params.size, settings)
    strength = fields.strength if fields.strength is not None else default_strength
    jobs = build_image_specs(params.model_copy(update={"size": size}), count, settings)
    jobs = await asyncio.to_thread(
        image_specs,
        jobs,
        kind,
        image,
        strength,
        mask,
        0,
        "input.strength",
        "input.mask",
        settings.catalogue,
        "input.image",
    )
    shown: dict[str, Any] = {"kind": kind, "strength": strength, "size": size, "image": _shown(source)}
    if fields.mask is not None:
        shown["mask"] = _shown(fields.mask)
    return jobs, shown
