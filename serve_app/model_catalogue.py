"""The models one cluster serves: named checkpoints, their request defaults and the LoRAs they accept.

The catalogue is the ``models:`` list of a config file's ``args:``. Every replica of the model
deployment can load every entry (Ray Serve model multiplexing picks, per request, a replica that
already holds it: serve_app/diffusion_model.py), so the catalogue is validated once, here, and a
request is resolved against it at the HTTP edge: an unknown model or LoRA is a 400 that lists what
exists, never a replica that fails to load it minutes later.

A LoRA is trained against one architecture; it is listed under the entry it was made for and can be
used with every model of that architecture (a Dreamshaper LoRA for SD 1.5 works on any SD 1.5
checkpoint), never across architectures (SD 1.5 weights do not fit SDXL's UNet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.errors import InvalidRequestError

if TYPE_CHECKING:
    from serve_app.settings import AppSettings

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

# Model names may be hub ids, paths (a one-model config names its model by its source) or display
# names ("SD 1.5"): no control characters, no surrounding blanks. LoRA names appear inside
# `<lora:NAME:WEIGHT>`, so no ':' or '>'.
MODEL_NAME_PATTERN = r"^[^\s\x00-\x1f](?:[^\x00-\x1f]{0,254}[^\s\x00-\x1f])?$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A1111: <lora:name>, <lora:name:0.8>, and a third field (text-encoder weight) this ignores.
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::(-?\d+(?:\.\d+)?))?(?::[^>]*)?>")


class LoraSpec(BaseModel):
    """A LoRA adapter: a diffusers/kohya ``.safetensors`` file, a folder holding one, or an s3:// object."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="What requests call it (`<lora:NAME:0.8>`).")
    source: str = Field(min_length=1, description="A file, a folder, a hub repo id, or an s3:// object.")
    weight_name: str | None = Field(
        default=None, description="The file inside a folder or hub repo holding several."
    )
    weight: float = Field(default=1.0, ge=-4.0, le=4.0, description="Weight when a request names none.")


class ModelEntry(BaseModel):
    """One checkpoint. Unset request defaults fall back to the app's (or a Turbo family's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="The id requests and /v1/models use.")
    model: str = Field(min_length=1, description="Hugging Face id, local diffusers folder, or s3:// prefix.")
    family: Family = "sd15"
    variant: str | None = None
    revision: str | None = None
    default: bool = False
    default_size: str | None = None
    default_steps: int | None = Field(default=None, ge=1)
    default_guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    default_scheduler: str | None = None
    loras: list[LoraSpec] = Field(default_factory=list)
    description: str = ""

    @field_validator("default_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        from serve_app.schedulers import canonical_scheduler_name

        return None if value is None else canonical_scheduler_name(value)


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


# (name, weight) pairs, sorted by name, zero weights dropped: the canonical form jobs carry, so
# equal LoRA sets batch together whatever order a caller listed them in.
LoraSet = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ModelChoice:
    model: str
    loras: LoraSet = ()


@dataclass(frozen=True)
class CatalogueLora:
    spec: LoraSpec
    family: str  # of the entry it is listed under


class ModelCatalogue:
    """Lookups over the validated ``models:`` list; built by ``AppSettings.catalogue``."""

    def __init__(self, entries: list[ModelEntry], max_loras: int, max_lora_weight: float) -> None:
        if not entries:
            raise ValueError("the model catalogue is empty")
        names = [entry.name for entry in entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        defaults = [entry.name for entry in entries if entry.default]
        if len(defaults) > 1:
            raise ValueError(f"only one model may be the default; marked: {', '.join(defaults)}")
        self.entries = {entry.name: entry for entry in entries}
        self.default = self.entries[defaults[0]] if defaults else entries[0]
        self.loras: dict[str, CatalogueLora] = {}
        for entry in entries:
            for spec in entry.loras:
                if spec.name in self.loras:
                    raise ValueError(f"LoRA names must be unique across models; repeated: {spec.name}")
                self.loras[spec.name] = CatalogueLora(spec, entry.family)
        self.max_loras = max_loras
        self.max_lora_weight = max_lora_weight

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> ModelEntry:
        return self.entries[name]

    def loras_for(self, model: str) -> list[str]:
        """LoRAs usable with ``model``: every LoRA of its architecture."""
        arch = LORA_ARCHITECTURE[self.entries[model].family]
        return [name for name, lora in self.loras.items() if LORA_ARCHITECTURE[lora.family] == arch]

    def resolve(
        self,
        model: str | None,
        loras: list[LoraRequest] | None = None,
        model_param: str = "model",
        loras_param: str = "loras",
    ) -> ModelChoice:
        """The request's model and LoRA set, or a 400 naming the field and listing what exists."""
        if model is None or model == "":
            name = self.default.name
        elif model in self.entries:
            name = model
        else:
            raise InvalidRequestError(
                f"Unknown model {model!r}; this service has: {', '.join(self.entries)}.",
                param=model_param,
                code="model_not_found",
            )
        requested = loras or []
        if len(requested) > self.max_loras:
            raise InvalidRequestError(
                f"At most {self.max_loras} LoRAs per request, got {len(requested)}.", param=loras_param
            )
        usable = self.loras_for(name)
        chosen: dict[str, float] = {}
        for index, lora in enumerate(requested):
            field = f"{loras_param}[{index}]"
            known = self.loras.get(lora.name)
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
                    f"{FAMILY_NAMES[self.entries[name].family]}. LoRAs for {name!r}: "
                    f"{', '.join(usable) or 'none'}.",
                    param=f"{field}.name",
                    code="lora_incompatible",
                )
            if lora.name in chosen:
                raise InvalidRequestError(f"LoRA {lora.name!r} is listed twice.", param=f"{field}.name")
            weight = known.spec.weight if lora.weight is None else lora.weight
            if not -self.max_lora_weight <= weight <= self.max_lora_weight:
                raise InvalidRequestError(
                    f"LoRA weight must be between {-self.max_lora_weight:g} and "
                    f"{self.max_lora_weight:g}, got {weight:g}.",
                    param=f"{field}.weight",
                )
            chosen[lora.name] = float(weight)
        return ModelChoice(name, canonical_loras(chosen))

    def model_settings(self, base: AppSettings, name: str) -> AppSettings:
        """The app's settings as one entry sees them: its source, variant and request defaults.

        Model loading and request defaults were written for one model per app; handing them the
        entry's view keeps one code path for one model and for many.
        """
        from serve_app.speed_settings import TURBO_PRESETS

        entry = self.entries[name]
        update: dict[str, object] = {
            "model": entry.model,
            "model_name": entry.name,
            "variant": entry.variant,
            "revision": entry.revision,
        }
        if entry is not self.default:
            # Dedicated inpainting and upscaler checkpoints are made for one architecture: they
            # serve the default model; the others inpaint and upscale through their own weights.
            update.update(inpainting_model=None, upscaler_model=None)
        # A Turbo family's defaults (1 step, no guidance) unless the entry gives its own.
        update.update(TURBO_PRESETS.get(entry.family, {}))
        for field in ("default_size", "default_steps", "default_guidance_scale", "default_scheduler"):
            value = getattr(entry, field)
            if value is not None:
                update[field] = value
        return base.model_copy(update=update)


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
