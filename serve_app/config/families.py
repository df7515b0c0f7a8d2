"""Model families: what a checkpoint's architecture decides (display name, LoRA compatibility, and
the request defaults of the distilled Turbo models).

A leaf of the configuration: the catalogue, the speed settings and the app settings all read it,
and it reads none of them.
"""

from __future__ import annotations

from typing import Literal

Family = Literal["sd15", "sd2", "sdxl", "sd-turbo", "sdxl-turbo"]

FAMILY_NAMES: dict[str, str] = {
    "sd15": "SD 1.5",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sd-turbo": "SD-Turbo",
    "sdxl-turbo": "SDXL-Turbo",
}

# The UNet a family's LoRAs are trained against: SD-Turbo is a distilled SD 2.1, SDXL-Turbo a
# distilled SDXL, so their LoRAs are interchangeable with the base's.
LORA_ARCHITECTURE: dict[str, str] = {
    "sd15": "sd15",
    "sd2": "sd2",
    "sd-turbo": "sd2",
    "sdxl": "sdxl",
    "sdxl-turbo": "sdxl",
}

# Diffusers' documented fast settings for the distilled Turbo models: 1-4 steps, no guidance
# (they were trained without classifier-free guidance; 7.5 burns the image).
TURBO_PRESETS: dict[str, dict[str, float | int | str]] = {
    "sd-turbo": {"default_steps": 1, "default_guidance_scale": 0.0, "default_size": "512x512"},
    "sdxl-turbo": {"default_steps": 1, "default_guidance_scale": 0.0, "default_size": "512x512"},
}
TURBO_FAMILIES: dict[str, Family] = {"sd-turbo": "sd-turbo", "sdxl-turbo": "sdxl-turbo"}


def preset_for(model: str, requested: str) -> str:
    """The preset a model gets: the named one, or on auto the one its id names."""
    if requested != "auto":
        return requested
    name = model.lower().rstrip("/").rsplit("/", 1)[-1]
    if "sdxl-turbo" in name:
        return "sdxl-turbo"
    if "sd-turbo" in name:
        return "sd-turbo"
    return "none"
