"""``GET /v1/models`` from what the ingress already knows, never from a model replica.

Asking a replica would wake a model scaled to zero (an OpenAI SDK ``models.list()`` or an uptime
probe would keep a GPU billed forever) and, with the model's queue full, fail with back-pressure.
So the answer is the configured model plus the last description a replica attached to an image it
rendered (``ImageResult.replica``), with its age: at zero replicas it says what was last seen.
"""

from __future__ import annotations

import time
from typing import Any

from serve_app.generation import ImageResult
from serve_app.settings import AppSettings


class ReplicaReports:
    """The latest replica description this ingress received, and when."""

    def __init__(self) -> None:
        self.info: dict[str, Any] | None = None
        self.received_at: float | None = None

    def observe(self, result: ImageResult) -> None:
        if result.replica is not None:
            self.info = result.replica
            self.received_at = time.time()


def models_listing(
    settings: AppSettings, reports: ReplicaReports, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    replica = None
    if reports.info is not None and reports.received_at is not None:
        replica = {
            **reports.info,
            "reported_at": int(reports.received_at),
            "age_s": round(max(0.0, now - reports.received_at), 1),
        }
    return {
        "object": "list",
        "data": [
            {
                "id": settings.served_model_name,
                "object": "model",
                "created": 0,
                "owned_by": "raydiffusion",
                "source": settings.model,
                "safety_checker": settings.safety_checker,
                "configured": {
                    "device": settings.device,
                    "dtype": settings.dtype,
                    "attention": settings.attention,
                    "compile": settings.compile,
                    "variant": settings.variant,
                    # GPU speed recipes as configured; what a replica applied is under "replica".
                    "speed": settings.speed.model_dump(),
                },
                # Starting from a picture (predictions' input.image): the strengths the service's
                # own variations and upscales use, so a client (the browser page) sends the same.
                "image_inputs": {
                    "default_strength": settings.default_strength,
                    "variation_strength": settings.variation_strength,
                    "upscale_strength": settings.upscale_strength,
                    "max_input_bytes": settings.max_input_bytes,
                    "max_input_pixels": settings.max_input_pixels,
                },
                # Last seen on a rendered image; None until this ingress has received one.
                "replica": replica,
            }
        ],
    }
