"""OpenAI's Images API bodies: ``POST /v1/images/generations`` and the ``data`` entries every
OpenAI-shaped answer (generations, edits, variations) returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.core.content_policy import flagged_image_error, raise_if_all_flagged
from serve_app.core.images import ImageResult
from serve_app.core.params import GenerationParams


class ImageGenerationRequest(GenerationParams):
    """OpenAI's ``POST /v1/images/generations`` body plus our diffusion extensions."""

    n: int = Field(default=1, ge=1, le=64)
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(default=None, max_length=256)
    quality: str | None = Field(default=None, max_length=32, description="Accepted and ignored.")
    style: str | None = Field(default=None, max_length=32, description="Accepted and ignored.")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str
    seed: int
    # Set (and no image) when the safety checker flagged this image: see serve_app.core.content_policy.
    error: dict[str, Any] | None = None


class ImageGenerationResponse(BaseModel):
    created: int
    data: list[ImageData]


def image_entries(
    results: Sequence[ImageResult], prompt: str, image_of: Callable[[int, ImageResult], dict[str, str]]
) -> list[ImageData]:
    """One ``data`` entry per result, in order; ``image_of(index, result)`` gives the image fields
    (``b64_json`` or ``url``) and is never called for a flagged image."""
    raise_if_all_flagged(results)
    return [
        ImageData(revised_prompt=prompt, seed=result.seed, error=flagged_image_error())
        if result.nsfw_content_detected
        else ImageData(revised_prompt=prompt, seed=result.seed, **image_of(index, result))
        for index, result in enumerate(results)
    ]
