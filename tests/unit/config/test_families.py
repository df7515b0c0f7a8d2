"""Families (issue 24): defaults, samplers, tasks, GPU classes and the edge's per-family 400s."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.api.a1111.samplers import ResolvedSampler, for_family, resolve_sampler
from serve_app.config.families import FAMILIES, FLOW_SCHEDULERS, guess_family
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import check_task
from serve_app.core.params import GenerationParams, build_image_specs


def _settings() -> AppSettings:
    return AppSettings(
        models=[
            {"name": "sd", "model": "x", "default": True},
            {"name": "schnell", "model": "s", "family": "flux-schnell", "gpu_class": "l40s"},
            {"name": "dev", "model": "d", "family": "flux-dev", "gpu_class": "l40s", "default_steps": 20},
            {"name": "klein", "model": "k", "family": "flux2-klein", "gpu_class": "l40s"},
            {"name": "sd35", "model": "t", "family": "sd3", "gpu_class": "h100"},
            {"name": "other", "model": "o", "family": "auto"},
        ],
        default_size="512x512",
    )


def _specs(**params: object):
    return build_image_specs(GenerationParams(prompt="a cat", **params), 1, _settings())


def test_each_family_brings_its_documented_defaults_and_an_entry_wins() -> None:
    settings = _settings()
    schnell, dev, sd = settings.for_model("schnell"), settings.for_model("dev"), settings.for_model("sd")
    assert (schnell.default_steps, schnell.default_guidance_scale) == (4, 0.0)
    assert schnell.default_scheduler == "flow_euler" and schnell.default_size == "1024x1024"
    assert (dev.default_steps, dev.default_guidance_scale) == (20, 3.5)  # the entry's steps win
    assert sd.default_scheduler == settings.default_scheduler and sd.default_steps == 30  # the app's
    assert settings.for_model("other").default_scheduler == "default"  # the checkpoint's own
    assert all(FAMILIES[f].cuda_dtype == "bfloat16" for f in ("sd3", "flux-dev", "flux2-klein"))


def test_a_one_model_config_guesses_the_family_from_the_hub_id() -> None:
    assert guess_family("black-forest-labs/FLUX.1-schnell") == "flux-schnell"
    assert guess_family("black-forest-labs/FLUX.1-dev") == "flux-dev"
    assert guess_family("stabilityai/stable-diffusion-3.5-large") == "sd3"
    assert guess_family("stable-diffusion-v1-5/stable-diffusion-v1-5") is None
    assert AppSettings(model="black-forest-labs/FLUX.2-klein-4B").catalogue.default.family == "flux2-klein"


def test_requests_get_the_family_defaults_and_400s_naming_the_field() -> None:
    (job,) = _specs(model="schnell")
    assert (job.steps, job.scheduler, job.width, job.true_cfg_scale) == (4, "flow_euler", 1024, 1.0)
    (job,) = _specs(model="dev", negative_prompt="blur", true_cfg_scale=2.5)
    assert job.true_cfg_scale == 2.5 and job.negative_prompt == "blur"
    refused = {
        "scheduler": dict(model="dev", scheduler="dpmpp_2m"),
        "negative_prompt": dict(model="dev", negative_prompt="blur"),  # FLUX.1 without true CFG
        "true_cfg_scale": dict(model="sd", true_cfg_scale=3.0),
    }
    for field, params in refused.items():
        with pytest.raises(InvalidRequestError) as caught:
            _specs(**params)
        assert caught.value.param == field
    with pytest.raises(InvalidRequestError) as caught:
        _specs(model="klein", negative_prompt="blur")
    assert caught.value.param == "negative_prompt" and "no negative prompt" in caught.value.message
    with pytest.raises(InvalidRequestError) as caught:
        _specs(model="sd", scheduler="flow_euler")
    assert caught.value.param == "scheduler" and "ddim" in caught.value.message
    # Guidance is accepted everywhere (distilled models ignore it, as diffusers does).
    assert _specs(model="schnell", guidance_scale=7.0)[0].guidance_scale == 7.0


def test_a_task_the_family_lacks_is_a_400_naming_the_image_field() -> None:
    catalogue = _settings().catalogue
    check_task(catalogue, "dev", "inpaint")
    check_task(catalogue, "sd35", "img2img")
    for model in ("klein", "other"):
        with pytest.raises(InvalidRequestError) as caught:
            check_task(catalogue, model, "img2img", "input.image")
        assert caught.value.param == "input.image" and caught.value.code == "task_not_supported"
    caps = catalogue.entry("klein").capabilities(False)
    assert caps["tasks"] == ["txt2img"] and caps["negative_prompt"] == "none"
    assert catalogue.entry("dev").capabilities(True)["schedulers"] == list(FLOW_SCHEDULERS)


def test_a1111_samplers_map_per_family() -> None:
    euler = resolve_sampler("Euler", None, None)
    assert for_family(euler, "sd15", "sd") == euler
    assert for_family(euler, "flux-dev", "dev").scheduler == "flow_euler"
    assert for_family(resolve_sampler("Euler", None, "Uniform"), "sd3", "t").scheduler == "flow_euler"
    assert for_family(euler, "auto", "other").scheduler == "default"
    with pytest.raises(InvalidRequestError) as caught:
        for_family(resolve_sampler("DPM++ 2M", None, None), "flux-schnell", "schnell")
    assert caught.value.param == "sampler_name" and "Euler (Automatic)" in caught.value.message
    assert isinstance(for_family(euler, "flux-dev", "dev"), ResolvedSampler)


def test_gpu_classes_are_one_deployment_each_and_start_with_their_first_model() -> None:
    catalogue = _settings().catalogue
    assert catalogue.gpu_classes == ["default", "l40s", "h100"]
    assert catalogue.models_of_class("l40s") == ["schnell", "dev", "klein"]
    assert catalogue.class_default("default") == "sd" and catalogue.class_default("h100") == "sd35"


@pytest.mark.parametrize(
    "entry",
    [
        {"family": "flux-dev", "default_scheduler": "euler_a"},
        {"family": "flux2-klein", "tasks": ["txt2img", "inpaint"]},
        {"family": "sd15", "tasks": ["img2img"]},
        {"quantization": {"backend": "torchao"}},  # torchao needs its quant_type
        {"gpu_class": "L40S!"},
        {"offload": "disk"},
    ],
)
def test_bad_family_options_fail_the_deploy(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AppSettings(models=[{"name": "m", "model": "x", **entry}])
