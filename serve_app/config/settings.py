"""Application settings: the typed ``args:`` of a Serve config file, with environment fallbacks.

Serve passes a config file's ``args:`` to ``build_app``; they are validated here, once, before any
replica starts, so a typo in ``deployments/aws.yaml`` fails ``serve deploy`` instead of a GPU node
minutes later. Any field not given in ``args`` falls back to an environment variable
``RAYDIFFUSION_<FIELD>`` (e.g. ``RAYDIFFUSION_API_KEYS=key1,key2``), then to the default here.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serve_app.config.api_keys import ApiKeySpec, CallerLimits, check_webhook_secret, parse_key_specs
from serve_app.config.catalogue import ModelCatalogue, ModelEntry
from serve_app.config.families import FAMILIES, TURBO_FAMILIES, TURBO_PRESETS, guess_family, preset_for
from serve_app.config.schedulers import canonical_scheduler_name
from serve_app.config.sizes import parse_size
from serve_app.config.speed import SpeedSettings


class BatchingSettings(BaseModel):
    """Dynamic batching knobs; both can be retuned live through the deployment's ``user_config``."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.1, ge=0.0, le=10.0)
    # A 1024x1024 batch of 8 does not fit where 512x512 does: one pipeline call takes at most this
    # many output pixels (width x height x images; 0: no limit). Per GPU type in deployments/aws.yaml.
    max_batch_pixels: int = Field(default=0, ge=0)


class AppSettings(BaseSettings):
    """Everything ``build_app`` accepts; see ``deployments/*.yaml`` for annotated examples."""

    model_config = SettingsConfigDict(env_prefix="RAYDIFFUSION_", extra="forbid", populate_by_name=True)

    # --- the model -------------------------------------------------------------------------
    model: str = Field(
        default=".cache/tiny-sd",
        description="Hugging Face model id or a local diffusers folder.",
    )
    model_cache_dir: str = Field(
        default="~/.cache/raydiffusion/models",
        description="Where s3:// models are synced on each node before loading.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (default: AWS for the node's region)."
    )
    model_name: str | None = Field(
        default=None, description="Name reported by /v1/models; defaults to `model`."
    )
    revision: str | None = None
    variant: str | None = Field(
        default=None, description="Weights variant, e.g. 'fp16' for hub repos that ship one."
    )
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    attention: Literal["auto", "xformers", "sdpa"] = "auto"
    compile: bool = Field(default=False, description="torch.compile the UNet (CUDA only).")
    torch_threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU threads for torch; default: the replica's CPUs."
    )
    safety_checker: bool = Field(
        default=True, description="Keep the model's safety checker when it ships one."
    )
    safety_checker_model: str | None = Field(
        default=None,
        description="A standalone safety checker (folder, hub id or s3:// prefix in the layout of "
        "CompVis/stable-diffusion-safety-checker) checking every model that ships none (SDXL, SD 3.5, "
        "FLUX, ...) when safety_checker is on.",
    )
    speed: SpeedSettings = Field(
        default_factory=SpeedSettings, description="GPU speed recipes (serve_app/config/speed.py)."
    )

    # --- many models (serve_app/config/catalogue.py) -----------------------------------------
    models: list[ModelEntry] = Field(
        default_factory=list,
        description="The model catalogue; empty: one entry made of `model`, `model_name` and `variant`.",
    )
    max_models_per_replica: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Checkpoints one model replica keeps loaded (Serve multiplexing evicts the least "
        "recently used past this).",
    )
    max_loras_per_request: int = Field(default=4, ge=0, le=16)
    max_lora_weight: float = Field(
        default=2.0, gt=0.0, le=4.0, description="Largest |weight| a request may give a LoRA."
    )

    # --- request defaults and bounds -------------------------------------------------------
    default_size: str = "512x512"
    min_size: int = Field(default=64, ge=8)
    max_size: int = Field(default=1024, ge=8, le=4096)
    default_steps: int = Field(default=30, ge=1)
    # Schedulers train on 1000 timesteps; past ~500 some (DDIM with an offset) index out of range.
    max_steps: int = Field(default=100, ge=1, le=500)
    default_guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    # DPM++ 2M: good images in 20-30 steps and no host sync per step (diffusers 0.42's DDIM syncs each
    # step; ancestral samplers draw CPU noise each step): the GPU's queue never drains mid-render.
    default_scheduler: str = "dpmpp_2m"
    max_images: int = Field(default=4, ge=1, le=64, description="Upper bound of `n`.")
    max_prompt_chars: int = Field(default=2000, ge=1, le=100_000)

    # --- serving ---------------------------------------------------------------------------
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    request_timeout_s: float = Field(default=300.0, gt=0, description="Past this a request is answered 504.")
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 when the queue is full."
    )
    unhealthy_after_failed_renders: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="A model replica whose last N pipeline calls all failed fails its health check "
        "and is replaced; 0 disables.",
    )
    api_keys: Annotated[list[str | ApiKeySpec], NoDecode] = Field(
        default_factory=list,
        description="When non-empty, /v1/*, /imagine and /sdapi/v1/* require 'Authorization: Bearer "
        "KEY'. Bare keys, or {name, key, images_per_minute, concurrent_images, daily_images, weight, "
        "priority, admin} (serve_app/config/api_keys.py); the environment takes 'k1,k2' or a JSON list.",
        repr=False,
    )
    prefer_wait_max_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Longest a 'Prefer: wait' prediction holds its request open (Replicate's bound: 60).",
    )

    # --- starting from a picture (img2img, inpainting, upscale) -----------------------------------
    max_input_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest uploaded image or mask, encoded."
    )
    max_input_pixels: int = Field(
        default=4096 * 4096,
        ge=64 * 64,
        description="Largest uploaded image in pixels, checked before decoding (decompression bombs).",
    )
    default_strength: float = Field(default=0.75, gt=0.0, le=1.0, description="img2img / edits default.")
    variation_strength: float = Field(default=0.6, gt=0.0, le=1.0, description="How far variations stray.")
    upscale_strength: float = Field(
        default=0.3, gt=0.0, le=1.0, description="The refining img2img pass of an upscale ('hires fix')."
    )
    inpainting_model: str | None = Field(
        default=None,
        description="A dedicated inpainting checkpoint (hub id, folder or s3://); default: the main model "
        "through from_pipe.",
    )
    upscaler_model: str | None = Field(
        default=None,
        description="A dedicated 2x upscaler (e.g. stabilityai/sd-x2-latent-upscaler); default: resize, "
        "then img2img at upscale_strength.",
    )
    vae_tiling_pixels: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Decode images larger than this many pixels in VAE tiles (0: never).",
    )

    # --- storage and async jobs ----------------------------------------------------------------
    image_store: Literal["local", "s3"] = Field(
        default="local", description="Where images and prediction records are kept."
    )
    data_dir: str = Field(default=".data", description="Folder of the local store.")
    s3_bucket: str | None = None
    s3_prefix: str = "raydiffusion"
    s3_region: str | None = None
    image_url_expiry_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    public_base_url: str | None = Field(
        default=None,
        description="Base of image URLs from the local store (default: the request's own base).",
    )
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_retry_initial_s: float = Field(default=1.0, gt=0)
    webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="Standard Webhooks signing secret ('whsec_' + base64); the Secrets Manager "
        "secret's WEBHOOK_SECRET wins. Unset: webhooks are sent unsigned.",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names, IPs or CIDR blocks webhooks may reach even though they are not "
        "public (loopback, private, link-local); everything else must resolve to public addresses.",
    )
    # --- failure alerts (serve_app/ops/alerts.py) -------------------------------------------
    alerts_sns_topic_arn: str | None = Field(
        default=None,
        validation_alias=AliasChoices("alerts_sns_topic_arn", "ALERTS_SNS_TOPIC_ARN"),
        description="SNS topic that failed jobs and undeliverable Discord messages are published to.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("alert_webhook_url", "ALERT_WEBHOOK_URL"),
        description="URL POSTed a JSON alert for the same failures (same address rules as job webhooks).",
    )
    alerts_max_per_window: int = Field(
        default=5, ge=0, description="Alerts sent per window and process at most; the rest are counted."
    )
    alerts_window_s: float = Field(default=600.0, gt=0)
    replica_watch_interval_s: float = Field(
        default=10.0, gt=0, description="How often the ingress looks for replaced model replicas (alerts on)."
    )
    prediction_stale_s: float = Field(
        default=60.0,
        ge=1.0,
        description=(
            "A job's lease: renewed by its runner four times per lease (apart from heartbeats and "
            "overload waits); a job whose lease ran out is adopted by another replica."
        ),
    )
    prediction_sweep_interval_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _sweep_within_a_lease(self) -> AppSettings:
        # An orphaned job waits for its lease to end and then for the next sweep: a sweep slower
        # than a lease would leave it (and its delivery) waiting longer than configured.
        if self.prediction_sweep_interval_s > self.prediction_stale_s:
            raise ValueError("prediction_sweep_interval_s must not exceed prediction_stale_s")
        return self

    # --- secrets ---------------------------------------------------------------------------------
    secrets_manager_secret_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("secrets_manager_secret_id", "SECRETS_MANAGER_SECRET_ID"),
        description="JSON secret holding Discord credentials and API keys (AWS Secrets Manager).",
    )
    secrets_ttl_s: float = Field(default=300.0, gt=0)
    origin_header: str | None = Field(
        default=None,
        description="A header every request must carry with the secret's ORIGIN_VERIFY_SECRET (the "
        "HTTPS front adds it; cluster.yaml sets RAYDIFFUSION_ORIGIN_HEADER); without it: 403.",
    )
    secrets_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=30,
        description="Connect and read timeout of a Secrets Manager read; refreshes never block requests.",
    )

    # --- Discord (see bot_gateway/) ----------------------------------------------------------
    # Standard variable names without our prefix, as Discord's docs and other bots use them.
    discord_public_key: str | None = Field(
        default=None, validation_alias=AliasChoices("discord_public_key", "DISCORD_PUBLIC_KEY")
    )
    discord_application_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("discord_application_id", "DISCORD_APPLICATION_ID"),
    )
    discord_api_base_url: str = Field(
        default="https://discord.com/api/v10",
        validation_alias=AliasChoices("discord_api_base_url", "DISCORD_API_BASE_URL"),
    )
    discord_max_jobs_per_user: int = Field(
        default=8,
        ge=1,
        le=400,
        description="Images (not commands) one user may have rendering at once: a grid of four "
        "counts four, so grids cannot take a bigger share of the queue than single images.",
    )
    discord_default_count: int = Field(
        default=4,
        ge=1,
        le=10,
        description="Images an /imagine renders (one grid) when `count` is left out; `count` is "
        "bounded by max_images and by the ten U/V buttons a message can hold.",
    )
    discord_subtle_variation_strength: float = Field(
        default=0.35,
        gt=0.0,
        le=1.0,
        description="Strength of Vary (subtle); Vary (strong) and V1-V4 use variation_strength.",
    )
    discord_user_limits: CallerLimits = Field(
        default_factory=CallerLimits,
        description="Per Discord user, as for API keys: images_per_minute, concurrent_images, daily_images.",
    )
    discord_guild_limits: CallerLimits = Field(
        default_factory=CallerLimits, description="The same limits for a whole guild (server)."
    )
    discord_weight: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="Each Discord user's fair-queueing weight."
    )
    discord_priority: int = Field(
        default=0, ge=-100, le=100, description="Fair-queueing priority of Discord images (API keys: 0)."
    )
    discord_allowed_guilds: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="When non-empty, only these guild ids may use the bot."
    )
    discord_banned_words: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Prompts containing any of these words are refused."
    )
    discord_progress_interval_s: float = Field(
        default=2.0, ge=0.05, description="Least time between two progress edits of a message."
    )
    discord_max_wait_s: float = Field(
        default=780.0,
        gt=0,
        description="Refuse a job expected to take longer: the interaction token dies at 15 min.",
    )
    discord_retry_initial_s: float = Field(
        default=1.0, gt=0, description="First back-off after a Discord 5xx or timeout; doubles."
    )
    discord_cold_start_s: float = Field(
        default=120.0,
        ge=0,
        description="Wait the bot assumes before it has measured a render (a model replica may "
        "have to start and load the weights first).",
    )
    discord_attachment_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cdn.discordapp.com", "media.discordapp.net"],
        description="Hosts the bot may fetch images from (an /imagine attachment, a message's image "
        "for Variations and Upscale). Names must still resolve to public addresses; IPs or CIDR "
        "blocks listed here are allowed even when private (a test server on loopback).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: object) -> object:
        """'k1,k2' or a JSON list (the environment's forms); each key is checked as an ApiKeySpec."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        if isinstance(value, list):
            value = [item.strip() if isinstance(item, str) else item for item in value]
            value = [item for item in value if item != ""]
            parse_key_specs(value)  # names unique and valid: fail the deploy, not a request
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_secret(value)
        return value

    @field_validator(
        "discord_allowed_guilds",
        "discord_banned_words",
        "discord_attachment_hosts",
        "webhook_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("default_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return canonical_scheduler_name(value)

    @model_validator(mode="after")
    def _speed_preset(self) -> AppSettings:
        """A Turbo preset's request defaults where none were configured.

        Only defaults move: a value the config file or the environment gives wins, and requests can
        still ask for more steps or guidance within the bounds.
        """
        for field, value in TURBO_PRESETS.get(preset_for(self.model, self.speed.preset), {}).items():
            if field not in self.model_fields_set:
                object.__setattr__(self, field, value)
        return self

    @model_validator(mode="after")
    def _consistent_bounds(self) -> AppSettings:
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        if self.min_size % 8 or self.max_size % 8:
            raise ValueError("min_size and max_size must be multiples of 8")
        width, height = parse_size(self.default_size)
        for side in (width, height):
            if side % 8 or not self.min_size <= side <= self.max_size:
                raise ValueError(
                    f"default_size {self.default_size!r} must be multiples of 8 within "
                    f"[{self.min_size}, {self.max_size}]"
                )
        if self.default_steps > self.max_steps:
            raise ValueError("default_steps must not exceed max_steps")
        for entry in self.models:
            family_size = FAMILIES[entry.family].defaults.get("default_size")
            for side in parse_size(entry.default_size or str(family_size or self.default_size)):
                if side % 8 or not self.min_size <= side <= self.max_size:
                    raise ValueError(
                        f"models[{entry.name}].default_size must be multiples of 8 within "
                        f"[{self.min_size}, {self.max_size}]"
                    )
            if (entry.default_steps or 0) > self.max_steps:
                raise ValueError(f"models[{entry.name}].default_steps must not exceed max_steps")
        self._catalogue = None
        _ = self.catalogue  # unique names, one default: fail the deploy, not a request
        if self.image_store == "s3" and not self.s3_bucket:
            # Fail the deploy, not the first request: cluster.yaml passes RAYDIFFUSION_S3_BUCKET.
            raise ValueError("image_store 's3' needs s3_bucket (or RAYDIFFUSION_S3_BUCKET)")
        return self

    @property
    def discord_configured(self) -> bool:
        return bool(self.discord_public_key and self.discord_application_id)

    def base_url_for(self, request_base_url: str) -> str:
        """The base of the URLs we hand out: ``public_base_url`` when set (behind a proxy or CDN the
        request's own base is the internal one), else the base the caller reached us at."""
        return (self.public_base_url or request_base_url).rstrip("/")

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.model

    # Built from the fields below on first use and rebuilt when any of them changes (a
    # ``model_copy(update=...)`` copies this cache along with the fields it was built from).
    _catalogue: tuple[tuple[object, ...], ModelCatalogue] | None = PrivateAttr(default=None)

    def _catalogue_inputs(self) -> tuple[object, ...]:
        return (
            self.models,
            self.model,
            self.model_name,
            self.variant,
            self.revision,
            self.speed.preset,
            self.max_loras_per_request,
            self.max_lora_weight,
        )

    @property
    def catalogue(self) -> ModelCatalogue:
        """The ``models:`` list, or the single ``model`` as a one-entry catalogue."""
        inputs = self._catalogue_inputs()
        if self._catalogue is None or self._catalogue[0] != inputs:
            entries = self.models or [
                ModelEntry(
                    name=self.served_model_name,
                    model=self.model,
                    variant=self.variant,
                    revision=self.revision,
                    family=TURBO_FAMILIES.get(preset_for(self.model, self.speed.preset))
                    or guess_family(self.model)
                    or "sd15",
                )
            ]
            catalogue = ModelCatalogue(entries, self.max_loras_per_request, self.max_lora_weight)
            self._catalogue = (inputs, catalogue)
        return self._catalogue[1]

    def for_model(self, name: str | None) -> AppSettings:
        """These settings as model ``name`` (default: the catalogue's default) sees them: its source,
        variant and request defaults.

        Model loading and request defaults were written for one model per app; handing them the
        entry's view keeps one code path for one model and for many.
        """
        catalogue = self.catalogue
        entry = catalogue.entry(name or catalogue.default.name)
        update: dict[str, object] = {
            "model": entry.model,
            "model_name": entry.name,
            "variant": entry.variant,
            "revision": entry.revision,
        }
        if entry is not catalogue.default:
            # Dedicated inpainting and upscaler checkpoints are made for one architecture: they
            # serve the default model; the others inpaint and upscale through their own weights.
            update.update(inpainting_model=None, upscaler_model=None)
        # The family's documented defaults (Turbo: 1 step, no guidance; FLUX.1-schnell: 4 steps and
        # a flow-matching scheduler) unless the entry gives its own.
        update.update(FAMILIES[entry.family].defaults)
        for field in ("default_size", "default_steps", "default_guidance_scale", "default_scheduler"):
            value = getattr(entry, field)
            if value is not None:
                update[field] = value
        return self.model_copy(update=update)

    @property
    def default_dimensions(self) -> tuple[int, int]:
        return parse_size(self.default_size)
