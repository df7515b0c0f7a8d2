"""The ``/settings`` slash command: a user's own defaults for ``/imagine``.

``/settings model:... size:... steps:... negative_prompt:...`` stores the values given (the others
stay as they were), ``reset:True`` clears them all, and no options at all shows them. The values
are checked exactly as ``/imagine`` would check them (``build_image_specs``), so a stored default can
never make a later ``/imagine`` fail. Every answer is ephemeral: a user's defaults are theirs.
"""

from __future__ import annotations

from typing import Any

from bot_gateway.commands import DEFAULT_SIZE_CHOICES, MAX_NEGATIVE_PROMPT_LENGTH
from bot_gateway.model_choices import model_option
from bot_gateway.protocol import CommandOption, OptionType, ephemeral
from bot_gateway.user_settings import UserDefaults
from serve_app.config.catalogue import ModelCatalogue
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.params import GenerationParams, build_image_specs

SETTINGS = "settings"
_TYPES: dict[str, type] = {"model": str, "size": str, "steps": int, "negative_prompt": str, "reset": bool}


def settings_command(
    catalogue: ModelCatalogue,
    size_choices: tuple[str, ...] = DEFAULT_SIZE_CHOICES,
    max_steps: int = 100,
) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    if len(catalogue.entries) > 1:
        options.append(model_option(catalogue, "Your default model"))
    options += [
        {
            "type": OptionType.STRING,
            "name": "size",
            "description": "Your default image size",
            "choices": [{"name": size, "value": size} for size in size_choices],
        },
        {
            "type": OptionType.INTEGER,
            "name": "steps",
            "description": "Your default number of denoising steps",
            "min_value": 1,
            "max_value": max_steps,
        },
        {
            "type": OptionType.STRING,
            "name": "negative_prompt",
            "description": "Your default negative prompt",
            "max_length": MAX_NEGATIVE_PROMPT_LENGTH,
        },
        {
            "type": OptionType.BOOLEAN,
            "name": "reset",
            "description": "Forget all your defaults (before applying any others given here)",
        },
    ]
    return {
        "name": SETTINGS,
        "type": 1,
        "description": "Your /imagine defaults: model, size, steps, negative prompt (no options: show them)",
        "options": options,
    }


class SettingsOptionError(ValueError):
    """An option of the wrong type or an unknown one."""


def changes_from_options(options: list[CommandOption]) -> tuple[dict[str, Any], bool]:
    """The values to store, and whether to forget the stored ones first."""
    values: dict[str, Any] = {}
    reset = False
    for option in options:
        kind = _TYPES.get(option.name)
        if kind is None:
            raise SettingsOptionError(f"unknown option '{option.name}'")
        if not isinstance(option.value, kind) or (kind is int and isinstance(option.value, bool)):
            raise SettingsOptionError(f"option '{option.name}' must be a {kind.__name__}")
        if option.name == "reset":
            reset = bool(option.value)
        else:
            values[option.name] = option.value
    return values, reset


def updated_defaults(
    current: UserDefaults, values: dict[str, Any], reset: bool, settings: AppSettings
) -> UserDefaults:
    """``current`` with ``values`` applied, checked as ``/imagine`` checks them (InvalidRequestError)."""
    merged = UserDefaults() if reset else current
    merged = UserDefaults.model_validate({**merged.model_dump(), **values})
    # An unknown model: the HTTP API's words, listing the models there are.
    build_image_specs(
        GenerationParams(
            prompt="settings check",
            model=merged.model,
            size=merged.size,
            steps=merged.steps,
            negative_prompt=merged.negative_prompt or "",
        ),
        1,
        settings,
    )
    return merged


def describe(defaults: UserDefaults, settings: AppSettings, saved: bool) -> str:
    """What ``/imagine`` will use for this user, and where each value comes from."""
    model_settings = settings.for_model(defaults.model)
    width, height = model_settings.default_dimensions

    def line(label: str, mine: object, service: object) -> str:
        return f"• {label}: **{mine}**" if mine else f"• {label}: {service} (service default)"

    lines = [
        "Saved. Your /imagine defaults:" if saved else "Your /imagine defaults:",
        line("model", defaults.model, settings.catalogue.default.name),
        line("size", defaults.size, f"{width}x{height}"),
        line("steps", defaults.steps, model_settings.default_steps),
        line("negative prompt", defaults.negative_prompt, "none"),
        "Options you give /imagine win over these. `/settings reset:True` forgets them.",
    ]
    return "\n".join(lines)


def invalid(error: InvalidRequestError | SettingsOptionError) -> dict[str, Any]:
    message = error.message if isinstance(error, InvalidRequestError) else str(error)
    return ephemeral(f"Not saved: {message}")
