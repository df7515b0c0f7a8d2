"""Many models on one cluster: a catalogue, Ray Serve multiplexing, LoRAs per request.

Two tiny checkpoints with different random weights and a tiny LoRA, all built offline by
serve_app.testing.tiny_model and loaded through the same from_pretrained / load_lora_weights path real
checkpoints take. Two apps share the module's Serve: ``multi`` holds both models on one replica,
``evict`` may hold only one (max_models_per_replica: 1), so every switch unloads and reloads.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from ray import serve
from support import assert_error_shape, decode_png, max_pixel_difference

from serve_app.app import build_app
from serve_app.testing.tiny_model import save_tiny_model

STEPS = 4
# Batched and one-at-a-time renders of one seed differ by at most 1/255 on CPU float32
# (REFERENCE.md); a different model or an active LoRA moves pixels by tens of levels.
SAME = 2
DIFFERENT = 20


def catalogue_args(folder: Path, model_a: Path, max_models: int) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "tiny-a",
                "model": str(model_a),
                "default": True,
                "loras": [{"name": "tiny-ink", "source": str(folder / "lora"), "weight": 1.0}],
            },
            {"name": "tiny-b", "model": str(folder / "b"), "default_steps": STEPS},
            # Declared, never loaded: the "LoRA for another family" case needs an SDXL entry.
            {
                "name": "tiny-xl",
                "model": str(folder / "missing-xl"),
                "family": "sdxl",
                "loras": [{"name": "xl-style", "source": str(folder / "missing-xl-lora")}],
            },
        ],
        "max_models_per_replica": max_models,
        "data_dir": str(folder / f"data-{max_models}"),
        "max_loras_per_request": 1,
        "default_size": "64x64",
        "default_steps": STEPS,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
    }


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("catalogue")
    save_tiny_model(folder / "b", seed=7)
    save_tiny_model(folder / "lora", "lora")
    serve.run(build_app(catalogue_args(folder, tiny_model_dir, 2)), name="multi", route_prefix="/multi")
    serve.run(build_app(catalogue_args(folder, tiny_model_dir, 1)), name="evict", route_prefix="/evict")
    yield serve_url
    # Both at once: each deletion waits out Serve's graceful-shutdown loop; the module's clean-up
    # (tests/conftest.py) would wait them out one after the other.
    for app in ("multi", "evict"):
        serve.delete(app, _blocking=False)


def render(http: httpx.Client, app: str, seed: int, **extra: Any) -> Any:
    body = {"prompt": "a lighthouse at dusk", "seed": seed, "size": "64x64", "steps": STEPS, **extra}
    response = http.post(f"/{app}/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))


def burst(base: str, app: str, requests: list[dict[str, Any]]) -> list[Any]:
    def one(extra: dict[str, Any]) -> Any:
        with httpx.Client(base_url=base, timeout=300) as http:
            return render(http, app, **extra)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def model_handle(app: str) -> Any:
    return serve.get_deployment_handle("DiffusionModel", app_name=app)


MIXED = [
    {"seed": 11, "model": "tiny-a"},
    {"seed": 11, "model": "tiny-b"},
    {"seed": 11, "model": "tiny-a", "loras": [{"name": "tiny-ink", "weight": 1.0}]},
    {"seed": 12, "model": "tiny-a"},
    {"seed": 12, "model": "tiny-b"},
    {"seed": 12, "model": "tiny-a", "loras": [{"name": "tiny-ink", "weight": 1.0}]},
    {"seed": 13, "model": "tiny-b"},
    {"seed": 13, "model": "tiny-a"},
]


@pytest.fixture(scope="module")
def alone(base: str) -> list[Any]:
    """Each MIXED request rendered on its own by ``multi`` (the replica holding both models): what
    the burst test and the eviction test both compare with, rendered once for the two."""
    with httpx.Client(base_url=base, timeout=300) as http:
        return [render(http, "multi", **request) for request in MIXED]


def test_two_models_and_a_lora_in_one_burst_each_equal_rendering_alone(base: str, alone: list[Any]) -> None:
    handle = model_handle("multi")
    before = len(handle.batch_log.remote().result())
    together = burst(base, "multi", MIXED)
    batches = handle.batch_log.remote().result()[before:]
    for request, mixed, single in zip(MIXED, together, alone, strict=True):
        assert max_pixel_difference(mixed, single) <= SAME, request
    # Same seed, other model / LoRA: other pictures.
    assert max_pixel_difference(together[0], together[1]) >= DIFFERENT
    assert max_pixel_difference(together[0], together[2]) >= DIFFERENT
    # Per-model batches, none mixing models or LoRA sets, and real batching across callers.
    groups = [
        (models, loras, size)
        for batch in batches
        for models, loras, size in zip(batch["models"], batch["loras"], batch["groups"], strict=True)
    ]
    assert groups and all(len(models) == 1 and len(loras) == 1 for models, loras, _ in groups), groups
    assert max(size for _, _, size in groups) >= 2, groups
    assert {models[0] for models, _, _ in groups} == {"tiny-a", "tiny-b"}


def test_a_lora_at_weight_zero_is_the_base_model_and_at_one_is_not(base: str) -> None:
    with httpx.Client(base_url=base, timeout=300) as http:
        plain = render(http, "multi", seed=21)
        zero = render(http, "multi", seed=21, loras=[{"name": "tiny-ink", "weight": 0}])
        one = render(http, "multi", seed=21, loras=[{"name": "tiny-ink", "weight": 1}])
        default_weight = render(http, "multi", seed=21, loras=[{"name": "tiny-ink"}])  # catalogue: 1.0
        # The PNG route takes LoRAs as 'name:weight' query strings.
        png = http.get(
            "/multi/imagine",
            params={
                "prompt": "a lighthouse at dusk",
                "seed": 21,
                "steps": STEPS,
                "size": "64x64",
                "loras": "tiny-ink:1",
            },
        )
        assert png.status_code == 200, png.text
    assert max_pixel_difference(plain, zero) <= SAME
    assert max_pixel_difference(plain, one) >= DIFFERENT
    assert max_pixel_difference(one, default_weight) <= SAME
    assert max_pixel_difference(one, decode_png(png.content)) <= SAME


def test_eviction_with_one_model_per_replica_reloads_and_loses_nothing(base: str, alone: list[Any]) -> None:
    handle = model_handle("evict")
    loads_before = len(handle.load_log.remote().result())
    results = burst(base, "evict", MIXED)
    loads = handle.load_log.remote().result()[loads_before:]
    # Every request answered, each picture the same as the replica holding both models drew.
    for request, evicted, kept in zip(MIXED, results, alone, strict=True):
        assert max_pixel_difference(evicted, kept) <= SAME, request
    assert {load["model"] for load in loads} >= {"tiny-b"}, loads
    describe = handle.describe.remote().result()
    assert len(describe["models_loaded"]) == 1, describe


def test_models_listing_names_the_catalogue(base: str) -> None:
    client = OpenAI(base_url=f"{base}/multi/v1", api_key="unused")
    models = {model.id: model for model in client.models.list().data}
    assert set(models) == {"tiny-a", "tiny-b", "tiny-xl"}
    a = models["tiny-a"].model_dump()
    assert a["default"] is True and models["tiny-b"].model_dump()["default"] is False
    assert [lora["name"] for lora in a["loras"]] == ["tiny-ink"]
    assert models["tiny-xl"].model_dump()["loras"][0]["name"] == "xl-style"
    assert models["tiny-b"].model_dump()["defaults"]["steps"] == STEPS
    # The OpenAI SDK picks a model by name; the LoRA extension rides in extra_body.
    image = client.images.generate(
        model="tiny-b",
        prompt="a lighthouse at dusk",
        size="64x64",  # type: ignore[arg-type]
        extra_body={"seed": 11, "steps": STEPS},
    )
    with httpx.Client(base_url=base, timeout=300) as http:
        expected = render(http, "multi", seed=11, model="tiny-b")
        # The gallery record of a stored image names the model and LoRAs that drew it.
        stored = http.post(
            "/multi/v1/images/generations",
            json={"prompt": "x", "model": "tiny-a", "loras": ["tiny-ink:0.5"], "response_format": "url"},
        )
        assert stored.status_code == 200, stored.text
        (record,) = http.get("/multi/v1/images", params={"limit": 1}).json()["data"]
    assert max_pixel_difference(decode_png(base64.b64decode(image.data[0].b64_json or "")), expected) <= SAME
    assert record["model"] == "tiny-a" and record["loras"] == [{"name": "tiny-ink", "weight": 0.5}], record


@pytest.mark.parametrize(
    ("extra", "param", "mentions"),
    [
        ({"model": "tiny-c"}, "model", ["tiny-a", "tiny-b"]),
        ({"loras": [{"name": "nope"}]}, "loras[0].name", ["tiny-ink"]),
        ({"loras": [{"name": "xl-style"}]}, "loras[0].name", ["SDXL", "tiny-ink"]),
        ({"loras": [{"name": "tiny-ink"}, {"name": "tiny-ink"}]}, "loras", ["At most 1"]),
        ({"loras": [{"name": "tiny-ink", "weight": 5}]}, "loras[0].weight", ["between -2 and 2"]),
    ],
)
def test_bad_model_choices_are_400s_naming_the_field(
    base: str, extra: dict[str, Any], param: str, mentions: list[str]
) -> None:
    with httpx.Client(base_url=base, timeout=60) as http:
        response = http.post("/multi/v1/images/generations", json={"prompt": "x", **extra})
    assert response.status_code == 400, response.text
    body = response.json()
    assert_error_shape(body, param)
    for text in mentions:
        assert text in body["error"]["message"], body
