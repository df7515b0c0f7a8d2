"""GPU speed knobs: the ``speed:`` block of a config file's ``args:``.

Kept apart from the rest of AppSettings because every knob here changes only how fast (and with how
much memory) an image renders, never what a caller may ask for; and because the defaults are
"auto": decided per replica by what torch sees (serve_app/engine/speed_recipes.py), so one config file
serves a laptop CPU and an H100 alike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.config.sizes import parse_size

Toggle = Literal["auto", "on", "off"]

class SpeedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["auto", "none", "sd-turbo", "sdxl-turbo"] = Field(
        default="auto",
        description="Request defaults for distilled models; auto: by the model id (sd-turbo, sdxl-turbo).",
    )
    channels_last: Toggle = Field(default="auto", description="UNet and VAE in channels-last; auto: CUDA.")
    fuse_qkv: Toggle = Field(
        default="auto",
        description="Fused QKV attention projections where the model supports them; auto: CUDA.",
    )
    vae_slicing: Toggle = Field(
        default="auto", description="Decode a batch one image at a time (lower VAE peak memory); auto: CUDA."
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="max-autotune-no-cudagraphs",
        description="torch.compile mode when `compile` is on. 'reduce-overhead' adds CUDA graphs: "
        "worth it for small batches, where launch overhead is a large share of a step; they are "
        "recorded per shape at warm-up.",
    )
    compile_vae: bool = Field(default=True, description="With `compile`, compile the VAE decoder too.")
    compile_backend: str = Field(
        default="inductor", description="torch.compile backend; 'eager'/'aot_eager' trace without codegen."
    )
    compile_on_cpu: bool = Field(
        default=False, description="Allow `compile` on CPU (tests; CPU gains rarely pay the compile time)."
    )
    size_buckets: list[str] = Field(
        default_factory=list,
        description="Sizes compiled at warm-up (e.g. ['512x512', '768x768']); empty: the default size.",
    )
    batch_buckets: list[int] = Field(
        # 3 and 6 too: a batch of 5 pads to 6 (one wasted image), not to 8 (three).
        default_factory=lambda: [1, 2, 3, 4, 6, 8],
        description="Batch sizes compiled at warm-up; a batch is padded up to the next one.",
    )
    outside_buckets: Literal["eager", "refuse"] = Field(
        default="eager",
        description="A size outside size_buckets on a compiled replica: run it uncompiled, or refuse it.",
    )
    recompile_while_serving: bool = Field(
        default=False,
        description="After warm-up, let dynamo compile a shape it has not seen (a pause of compile "
        "time inside a request) instead of running that call eagerly.",
    )
    compile_cache_dir: str | None = Field(
        default=None,
        description="Inductor's FX-graph / AOT caches; default: <model_cache_dir>/torch-compile.",
    )
    fp16_vae: str | None = Field(
        default=None,
        description="A VAE that decodes in fp16 without overflow (SDXL: 'madebyollin/sdxl-vae-fp16-fix'), "
        "local folder or hub id, replacing the model's fp32-upcast VAE.",
    )
    preview_vae: str | None = Field(
        default=None,
        description="Tiny autoencoder (AutoencoderTiny, e.g. 'madebyollin/taesd' or a local folder) for "
        "live previews of the current step.",
    )
    preview_every_steps: int = Field(default=5, ge=1, le=1000, description="Steps between two previews.")
    preview_size: int = Field(default=128, ge=32, le=512, description="Longest side of a preview, pixels.")
    device_generator: bool = Field(
        default=False,
        description="Draw the seed's noise on the replica's device instead of the CPU: ancestral and SDE "
        "samplers then copy no fresh noise from the host each step. Changes the image a seed gives.",
    )
    compile_scope: Literal["full", "regional"] = Field(
        default="full",
        description="With `compile`: the whole UNet, or only its repeated transformer blocks "
        "(diffusers' compile_repeated_blocks): a fraction of the warm-up for most of the speed.",
    )
    lora_hotswap_rank: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="With `compile`: hot-swap LoRA weights into one compiled adapter slot of this rank "
        "(diffusers' enable_lora_hotswap) instead of switching PEFT adapters, which runs eagerly or "
        "recompiles; a request may then use one LoRA at a time. 0: off.",
    )

    @field_validator("size_buckets")
    @classmethod
    def _sizes(cls, value: list[str]) -> list[str]:
        for size in value:
            width, height = parse_size(size)
            if width % 8 or height % 8:
                raise ValueError(f"size bucket {size!r} must be multiples of 8")
        return value

    @field_validator("batch_buckets")
    @classmethod
    def _batches(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("batch_buckets must list batch sizes >= 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _compile_backend(self) -> SpeedSettings:
        if not self.compile_backend.strip():
            raise ValueError("compile_backend must not be empty")
        return self

    @property
    def size_bucket_dimensions(self) -> list[tuple[int, int]]:
        return [parse_size(size) for size in self.size_buckets]
