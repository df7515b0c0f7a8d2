"""The models one cluster serves: named checkpoints, their request defaults and the LoRAs they accept.

The catalogue is the ``models:`` list of a config file's ``args:``. Every replica of the model
deployment can load every entry (Ray Serve model multiplexing picks, per request, a replica that
already holds it: serve_app/engine/deployment.py), so the catalogue is validated once, here, and a
request is resolved against it at the HTTP edge: an unknown model or LoRA is a 400 that lists what
exists, never a replica that fails to load it minutes later.

A LoRA is trained against one architecture; it is listed under the entry it was made for and can be
used with every model of that architecture (a Dreamshaper LoRA for SD 1.5 works on any SD 1.5
checkpoint), never across architectures (SD 1.5 weights do not fit SDXL's UNet).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.config.families import LORA_ARCHITECTURE, Family
from serve_app.config.schedulers import canonical_scheduler_name

# Model names may be hub ids, paths (a one-model config names its model by its source) or display
# names ("SD 1.5"): no control characters, no surrounding blanks. LoRA names appear inside
# `<lora:NAME:WEIGHT>`, so no ':' or '>'.
MODEL_NAME_PATTERN = r"^[^\s\x00-\x1f](?:[^\x00-\x1f]{0,254}[^\s\x00-\x1f])?$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


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
        return None if value is None else canonical_scheduler_name(value)


# (name, weight) pairs, sorted by name, zero weights dropped: the canonical form jobs carry, so
# equal LoRA sets batch together whatever order a caller listed them in.
LoraSet = tuple[tuple[str, float], ...]


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
