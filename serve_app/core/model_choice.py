"""What a request asks of the catalogue: a model by name and a set of LoRAs with weights.

Resolved at the edge, before anything is queued: an unknown model or LoRA, a LoRA of another
architecture, too many LoRAs or a weight out of range is an ``InvalidRequestError`` naming the
field and listing what exists. The answer, a ``ModelChoice``, is what every image spec carries;
its model name is also the Serve multiplexed model id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.config.catalogue import LoraSet, ModelCatalogue
from serve_app.config.families import FAMILY_NAMES
from serve_app.core.errors import InvalidRequestError

# A1111: <lora:name>, <lora:name:0.8>, and a third field (text-encoder weight) this ignores.
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::(-?\d+(?:\.\d+)?))?(?::[^>]*)?>")


class LoraRequest(BaseModel):
    """A LoRA a request asks for; the weight defaults to the catalogue's.

    Also accepts ``"name"`` or ``"name:0.8"``, so a query string can say ``?loras=ink:0.8``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    weight: float | None = Field(default=None, ge=-100.0, le=100.0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if isinstance(value, str):
            name, _, weight = value.partition(":")
            return {"name": name, "weight": weight or None}
        return value


@dataclass(frozen=True)
class ModelChoice:
    model: str
    loras: LoraSet = ()


def resolve_model(
    catalogue: ModelCatalogue,
    model: str | None,
    loras: list[LoraRequest] | None = None,
    model_param: str = "model",
    loras_param: str = "loras",
) -> ModelChoice:
    """The request's model and LoRA set, or an InvalidRequestError naming the field and listing what
    exists (a 400 at the edge, before anything is queued)."""
    if model is None or model == "":
        name = catalogue.default.name
    elif model in catalogue.entries:
        name = model
    else:
        raise InvalidRequestError(
            f"Unknown model {model!r}; this service has: {', '.join(catalogue.entries)}.",
            param=model_param,
            code="model_not_found",
        )
    requested = loras or []
    if len(requested) > catalogue.max_loras:
        raise InvalidRequestError(
            f"At most {catalogue.max_loras} LoRAs per request, got {len(requested)}.", param=loras_param
        )
    usable = catalogue.loras_for(name)
    chosen: dict[str, float] = {}
    for index, lora in enumerate(requested):
        field = f"{loras_param}[{index}]"
        known = catalogue.loras.get(lora.name)
        if known is None:
            listing = ", ".join(usable) or "none"
            raise InvalidRequestError(
                f"Unknown LoRA {lora.name!r}; LoRAs for model {name!r}: {listing}.",
                param=f"{field}.name",
                code="lora_not_found",
            )
        if lora.name not in usable:
            family = FAMILY_NAMES[known.family]
            raise InvalidRequestError(
                f"LoRA {lora.name!r} is for {family} models; {name!r} is "
                f"{FAMILY_NAMES[catalogue.entries[name].family]}. LoRAs for {name!r}: "
                f"{', '.join(usable) or 'none'}.",
                param=f"{field}.name",
                code="lora_incompatible",
            )
        if lora.name in chosen:
            raise InvalidRequestError(f"LoRA {lora.name!r} is listed twice.", param=f"{field}.name")
        weight = known.spec.weight if lora.weight is None else lora.weight
        if not -catalogue.max_lora_weight <= weight <= catalogue.max_lora_weight:
            raise InvalidRequestError(
                f"LoRA weight must be between {-catalogue.max_lora_weight:g} and "
                f"{catalogue.max_lora_weight:g}, got {weight:g}.",
                param=f"{field}.weight",
            )
        chosen[lora.name] = float(weight)
    return ModelChoice(name, canonical_loras(chosen))


def canonical_loras(weights: dict[str, float]) -> LoraSet:
    return tuple(sorted((name, weight) for name, weight in weights.items() if weight != 0.0))


def parse_lora_tags(prompt: str) -> tuple[str, list[LoraRequest]]:
    """A1111's ``<lora:name:weight>`` prompt syntax: the prompt without the tags, and the LoRAs."""
    found: list[LoraRequest] = []

    def take(match: re.Match[str]) -> str:
        weight = match.group(2)
        found.append(LoraRequest(name=match.group(1), weight=None if weight is None else float(weight)))
        return ""

    cleaned = LORA_TAG.sub(take, prompt)
    cleaned = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", cleaned))
    return cleaned.strip(" ,"), found
