"""Pure logic: grouping, scheduler names, hardware choices, settings and request resolution."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.api.openai.protocol import ImageGenerationRequest
from serve_app.config.schedulers import SCHEDULERS, UnknownSchedulerError, canonical_scheduler_name
from serve_app.config.settings import AppSettings
from serve_app.config.sizes import parse_size
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import ImageSpec
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.engine.batch_groups import group_indices
from serve_app.engine.model.loading import (
    choose_attention,
    choose_compile,
    choose_device,
    choose_dtype,
    resolve_model_source,
)


def job(
    size: tuple[int, int] = (64, 64), steps: int = 10, guidance: float = 7.5, sched: str = "ddim"
) -> ImageSpec:
    return ImageSpec("p", size[0], size[1], steps, guidance, sched, seed=0)


# --- grouping ------------------------------------------------------------------------------------


def test_identical_jobs_share_one_group() -> None:
    assert group_indices([job(), job(), job()]) == [[0, 1, 2]]


def test_every_pipeline_parameter_splits_groups() -> None:
    jobs = [job(), job(size=(96, 64)), job(steps=20), job(guidance=1.0), job(sched="euler")]
    assert group_indices(jobs) == [[0], [1], [2], [3], [4]]


def test_groups_keep_arrival_order_and_interleave_correctly() -> None:
    jobs = [job(), job(steps=20), job(), job(steps=20), job(size=(64, 128)), job()]
    assert group_indices(jobs) == [[0, 2, 5], [1, 3], [4]]


def test_prompt_seed_and_negative_prompt_do_not_split_groups() -> None:
    a = ImageSpec("a cat", 64, 64, 10, 7.5, "ddim", seed=1, negative_prompt="")
    b = ImageSpec("a dog", 64, 64, 10, 7.5, "ddim", seed=2, negative_prompt="blurry")
    assert group_indices([a, b]) == [[0, 1]]


def test_empty_batch_has_no_groups() -> None:
    assert group_indices([]) == []


# --- schedulers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("DDIM", "ddim"),
        ("Euler a", "euler_a"),
        ("euler_ancestral", "euler_a"),
        ("Euler", "euler"),
        ("DPM++ 2M", "dpmpp_2m"),
        ("DPM++ 2M Karras", "dpmpp_2m_karras"),
        ("dpmpp-2m", "dpmpp_2m"),
        ("PNDM", "pndm"),
        (" lms ", "lms"),
    ],
)
def test_scheduler_names_users_type(name: str, canonical: str) -> None:
    assert canonical_scheduler_name(name) == canonical


def test_unknown_scheduler_lists_choices() -> None:
    with pytest.raises(UnknownSchedulerError, match="euler_a"):
        canonical_scheduler_name("warp drive")


def test_every_scheduler_builds_from_a_stable_diffusion_config() -> None:
    from diffusers import DDIMScheduler

    from serve_app.engine.model.loading import build_scheduler

    base = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    for name, spec in SCHEDULERS.items():
        scheduler = build_scheduler(name, base)
        assert type(scheduler).__name__ == spec.class_name
        assert scheduler.config.beta_schedule == "scaled_linear"
    assert build_scheduler("dpmpp_2m_karras", base).config.use_karras_sigmas is True


# --- hardware choices (the CUDA branches, tested without a GPU) -----------------------------------


def test_device_follows_what_torch_sees() -> None:
    assert choose_device("auto", cuda_available=True) == "cuda"
    assert choose_device("auto", cuda_available=False) == "cpu"
    assert choose_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_device("cuda", cuda_available=False)


def test_fp16_on_cuda_fp32_on_cpu() -> None:
    assert choose_dtype("auto", "cuda") == "float16"
    assert choose_dtype("auto", "cpu") == "float32"
    assert choose_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="float16"):
        choose_dtype("float16", "cpu")


def test_xformers_only_with_cuda_and_the_package() -> None:
    assert choose_attention("auto", "cuda", xformers_available=True) == "xformers"
    assert choose_attention("auto", "cuda", xformers_available=False) == "sdpa"
    assert choose_attention("auto", "cpu", xformers_available=True) == "sdpa"
    with pytest.raises(ValueError, match="xformers"):
        choose_attention("xformers", "cpu", xformers_available=True)


def test_compile_only_on_cuda() -> None:
    assert choose_compile(True, "cuda") is True
    assert choose_compile(True, "cpu") is False
    assert choose_compile(False, "cuda") is False


def test_model_source_local_folder_or_hub_id(tmp_path: object) -> None:
    assert resolve_model_source("stabilityai/sd-turbo") == ("stabilityai/sd-turbo", False)
    path, local = resolve_model_source(str(tmp_path))
    assert local and path == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="tiny_model"):
        resolve_model_source("./no/such/folder")


# --- settings --------------------------------------------------------------------------------------


def test_size_parsing() -> None:
    assert parse_size("512x768") == (512, 768)
    assert parse_size(" 64 X 64 ") == (64, 64)
    for bad in ("512", "axb", "512x", "-64x64", "64x64x64"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_settings_reject_inconsistent_bounds() -> None:
    with pytest.raises(ValidationError, match="default_size"):
        AppSettings(default_size="2048x2048")
    with pytest.raises(ValidationError, match="min_size"):
        AppSettings(min_size=512, max_size=256)
    with pytest.raises(ValidationError, match="scheduler"):
        AppSettings(default_scheduler="nope")
    with pytest.raises(ValidationError, match="unknown_field"):
        AppSettings.model_validate({"unknown_field": 1})


def test_settings_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Key values long and distinctive enough that no other field (a random temp dir name, say)
    # can contain them by chance: the repr check below must only fail if a key really leaks.
    first, second = "sk-repr-canary-0123456789", "sk-repr-canary-9876543210"
    monkeypatch.setenv("RAYDIFFUSION_API_KEYS", f"{first}, {second},")
    monkeypatch.setenv("RAYDIFFUSION_DEFAULT_STEPS", "12")
    settings = AppSettings()
    assert settings.api_keys == [first, second]
    assert settings.default_steps == 12
    assert AppSettings(default_steps=5).default_steps == 5  # args win over the environment
    assert "sk-repr-canary" not in repr(settings)  # keys never end up in logs via repr


# --- request resolution ----------------------------------------------------------------------------


SETTINGS = AppSettings(default_size="64x64", default_steps=10, max_steps=40, max_images=4)


def test_build_jobs_applies_defaults_and_consecutive_seeds() -> None:
    jobs = build_image_specs(ImageGenerationRequest(prompt="a cat", seed=10), 3, SETTINGS)
    assert [j.seed for j in jobs] == [10, 11, 12]
    assert {(j.width, j.height, j.steps, j.scheduler) for j in jobs} == {(64, 64, 10, "ddim")}


def test_build_jobs_seed_wraps_and_random_seed_when_missing() -> None:
    jobs = build_image_specs(GenerationParams(prompt="x", seed=2**32 - 1), 2, SETTINGS)
    assert [j.seed for j in jobs] == [2**32 - 1, 0]
    seeds = {build_image_specs(GenerationParams(prompt="x", seed=-1), 1, SETTINGS)[0].seed for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("params", "count", "param"),
    [
        ({"prompt": "x", "size": "1024x64"}, 1, "size"),
        ({"prompt": "x", "steps": 41}, 1, "steps"),
        ({"prompt": "x"}, 5, "n"),
        ({"prompt": "x", "scheduler": "nope"}, 1, "scheduler"),
    ],
)
def test_build_jobs_enforces_configured_bounds(params: dict, count: int, param: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        build_image_specs(
            GenerationParams(**params),
            count,
            AppSettings(default_size="64x64", max_size=512, max_steps=40, max_images=4, default_steps=10),
        )
    assert raised.value.param == param


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps", [1, 2, 500])
def test_every_scheduler_runs_every_allowed_step_count(name: str, steps: int) -> None:
    """Any steps value the API accepts must run with any scheduler: a crash here would be a 500."""
    import torch
    from diffusers import DDIMScheduler

    from serve_app.engine.model.loading import build_scheduler

    base = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    ).config
    scheduler = build_scheduler(name, base)
    scheduler.set_timesteps(steps)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = sample * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, timestep)
        sample = scheduler.step(torch.zeros_like(model_input), timestep, sample).prev_sample
    assert torch.isfinite(sample).all()
