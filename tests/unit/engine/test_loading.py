"""Device, dtype, attention and compile chosen from what torch sees; model sources; every
scheduler built and run."""

from __future__ import annotations

import pytest

from serve_app.config.families import FLOW_SCHEDULERS, SD_SCHEDULERS
from serve_app.config.schedulers import SCHEDULERS
from serve_app.engine.model.loading import (
    choose_attention,
    choose_compile,
    choose_device,
    choose_dtype,
    resolve_model_source,
)


def test_every_scheduler_builds_from_a_stable_diffusion_config() -> None:
    from diffusers import DDIMScheduler

    from serve_app.engine.model.loading import build_scheduler

    base = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    for name in SD_SCHEDULERS:
        spec = SCHEDULERS[name]
        scheduler = build_scheduler(name, base)
        assert type(scheduler).__name__ == spec.class_name
        assert scheduler.config.beta_schedule == "scaled_linear"
    assert build_scheduler("dpmpp_2m_karras", base).config.use_karras_sigmas is True


def test_flow_schedulers_build_from_a_flux_config_and_keep_its_shifting() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from serve_app.engine.model.loading import build_scheduler

    base = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True).config
    for name in FLOW_SCHEDULERS:
        scheduler = build_scheduler(name, base)
        assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert scheduler.config.use_dynamic_shifting is True


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


@pytest.mark.parametrize("name", sorted(SD_SCHEDULERS))
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
