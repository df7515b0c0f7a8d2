"""``GET /v1/models`` from what the ingress already knows, never from a model replica.

Asking a replica would wake a model scaled to zero (an OpenAI SDK ``models.list()`` or an uptime
probe would keep a GPU billed forever) and, with the model's queue full, fail with back-pressure.
So the answer is the configured model plus the last description a replica attached to an image it
rendered (``ImageResult.replica``), with its age: at zero replicas it says what was last seen.

What runs wins over what is configured: ``safety_checker`` is the replica's word when one has
reported (a checkpoint without a checker, like the tiny offline model, has none whatever the
setting says), ``False`` when the setting turns it off, and ``None`` (not known yet) before any
replica of that model rendered an image. The setting itself is under ``configured``.
"""

from __future__ import annotations

import time
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.engine.client import ReplicaReports


def models_listing(
    settings: AppSettings, reports: ReplicaReports, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    catalogue = settings.catalogue
    data = []
    for name, entry in catalogue.entries.items():
        model_settings = settings.for_model(name)
        replica = None
        if name in reports.by_model:
            info, received_at = reports.by_model[name]
            replica = {
                **info,
                "reported_at": int(received_at),
                "age_s": round(max(0.0, now - received_at), 1),
            }
        width, height = model_settings.default_dimensions
        if not settings.safety_checker:
            safety: bool | None = False
        elif replica is not None and "safety_checker" in replica:
            safety = bool(replica["safety_checker"])
        else:
            safety = None  # never claimed before a replica says so
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "raydiffusion",
                "default": entry is catalogue.default,
                "family": entry.family,
                # Tasks, samplers, what negative prompt and guidance mean (config/families.py).
                "capabilities": entry.capabilities(
                    settings.safety_checker and bool(settings.safety_checker_model)
                ),
                "description": entry.description,
                "source": entry.model,
                "safety_checker": safety,
                # What a request that leaves them out gets from this model.
                "defaults": {
                    "size": f"{width}x{height}",
                    "steps": model_settings.default_steps,
                    "guidance_scale": model_settings.default_guidance_scale,
                    "scheduler": model_settings.default_scheduler,
                },
                # Usable with this model (every LoRA of its architecture), with the weight a request
                # that names none gets.
                "loras": [
                    {
                        "name": lora,
                        "weight": catalogue.loras[lora].spec.weight,
                        "family": catalogue.loras[lora].family,
                    }
                    for lora in catalogue.loras_for(name)
                ],
                "configured": {
                    "device": settings.device,
                    "dtype": settings.dtype,
                    "attention": settings.attention,
                    "compile": settings.compile,
                    "variant": entry.variant,
                    "safety_checker": settings.safety_checker,
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
                # Last seen on an image this model rendered; None until this ingress has received one.
                "replica": replica,
            }
        )
    return {
        "object": "list",
        "data": data,
        "limits": {
            "max_models_per_replica": settings.max_models_per_replica,
            "max_loras_per_request": settings.max_loras_per_request,
            "max_lora_weight": settings.max_lora_weight,
        },
    }
