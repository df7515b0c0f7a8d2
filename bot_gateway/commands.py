"""The ``/imagine`` slash command: its definition for registration, and its options parsed back.

The definition bounds what Discord's client lets people type; the server still validates every
value through the same ``build_image_specs`` as the HTTP API, since the definition registered and the
server's settings can drift apart. An ``image`` attachment makes it image-to-image (at
``strength``); the picture itself is fetched and checked later (``source_images``).
"""

from __future__ import annotations

from typing import Any

from bot_gateway.aspect_ratios import ASPECT_RATIOS
from bot_gateway.messages import MAX_GRID
from bot_gateway.model_choices import lora_option, lora_weight_option, model_option
from bot_gateway.protocol import CdnAttachment, CommandOption, OptionType, Resolved
from serve_app.config.catalogue import ModelCatalogue
from serve_app.config.settings import AppSettings
from serve_app.core.images import MAX_SEED
from serve_app.core.model_choice import LoraRequest
from serve_app.core.params import GenerationParams

IMAGINE = "imagine"
MAX_PROMPT_LENGTH = 1000  # the prompt is echoed in the embed description (4096 characters max)
MAX_NEGATIVE_PROMPT_LENGTH = 500
DEFAULT_SIZE_CHOICES = ("512x512", "768x768", "1024x1024", "512x768", "768x512")


def imagine_command(
    size_choices: tuple[str, ...] = DEFAULT_SIZE_CHOICES,
    max_steps: int = 100,
    catalogue: ModelCatalogue | None = None,
    max_count: int = 4,
) -> dict[str, Any]:
    """``catalogue``: adds ``model`` (more than one entry) and ``lora`` / ``lora_weight`` options;
    ``max_count``: the most images one grid may hold (the service checks its own bound anyway)."""
    command: dict[str, Any] = {
        "name": IMAGINE,
        "type": 1,
        "description": "Generate an image from a text prompt, or from a picture you attach",
        "options": [
            {
                "type": OptionType.STRING,
                "name": "prompt",
                "description": "What to draw",
                "required": True,
                "min_length": 1,
                "max_length": MAX_PROMPT_LENGTH,
            },
            {
                "type": OptionType.STRING,
                "name": "negative_prompt",
                "description": "What to keep out of the image",
                "max_length": MAX_NEGATIVE_PROMPT_LENGTH,
            },
            {
                "type": OptionType.INTEGER,
                "name": "seed",
                "description": "Seed for a reproducible image (random when omitted)",
                "min_value": 0,
                "max_value": MAX_SEED,
            },
            {
                "type": OptionType.INTEGER,
                "name": "steps",
                "description": "Denoising steps: more is slower and finer",
                "min_value": 1,
                "max_value": max_steps,
            },
            {
                "type": OptionType.INTEGER,
                "name": "count",
                "description": "How many images (one grid; 1 for a single image)",
                "min_value": 1,
                "max_value": max_count,
            },
            {
                "type": OptionType.STRING,
                "name": "ar",
                "description": "Aspect ratio, at the model's native size (instead of size)",
                "choices": [{"name": ratio, "value": ratio} for ratio in ASPECT_RATIOS],
            },
            {
                "type": OptionType.STRING,
                "name": "size",
                "description": "Image size (or pick an aspect ratio with ar)",
                "choices": [{"name": size, "value": size} for size in size_choices],
            },
            {
                "type": OptionType.NUMBER,
                "name": "guidance",
                "description": "How closely to follow the prompt (CFG scale)",
                "min_value": 0,
                "max_value": 30,
            },
            {
                "type": OptionType.ATTACHMENT,
                "name": "image",
                "description": "Start from this picture (PNG, JPEG or WebP) instead of noise",
            },
            {
                "type": OptionType.NUMBER,
                "name": "strength",
                "description": "With an image: how far to stray from it (0: keep it, 1: ignore it)",
                "min_value": 0.01,
                "max_value": 1,
            },
        ],
    }
    if catalogue is not None:
        if len(catalogue.entries) > 1:
            command["options"].append(model_option(catalogue, "Which model draws it"))
        if catalogue.loras:
            command["options"] += [lora_option(catalogue), lora_weight_option(catalogue)]
    return command


class CommandOptionError(ValueError):
    """An option of the wrong type or an unknown one: the payload is not what we registered."""


_FIELDS = {
    "prompt": ("prompt", str),
    "negative_prompt": ("negative_prompt", str),
    "seed": ("seed", int),
    "steps": ("steps", int),
    "size": ("size", str),
    "guidance": ("guidance_scale", float),
    "model": ("model", str),
}


_IMAGE_OPTIONS = frozenset({"image", "strength"})
_GRID_OPTIONS = frozenset({"count", "ar"})
_LORA_OPTIONS = frozenset({"lora", "lora_weight"})


def params_from_options(options: list[CommandOption]) -> GenerationParams:
    """Turn ``/imagine`` options into GenerationParams; raises CommandOptionError or ValueError."""
    values: dict[str, Any] = {}
    lora: dict[str, Any] = {}
    for option in options:
        if option.name in _IMAGE_OPTIONS or option.name in _GRID_OPTIONS:
            continue  # see image_from_options and grid_from_options
        if option.name in _LORA_OPTIONS:
            lora[option.name] = option.value
            continue
        if option.name not in _FIELDS:
            raise CommandOptionError(f"unknown option '{option.name}'")
        field, kind = _FIELDS[option.name]
        value = option.value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CommandOptionError(f"option '{option.name}' must be a {kind.__name__}")
        values[field] = value
    if "prompt" not in values:
        raise CommandOptionError("option 'prompt' is required")
    if lora:
        values["loras"] = [_lora_from_options(lora)]
    return GenerationParams(**values)


def _lora_from_options(lora: dict[str, Any]) -> LoraRequest:
    name, weight = lora.get("lora"), lora.get("lora_weight")
    if not isinstance(name, str):
        raise CommandOptionError("option 'lora_weight' needs a 'lora'" if name is None else "bad 'lora'")
    if weight is not None and (not isinstance(weight, int | float) or isinstance(weight, bool)):
        raise CommandOptionError("option 'lora_weight' must be a number")
    return LoraRequest(name=name, weight=weight)


def image_from_options(
    options: list[CommandOption], resolved: Resolved
) -> tuple[CdnAttachment | None, float | None]:
    """The attached picture (an ATTACHMENT option's value is an id into ``resolved``) and strength."""
    attachment, strength = None, None
    for option in options:
        if option.name == "image":
            attachment = resolved.attachments.get(str(option.value))
            if attachment is None or not attachment.url:
                raise CommandOptionError("option 'image' names no attachment of this interaction")
        elif option.name == "strength":
            if not isinstance(option.value, int | float) or isinstance(option.value, bool):
                raise CommandOptionError("option 'strength' must be a number")
            strength = float(option.value)
    if strength is not None and attachment is None:
        raise CommandOptionError("option 'strength' needs an 'image' to start from")
    return attachment, strength


def grid_from_options(options: list[CommandOption]) -> tuple[int | None, str | None]:
    """``count`` (how many images) and ``ar`` (an aspect ratio), None when left out.

    Ranges are checked by the caller against the service's settings, which the registered
    definition may not match.
    """
    count, ratio = None, None
    for option in options:
        if option.name == "count":
            if not isinstance(option.value, int) or isinstance(option.value, bool):
                raise CommandOptionError("option 'count' must be an integer")
            count = option.value
        elif option.name == "ar":
            if not isinstance(option.value, str):
                raise CommandOptionError("option 'ar' must be a string such as '16:9'")
            ratio = option.value
    if ratio is not None and any(option.name == "size" for option in options):
        raise CommandOptionError("give option 'ar' or option 'size', not both")
    return count, ratio


def max_grid(settings: AppSettings) -> int:
    """The most images one /imagine may ask for: ``max_images``, and the U/V buttons one message holds."""
    return min(settings.max_images, MAX_GRID)


def default_count(settings: AppSettings) -> int:
    return min(settings.discord_default_count, max_grid(settings))
