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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.config.families import FAMILIES, LORA_ARCHITECTURE, Family, FamilySpec, Task
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


GPU_CLASS_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"


class Quantization(BaseModel):
    """Load the denoiser (and the big text encoder) quantized so a model fits a smaller GPU class.

    diffusers' ``PipelineQuantizationConfig``: ``bitsandbytes_4bit`` / ``bitsandbytes_8bit`` (the
    ``bitsandbytes`` package, CUDA) or ``torchao`` (``quant_type`` such as ``int8wo``, ``float8wo``).
    The cost: slower steps (4-bit dequantises every matmul) and slightly different images.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["bitsandbytes_4bit", "bitsandbytes_8bit", "torchao"]
    quant_type: str | None = Field(default=None, description="torchao's quant_type, e.g. 'int8wo'.")
    components: list[str] = Field(
        default_factory=lambda: ["transformer", "text_encoder_2"],
        description="Pipeline components to quantize (the largest ones).",
    )

    @model_validator(mode="after")
    def _torchao_needs_type(self) -> Quantization:
        if self.backend == "torchao" and not self.quant_type:
            raise ValueError("quantization backend 'torchao' needs quant_type (e.g. int8wo)")
        return self


class ModelEntry(BaseModel):
    """One checkpoint. Unset request defaults fall back to its family's, then to the app's."""

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
    gpu_class: str = Field(
        default="default",
        pattern=GPU_CLASS_PATTERN,
        description="The model deployment (and cluster node type) that serves it: one deployment per "
        "class, each scaling on its own. 'default' is the DiffusionModel deployment.",
    )
    tasks: list[Task] | None = Field(
        default=None,
        description="Jobs it serves; default: all its family supports. Narrow it (or, for the "
        "generic 'auto' family, widen it where from_pipe supports the pipeline).",
    )
    preview_vae: str | None = Field(
        default=None,
        description="A tiny autoencoder for this entry's live previews (TAESD3 for SD 3.5, TAEF1 for "
        "FLUX.1); default: speed.preview_vae when its latents fit.",
    )
    quantization: Quantization | None = None
    offload: Literal["none", "model", "sequential"] = Field(
        default="none",
        description="enable_model_cpu_offload (components on the GPU only while they run) or "
        "sequential offload (layer by layer: fits almost anywhere, many times slower). CUDA only.",
    )

    @field_validator("default_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        return None if value is None else canonical_scheduler_name(value)

    @model_validator(mode="after")
    def _fits_family(self) -> ModelEntry:
        family = FAMILIES[self.family]
        if self.default_scheduler is not None and self.default_scheduler not in family.schedulers:
            raise ValueError(
                f"default_scheduler {self.default_scheduler!r} does not fit family {self.family!r}; "
                f"choose one of: {', '.join(family.schedulers)}"
            )
        if self.tasks is not None:
            if "txt2img" not in self.tasks:
                raise ValueError("tasks must include txt2img")
            extra = [task for task in self.tasks if task not in family.tasks and self.family != "auto"]
            if extra:
                raise ValueError(f"family {self.family!r} cannot run {', '.join(extra)}")
        return self

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.family]

    @property
    def supported_tasks(self) -> tuple[Task, ...]:
        return tuple(self.tasks) if self.tasks is not None else self.spec.tasks

    def capabilities(self, standalone_safety_checker: bool) -> dict[str, object]:
        """What this model can be asked for, as /v1/models (and every interface built on it) shows it."""
        family = self.spec
        return {
            "family_name": family.name,
            "tasks": list(self.supported_tasks),
            "schedulers": list(family.schedulers),
            # "cfg": a negative prompt as usual; "true_cfg": only with true_cfg_scale > 1; "none".
            "negative_prompt": family.negative_prompt,
            "true_cfg_scale": family.negative_prompt == "true_cfg",
            # "cfg": classifier-free guidance; "distilled": an input of the model; "ignored".
            "guidance": family.guidance,
            "previews": family.preview != "none",
            "gpu_class": self.gpu_class,
            "offload": self.offload,
            "quantization": self.quantization.backend if self.quantization else None,
            # Families that ship no checker are checked by the standalone one when configured.
            "standalone_safety_checker": standalone_safety_checker,
        }


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

    @property
    def gpu_classes(self) -> list[str]:
        """Every class the catalogue names, the default model's first (its deployment is the one
        that keeps the name DiffusionModel)."""
        classes = [self.default.gpu_class]
        for entry in self.entries.values():
            if entry.gpu_class not in classes:
                classes.append(entry.gpu_class)
        return classes

    def models_of_class(self, gpu_class: str) -> list[str]:
        return [name for name, entry in self.entries.items() if entry.gpu_class == gpu_class]

    def class_default(self, gpu_class: str) -> str:
        """The model a replica of ``gpu_class`` loads when it starts."""
        if self.default.gpu_class == gpu_class:
            return self.default.name
        return self.models_of_class(gpu_class)[0]

    def loras_for(self, model: str) -> list[str]:
        """LoRAs usable with ``model``: every LoRA of its architecture."""
        arch = LORA_ARCHITECTURE[self.entries[model].family]
        return [name for name, lora in self.loras.items() if LORA_ARCHITECTURE[lora.family] == arch]
