"""The model catalogue's pure logic: validation, request resolution, A1111's LoRA tags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import ImageSpec
from serve_app.core.model_choice import LoraRequest, canonical_loras, parse_lora_tags, resolve_model


def settings(**extra: object) -> AppSettings:
    return AppSettings.model_validate(
        {
            "models": [
                {"name": "sd", "model": "org/sd", "loras": [{"name": "ink", "source": "x", "weight": 0.6}]},
                {"name": "turbo", "model": "org/turbo", "family": "sd-turbo", "default": True},
                {"name": "xl", "model": "org/xl", "family": "sdxl", "default_size": "1024x1024"},
                {
                    "name": "sd2",
                    "model": "org/sd2",
                    "family": "sd2",
                    "loras": [{"name": "paper", "source": "y"}],
                },
            ],
            **extra,
        }
    )


def test_the_default_model_and_per_model_defaults() -> None:
    s = settings()
    assert s.catalogue.default.name == "turbo"
    assert resolve_model(s.catalogue, None).model == "turbo"
    turbo = s.for_model("turbo")
    assert (turbo.default_steps, turbo.default_guidance_scale, turbo.model) == (1, 0.0, "org/turbo")
    assert s.for_model("xl").default_dimensions == (1024, 1024)
    assert s.for_model("sd").default_steps == s.default_steps
    # Dedicated inpainting checkpoints belong to the default model only.
    with_inpainting = settings(inpainting_model="org/inpaint")
    assert with_inpainting.for_model("turbo").inpainting_model == "org/inpaint"
    assert with_inpainting.for_model("sd").inpainting_model is None


def test_loras_follow_the_architecture_not_the_entry() -> None:
    catalogue = settings().catalogue
    assert catalogue.loras_for("sd") == ["ink"]
    assert catalogue.loras_for("turbo") == ["paper"]  # SD-Turbo is a distilled SD 2.1
    assert catalogue.loras_for("xl") == []
    choice = resolve_model(catalogue, "sd", [LoraRequest(name="ink")])
    assert choice.loras == (("ink", 0.6),)  # the catalogue's weight when none is given


@pytest.mark.parametrize(
    ("model", "loras", "param", "text"),
    [
        ("nope", [], "model", "sd, turbo, xl, sd2"),
        ("sd", ["zzz"], "loras[0].name", "ink"),
        ("xl", ["ink"], "loras[0].name", "SD 1.5"),
        ("sd", ["ink:3"], "loras[0].weight", "between -2 and 2"),
        ("sd", ["ink", "ink:0.5"], "loras[1].name", "twice"),
        ("sd", ["ink", "ink", "ink", "ink", "ink"], "loras", "At most 4"),
    ],
)
def test_bad_choices_name_the_field(model: str, loras: list[str], param: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        resolve_model(settings().catalogue, model, [LoraRequest.model_validate(lora) for lora in loras])
    assert raised.value.param == param and text in raised.value.message, raised.value.message


@pytest.mark.parametrize(
    "models",
    [
        [{"name": "a", "model": "x"}, {"name": "a", "model": "y"}],
        [{"name": "a", "model": "x", "default": True}, {"name": "b", "model": "y", "default": True}],
        [{"name": "a", "model": "x", "default_size": "4096x4096"}],
        [
            {"name": "a", "model": "x", "loras": [{"name": "l", "source": "s"}]},
            {"name": "b", "model": "y", "loras": [{"name": "l", "source": "t"}]},
        ],
        [{"name": "a", "model": "x", "family": "sd4"}],
        # a sampler its family cannot run, a task it cannot do
        [{"name": "a", "model": "x", "family": "flux-dev", "default_scheduler": "ddim"}],
        [{"name": "a", "model": "x", "family": "flux2-klein", "tasks": ["txt2img", "img2img"]}],
    ],
)
def test_a_bad_catalogue_fails_the_deploy(models: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        AppSettings.model_validate({"models": models})


def test_equal_lora_sets_batch_together_and_zero_weights_drop_out() -> None:
    assert canonical_loras({"b": 0.5, "a": 1.0, "c": 0.0}) == (("a", 1.0), ("b", 0.5))
    job = ImageSpec("p", 64, 64, 4, 7.5, "ddim", seed=1, model="sd", loras=[["a", 1]])  # type: ignore[arg-type]
    assert job.loras == (("a", 1.0),)
    assert hash(job.group_key) == hash(
        ImageSpec("q", 64, 64, 4, 7.5, "ddim", seed=2, model="sd", loras=(("a", 1.0),)).group_key
    )
    other_model = ImageSpec("p", 64, 64, 4, 7.5, "ddim", seed=1, model="xl", loras=(("a", 1.0),))
    assert other_model.group_key != job.group_key


def test_a1111_lora_tags() -> None:
    prompt, loras = parse_lora_tags("a cat <lora:ink:0.7>, <lora:paper> on a mat <lora:x:1:0.5>")
    assert prompt == "a cat, on a mat"
    assert [(lora.name, lora.weight) for lora in loras] == [("ink", 0.7), ("paper", None), ("x", 1.0)]


def test_a_single_model_config_is_a_one_entry_catalogue() -> None:
    s = AppSettings(model="stabilityai/sd-turbo")
    assert s.catalogue.names == ["stabilityai/sd-turbo"]
    assert s.catalogue.default.family == "sd-turbo"
    assert s.for_model(None).default_steps == 1


def test_a_model_name_may_be_any_display_name() -> None:
    """Configs from before the catalogue named their one model freely (`model_name: SD 1.5`)."""
    assert AppSettings(model="org/sd", model_name="SD 1.5").catalogue.names == ["SD 1.5"]
    for bad in (" padded", "line\nbreak", ""):
        with pytest.raises(ValidationError):
            AppSettings.model_validate({"models": [{"name": bad, "model": "x"}]})
