"""Images callers send us: decoded, validated and resized here, on the ingress, never trusted.

Every check is done before the bytes go anywhere near a model replica, and each failure is a 400
naming the field: not an image, an unsupported format, too many bytes, too many pixels (checked
from the header, before decoding: decompression bombs), truncated data, a mask of another size.
What reaches the replica is a PNG of exactly the size it will render.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import replace
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app.config.catalogue import ModelCatalogue
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import ImageKind, ImageSpec

FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# AUTOMATIC1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill,
# 3 "just resize (latent upscale)" (done as 0 here).
ResizeMode = Literal[0, 1, 2, 3]


def decode_image(data: bytes, field: str, settings: AppSettings) -> Image.Image:
    if not data:
        raise InvalidRequestError(f"'{field}' is empty.", param=field)
    if len(data) > settings.max_input_bytes:
        raise InvalidRequestError(
            f"'{field}' is {len(data)} bytes; the limit is {settings.max_input_bytes}.", param=field
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError):
        raise InvalidRequestError(f"'{field}' is not a PNG, JPEG or WebP image.", param=field) from None
    if image.format not in FORMATS:
        raise InvalidRequestError(f"'{field}' is {image.format}; send PNG, JPEG or WebP.", param=field)
    width, height = image.size
    # The header's size, before a single pixel is decoded.
    if width * height > settings.max_input_pixels:
        raise InvalidRequestError(
            f"'{field}' is {width}x{height}; the limit is {settings.max_input_pixels} pixels.", param=field
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise InvalidRequestError(f"'{field}' is truncated or corrupt.", param=field) from None
    return ImageOps.exif_transpose(image) or image


def decode_base64_image(value: str, field: str, settings: AppSettings) -> Image.Image:
    """A data URL (``data:image/png;base64,...``) or bare base64, as A1111 clients send them."""
    payload = value
    if value.startswith("data:"):
        _, comma, payload = value.partition(",")
        if not comma:  # what a browser's FileReader makes of an empty file: "data:"
            raise InvalidRequestError(f"'{field}' is a data URL without data.", param=field)
    try:
        data = base64.b64decode(payload.strip(), validate=False)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"'{field}' is not base64.", param=field) from None
    return decode_image(data, field, settings)


def has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False


def mask_from_alpha(image: Image.Image) -> Image.Image:
    """OpenAI's convention: fully transparent pixels are the ones to edit (white in our masks)."""
    alpha = image.convert("RGBA").getchannel("A")
    return alpha.point(lambda a: 255 if a == 0 else 0)


def output_size(image: Image.Image, size: str | None, settings: AppSettings, scale: float = 1.0) -> str:
    """The requested size, else the input's (times ``scale``), in multiples of 8 within bounds."""
    if size is not None:
        return size

    def side(value: float) -> int:
        return max(settings.min_size, min(settings.max_size, int(value) // 8 * 8))

    return f"{side(image.width * scale)}x{side(image.height * scale)}"


def upscale_size(width: int, height: int, settings: AppSettings, field: str) -> str:
    """Twice ``width`` x ``height`` (multiples of 8). Past ``max_size`` it is refused, not clamped:
    an "upscale" that quietly comes back the same size would look like a broken one."""
    doubled = [max(settings.min_size, side * 2 // 8 * 8) for side in (width, height)]
    if max(doubled) > settings.max_size:
        raise InvalidRequestError(
            f"'{field}': twice {width}x{height} is {doubled[0]}x{doubled[1]}, over the largest size "
            f"this service renders ({settings.max_size}).",
            param=field,
        )
    return f"{doubled[0]}x{doubled[1]}"


def fit(image: Image.Image, width: int, height: int, mode: ResizeMode = 0) -> Image.Image:
    if mode == 1:  # crop and resize: fill the frame, cut what overflows
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == 2:  # resize and fill: fit inside, pad with the edge colours stretched
        inner = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        canvas = inner.resize((width, height), Image.Resampling.LANCZOS)
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    return image.resize((width, height), Image.Resampling.LANCZOS)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_strength(strength: float, steps: int, field: str = "strength") -> float:
    if not 0.0 < strength <= 1.0:
        raise InvalidRequestError(f"'{field}' must be greater than 0 and at most 1.", param=field)
    # img2img runs int(steps * strength) denoising steps; zero would be no render at all.
    if int(steps * strength) < 1:
        raise InvalidRequestError(
            f"'{field}' x steps must be at least 1 (got {strength} x {steps}): raise either.", param=field
        )
    return strength


def check_task(catalogue: ModelCatalogue, model: str, kind: str, field: str = "image") -> None:
    supported = catalogue.entry(model).supported_tasks
    if kind not in supported:
        raise InvalidRequestError(
            f"Model {model!r} cannot run {kind}; it supports: {', '.join(supported)}.",
            param=field,
            code="task_not_supported",
        )


def image_specs(
    jobs: list[ImageSpec],
    kind: ImageKind,
    image: Image.Image,
    strength: float,
    mask: Image.Image | None = None,
    resize_mode: ResizeMode = 0,
    strength_field: str = "strength",
    mask_field: str = "mask",
    catalogue: ModelCatalogue | None = None,
    image_field: str = "image",
) -> list[ImageSpec]:
    """Turn text-to-image jobs (size, steps, seeds resolved) into jobs that start from ``image``.

    With the ``catalogue``, a model whose family cannot run ``kind`` (FLUX.2-klein has no
    image-to-image, the generic family none unless its entry says so) is a 400 naming the image.
    """
    first = jobs[0]
    if catalogue is not None and first.model in catalogue.entries:
        check_task(catalogue, first.model, kind, image_field)
    check_strength(strength, first.steps, strength_field)
    init = png_bytes(fit(image.convert("RGB"), first.width, first.height, resize_mode))
    mask_png = None
    if mask is not None:
        if mask.size != image.size:
            raise InvalidRequestError(
                f"'{mask_field}' is {mask.width}x{mask.height} but the image is "
                f"{image.width}x{image.height}.",
                param=mask_field,
            )
        mask_png = png_bytes(fit(mask.convert("L"), first.width, first.height, resize_mode))
    return [replace(job, kind=kind, init_image=init, mask_image=mask_png, strength=strength) for job in jobs]
