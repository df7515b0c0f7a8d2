"""Request parameters into image specs: defaults, consecutive seeds, configured bounds."""

from __future__ import annotations

import pytest

from serve_app.api.openai.protocol import ImageGenerationRequest
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.params import GenerationParams, build_image_specs

SETTINGS = AppSettings(default_size="64x64", default_steps=10, max_steps=40, max_images=4)


def test_build_jobs_applies_defaults_and_consecutive_seeds() -> None:
    jobs = build_image_specs(ImageGenerationRequest(prompt="a cat", seed=10), 3, SETTINGS)
    assert [j.seed for j in jobs] == [10, 11, 12]
    assert {(j.width, j.height, j.steps, j.scheduler) for j in jobs} == {(64, 64, 10, "dpmpp_2m")}


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
