"""What callers get for images the model's safety checker flagged.

A diffusers safety checker replaces a flagged image with a black one and says so in
``nsfw_content_detected``; passing that on as a normal result (a black PNG with HTTP 200) hides the
refusal. OpenAI answers such requests with a 400 whose code is ``content_policy_violation``; we do
the same when every image of a request is flagged. When only some are (``n`` > 1), the others are
worth having, so the answer is 200 and each flagged image's place in ``data`` holds no image and
an ``error`` object with that code instead: ``data`` keeps one entry per requested image, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serve_app.core.errors import ContentPolicyError, error_body
from serve_app.core.images import ImageResult

MESSAGE = (
    "The model's safety checker flagged the generated image, so it is not returned. "
    "Try a different prompt or seed."
)


def flagged_image_error() -> dict[str, Any]:
    """The per-image error object that stands in for a flagged image (OpenAI's error shape)."""
    return error_body(MESSAGE, ContentPolicyError.error_type, None, ContentPolicyError.code)["error"]


def raise_if_all_flagged(results: Sequence[ImageResult]) -> None:
    if results and all(result.nsfw_content_detected for result in results):
        which = "every generated image" if len(results) > 1 else "the generated image"
        raise ContentPolicyError(
            f"The model's safety checker flagged {which}; nothing is returned. "
            "Try a different prompt or seed."
        )
