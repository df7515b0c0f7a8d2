"""What every way of asking for images shares: the parameters, and how they become image specs.

Static bounds live on the fields (types, absolute ranges); bounds an operator configures (largest
size, most steps, prompt length, ``n``) are checked by ``build_image_specs`` against the app's settings,
and both kinds produce the same 400 naming the field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.config.catalogue import ModelEntry
from serve_app.config.schedulers import UnknownSchedulerError, canonical_scheduler_name
from serve_app.config.settings import AppSettings
from serve_app.config.sizes import parse_size
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import MAX_SEED, ImageSpec, random_seed
from serve_app.core.model_choice import LoraRequest, resolve_model
from serve_app.core.shapes import check_size_served


class GenerationParams(BaseModel):
    """Parameters shared by every way of asking for an image."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=100_000, description="What to draw.")
    negative_prompt: str = Field(default="", max_length=100_000)
    size: str | None = Field(default=None, max_length=20, examples=["512x512"])
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED, description="Omit or -1 for a random seed.")
    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    scheduler: str | None = Field(default=None, max_length=40, examples=["euler_a", "DPM++ 2M"])
    model: str | None = Field(
        default=None, max_length=256, description="A model from GET /v1/models; omit for the default."
    )
    loras: list[LoraRequest] | None = Field(
        default=None,
        max_length=16,
        description="LoRAs to apply: [{name, weight}] (or 'name:weight' strings); see GET /v1/models.",
    )
    true_cfg_scale: float | None = Field(
        default=None,
        ge=1.0,
        le=50.0,
        description="FLUX.1: above 1, true classifier-free guidance with the negative prompt (a second "
        "pass per step); other families refuse it.",
    )

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def build_image_specs(params: GenerationParams, count: int, settings: AppSettings) -> list[ImageSpec]:
    """Resolve defaults and configured bounds; one job per image, seeds consecutive from the first."""
    if len(params.prompt) > settings.max_prompt_chars:
        raise InvalidRequestError(
            f"'prompt' is longer than {settings.max_prompt_chars} characters.", param="prompt"
        )
    if len(params.negative_prompt) > settings.max_prompt_chars:
        raise InvalidRequestError(
            f"'negative_prompt' is longer than {settings.max_prompt_chars} characters.",
            param="negative_prompt",
        )
    if count > settings.max_images:
        raise InvalidRequestError(f"'n' must be between 1 and {settings.max_images}.", param="n")
    choice = resolve_model(settings.catalogue, params.model, params.loras)
    # Each model has its own request defaults (SDXL's size, a Turbo model's single step).
    settings = settings.for_model(choice.model)
    width, height = resolve_size(params.size, settings)
    steps = params.steps if params.steps is not None else settings.default_steps
    if steps > settings.max_steps:
        raise InvalidRequestError(f"'steps' must be between 1 and {settings.max_steps}.", param="steps")
    try:
        scheduler = canonical_scheduler_name(params.scheduler or settings.default_scheduler)
    except UnknownSchedulerError as error:
        raise InvalidRequestError(str(error), param="scheduler") from None
    guidance = params.guidance_scale if params.guidance_scale is not None else settings.default_guidance_scale
    true_cfg = check_family_request(settings.catalogue.entry(choice.model), params, scheduler)
    first_seed = params.seed if params.seed is not None and params.seed >= 0 else random_seed()
    return [
        ImageSpec(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance,
            scheduler=scheduler,
            seed=(first_seed + index) % (MAX_SEED + 1),
            model=choice.model,
            loras=choice.loras,
            true_cfg_scale=true_cfg,
        )
        for index in range(count)
    ]


def check_family_request(entry: ModelEntry, params: GenerationParams, scheduler: str) -> float:
    """Refuse what the model's family cannot honour (serve_app/config/families.py), naming the
    field; return the true-CFG scale the pipeline call gets.

    Silently dropping a negative prompt or a sampler would render something else than was asked.
    A guidance scale is accepted everywhere: distilled models (Turbo, FLUX.1-schnell, FLUX.2-klein)
    ignore it as diffusers does, and A1111 clients send cfg_scale 7 with every request;
    /v1/models says what guidance means per model.
    """
    family = entry.spec
    if scheduler not in family.schedulers:
        raise InvalidRequestError(
            f"Model {entry.name!r} ({family.name}) cannot run scheduler {scheduler!r}; "
            f"choose one of: {', '.join(family.schedulers)}.",
            param="scheduler",
        )
    if params.negative_prompt and family.negative_prompt == "none":
        raise InvalidRequestError(
            f"Model {entry.name!r} ({family.name}) takes no negative prompt.", param="negative_prompt"
        )
    true_cfg = params.true_cfg_scale
    if true_cfg is not None and true_cfg != 1.0 and family.negative_prompt != "true_cfg":
        raise InvalidRequestError(
            f"'true_cfg_scale' applies to FLUX.1 models only; {entry.name!r} is {family.name} "
            "(use guidance_scale).",
            param="true_cfg_scale",
        )
    if params.negative_prompt and family.negative_prompt == "true_cfg" and (true_cfg or 1.0) <= 1.0:
        raise InvalidRequestError(
            f"Model {entry.name!r} ({family.name}) applies a negative prompt only with "
            "true_cfg_scale above 1 (a second pass per step, twice the time): set true_cfg_scale, "
            "or leave negative_prompt out.",
            param="negative_prompt",
        )
    return true_cfg or 1.0


def resolve_size(size: str | None, settings: AppSettings) -> tuple[int, int]:
    if size is None:
        return settings.default_dimensions
    try:
        width, height = parse_size(size)
    except ValueError as error:
        raise InvalidRequestError(str(error), param="size") from None
    for side in (width, height):
        if side % 8 or not settings.min_size <= side <= settings.max_size:
            raise InvalidRequestError(
                f"'size' sides must be multiples of 8 between {settings.min_size} and "
                f"{settings.max_size}, got {size!r}.",
                param="size",
            )
    check_size_served(width, height, settings)
    return width, height
