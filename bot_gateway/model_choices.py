"""The ``model`` and ``lora`` options of the slash commands, built from the model catalogue.

Discord shows a STRING option's ``choices`` as a pick list, but allows at most 25 of them. Up to
25 entries the catalogue's names are the choices; past that the option is ``autocomplete`` and
Discord asks, as the user types, for up to 25 matches (``autocomplete_choices``). Either way the
server checks the value against the catalogue again: the registered list and the running config
can drift apart.
"""

from __future__ import annotations

from typing import Any

from bot_gateway.protocol import CommandOption, OptionType
from serve_app.config.catalogue import ModelCatalogue

MAX_CHOICES = 25  # Discord's limit for choices and for autocomplete answers
MAX_CHOICE_LENGTH = 100  # a choice's name and value


def _listed(option: dict[str, Any], names: list[str], max_length: int) -> dict[str, Any]:
    if len(names) <= MAX_CHOICES:
        option["choices"] = [{"name": name[:MAX_CHOICE_LENGTH], "value": name} for name in names]
    else:
        option.update(autocomplete=True, max_length=max_length)
    return option


def model_option(catalogue: ModelCatalogue, description: str) -> dict[str, Any]:
    return _listed(
        {"type": OptionType.STRING, "name": "model", "description": description},
        catalogue.names,
        256,
    )


def lora_option(catalogue: ModelCatalogue) -> dict[str, Any]:
    return _listed(
        {
            "type": OptionType.STRING,
            "name": "lora",
            "description": "A LoRA to apply (one made for the model's family)",
        },
        list(catalogue.loras),
        64,
    )


def lora_weight_option(catalogue: ModelCatalogue) -> dict[str, Any]:
    return {
        "type": OptionType.NUMBER,
        "name": "lora_weight",
        "description": "With a LoRA: how strongly to apply it (its configured weight when omitted)",
        "min_value": -catalogue.max_lora_weight,
        "max_value": catalogue.max_lora_weight,
    }


def autocomplete_choices(options: list[CommandOption], catalogue: ModelCatalogue) -> list[dict[str, str]]:
    """Matches for the option the user is typing in (Discord marks it ``focused``), best first."""
    focused = next((option for option in options if option.focused), None)
    if focused is None:
        return []
    names = {"model": catalogue.names, "lora": list(catalogue.loras)}.get(focused.name, [])
    typed = str(focused.value or "").lower()
    matches = sorted(
        (name for name in names if typed in name.lower()),
        key=lambda name: (not name.lower().startswith(typed), name.lower()),
    )
    return [{"name": name[:MAX_CHOICE_LENGTH], "value": name} for name in matches[:MAX_CHOICES]]
