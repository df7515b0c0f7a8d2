"""What a model's family changes on the replica: the pipeline call's arguments, the denoiser's
name, how step latents reach a preview decoder.

UNet families and transformer families differ in small, sharp ways (diffusers 0.42's own
signatures): FLUX.1 takes a negative prompt only with ``true_cfg_scale > 1`` and its
``guidance_scale`` is an input of the distilled transformer; FLUX.2 pipelines have no
``negative_prompt`` parameter at all (passing one is a TypeError); FLUX.1 latents are packed into
2x2-patch sequences. The edge has already refused what a family cannot honour
(serve_app/core/params.py); this module only shapes what is left into the call each pipeline
accepts, so the render code stays one path for every family.
"""

from __future__ import annotations

import inspect
from typing import Any

from serve_app.config.families import FamilySpec
from serve_app.core.images import ImageSpec

DENOISER_NAMES = ("unet", "transformer", "prior")


def denoiser_name(pipe: Any) -> str | None:
    """The attribute holding the model that runs every step: ``unet`` or ``transformer``."""
    for name in DENOISER_NAMES:
        if getattr(pipe, name, None) is not None:
            return name
    return None


def accepts(pipe: Any, argument: str) -> bool:
    """Whether the pipeline's ``__call__`` takes ``argument`` (generic pipelines differ)."""
    try:
        return argument in inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False


def adjust_arguments(pipe: Any, kwargs: dict[str, Any], jobs: list[ImageSpec]) -> dict[str, Any]:
    """One pipeline call's arguments as this pipeline takes them.

    The common call (prompt, negative_prompt, steps, guidance_scale, ...) fits SD, SDXL, SD 3.5 and
    FLUX.1; FLUX.2 has no ``negative_prompt`` (the edge refused a non-empty one, so only the empty
    default is dropped here), FLUX.1 adds ``true_cfg_scale``, and a generic pipeline drops what its
    signature lacks rather than failing with a TypeError.
    """
    adjusted = dict(kwargs)
    for optional in ("negative_prompt", "guidance_scale"):
        if optional in adjusted and not accepts(pipe, optional):
            adjusted.pop(optional)
    if accepts(pipe, "true_cfg_scale"):
        adjusted["true_cfg_scale"] = jobs[0].true_cfg_scale
    # SD 3.5's and FLUX's img2img pipelines size their output from width/height (default: the
    # model's 1024 or its sample size), not from the image as SD's do: pass the job's.
    for side in ("width", "height"):
        if side not in adjusted and accepts(pipe, side):
            adjusted[side] = getattr(jobs[0], side)
    return adjusted


def preview_latents(pipe: Any, spec: FamilySpec, latents: Any, width: int, height: int) -> Any | None:
    """Step latents in the (batch, channels, h, w) layout a tiny autoencoder decodes, or None.

    FLUX.1 packs 2x2 latent patches into a token sequence; its pipeline's own ``_unpack_latents``
    (the inverse of what it packed) restores the grid before the preview decoder sees it.
    """
    if spec.preview == "none":
        return None
    if spec.preview == "packed":
        if latents.ndim != 3:
            return None
        return type(pipe)._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    return latents if latents.ndim == 4 else None
