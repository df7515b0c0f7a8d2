"""Fit an image under the interaction's upload limit.

Each interaction says how large an attachment may be (``attachment_size_limit``; 10 MiB by default,
less in some servers). A PNG over it would be refused with 413 after the render is done, so the
image is re-encoded first: WebP, then JPEG at falling quality, then at half size, until it fits.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from PIL import Image

from bot_gateway.webhook_client import Attachment


class AttachmentTooLargeError(ValueError):
    """Not even the smallest encoding fits under the limit."""


def _encodings(image: Image.Image) -> Iterator[tuple[str, str, dict]]:
    for quality in (90, 75, 50):
        yield "webp", "image/webp", {"quality": quality}
    for quality in (85, 60, 35):
        yield "jpg", "image/jpeg", {"quality": quality, "optimize": True}


def fit_attachment(png: bytes, limit: int, stem: str) -> tuple[Attachment, str]:
    """The attachment to upload, and a note for the message when it is not the original PNG."""
    if len(png) <= limit:
        return Attachment(f"{stem}.png", png, "image/png"), ""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = 1
    while min(image.size) >= 16:
        for extension, content_type, options in _encodings(image):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG" if extension == "jpg" else "WEBP", **options)
            if buffer.tell() <= limit:
                size = "" if scale == 1 else f", downscaled 1/{scale}"
                note = (
                    f"PNG was {len(png) / 1024:.0f} KiB, over this server's upload limit; "
                    f"sent as {extension.upper()} (quality {options['quality']}{size})."
                )
                return Attachment(f"{stem}.{extension}", buffer.getvalue(), content_type), note
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
        scale *= 2
    raise AttachmentTooLargeError(f"the image cannot be made smaller than {limit} bytes")
