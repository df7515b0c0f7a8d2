"""The serving core end to end: real Ray Serve, real HTTP over loopback, the tiny offline model."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx
import openai
import pytest
from ray import serve
from support import assert_error_shape, decode_png, deploy_fixed_capacity_app, max_pixel_difference, wait_for

from serve_app.app import build_app
from serve_app.settings import AppSettings

APP = "sd"
API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
STEPS = 4


def app_args(model_dir: Path, **batching: float) -> dict:
    return {
        "model": str(model_dir),
        "default_size": "64x64",
        "default_steps": STEPS,
        "max_steps": 50,
        "max_images": 4,
        "max_prompt_chars": 2000,
        "api_keys": [API_KEY],
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2, **batching},
    }


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path) -> str:
    serve.run(build_app(app_args(tiny_model_dir)), name=APP, route_prefix="/")
    return serve_url


@pytest.fixture
def client(base: str) -> httpx.Client:
    with httpx.Client(base_url=base, timeout=120) as http:
        yield http


def model_handle() -> serve.handle.DeploymentHandle:
    return serve.get_deployment_handle("DiffusionModel", app_name=APP)


def generate(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/images/generations", json=body, headers=AUTH)


async def concurrent_gets(base: str, requests: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=180, limits=httpx.Limits(max_connections=64)) as http:
        return await asyncio.gather(
            *(http.get("/imagine", params=params, headers=AUTH) for params in requests)
        )


# --- happy paths -------------------------------------------------------------------------------


def test_healthz_needs_no_key(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_imagine_returns_png_of_requested_size(client: httpx.Client) -> None:
    response = client.get(
        "/imagine", params={"prompt": "a red fox", "size": "96x64", "seed": 7}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "7"
    assert decode_png(response.content).shape == (64, 96, 3)


def test_openai_route_returns_n_images_with_consecutive_seeds(client: httpx.Client) -> None:
    response = generate(client, prompt="a lighthouse", n=3, size="64x80", seed=41)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["created"], int)
    assert [item["seed"] for item in body["data"]] == [41, 42, 43]
    for item in body["data"]:
        assert item["revised_prompt"] == "a lighthouse"
        assert decode_png(base64.b64decode(item["b64_json"])).shape == (80, 64, 3)


def test_random_seed_is_returned_and_reproduces_the_image(client: httpx.Client) -> None:
    first = generate(client, prompt="a boat").json()["data"][0]
    again = generate(client, prompt="a boat", seed=first["seed"]).json()["data"][0]
    assert again["seed"] == first["seed"]
    a = decode_png(base64.b64decode(first["b64_json"]))
    b = decode_png(base64.b64decode(again["b64_json"]))
    assert max_pixel_difference(a, b) <= 1


def test_official_openai_sdk(base: str) -> None:
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)
    result = sdk.images.generate(prompt="a cat", n=2, size="64x64", response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert decode_png(base64.b64decode(item.b64_json)).shape == (64, 64, 3)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.images.generate(prompt="a cat", n=2, size="63x64")
    assert raised.value.body["param"] == "size"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).images.generate(prompt="a cat")


def test_models_reports_device_and_batching(client: httpx.Client, tiny_model_dir: Path) -> None:
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    (model,) = response.json()["data"]
    assert model["id"] == str(tiny_model_dir)
    assert model["device"] == "cpu"
    assert model["dtype"] == "float32"
    assert model["attention"] == "sdpa"
    assert model["max_batch_size"] == 8


# --- determinism and batching ------------------------------------------------------------------


def test_same_seed_same_image_and_different_seeds_differ(client: httpx.Client) -> None:
    def image(seed: int) -> object:
        response = client.get("/imagine", params={"prompt": "a tree", "seed": seed}, headers=AUTH)
        assert response.status_code == 200
        return decode_png(response.content)

    a, b, c = image(1234), image(1234), image(1235)
    assert max_pixel_difference(a, b) <= 1
    assert max_pixel_difference(a, c) > 10


def test_concurrent_mixed_requests_each_get_their_own_parameters(base: str) -> None:
    """Different sizes, steps, guidance and schedulers in flight together: grouping must not mix them.

    Each image is compared with the same request rendered alone, so a job rendered with another
    job's size, steps, scheduler or seed would fail the comparison.
    """
    requests = [
        {"prompt": "a", "size": "64x64", "steps": 3, "seed": 1},
        {"prompt": "b", "size": "96x64", "steps": 3, "seed": 2},
        {"prompt": "c", "size": "64x64", "steps": 5, "seed": 3},
        {"prompt": "d", "size": "64x64", "steps": 3, "seed": 4, "scheduler": "euler_a"},
        {"prompt": "e", "size": "64x64", "steps": 3, "seed": 5, "guidance_scale": 2.0},
        {"prompt": "f", "size": "64x64", "steps": 3, "seed": 6},
        {"prompt": "g", "size": "64x96", "steps": 5, "seed": 7, "scheduler": "DPM++ 2M"},
    ]
    alone = []
    for params in requests:
        (response,) = asyncio.run(concurrent_gets(base, [params]))
        assert response.status_code == 200, response.text
        alone.append(decode_png(response.content))
    together = asyncio.run(concurrent_gets(base, requests))
    for params, expected, response in zip(requests, alone, together, strict=True):
        assert response.status_code == 200, response.text
        width, height = (int(side) for side in params["size"].split("x"))
        image = decode_png(response.content)
        assert image.shape == (height, width, 3)
        assert response.headers["x-seed"] == str(params["seed"])
        assert max_pixel_difference(image, expected) <= 1, params


def test_burst_is_served_in_batches_larger_than_one(base: str) -> None:
    started = time.time()
    responses = asyncio.run(concurrent_gets(base, [{"prompt": f"burst {i}", "seed": i} for i in range(16)]))
    assert [r.status_code for r in responses] == [200] * 16
    batches = [b for b in model_handle().batch_log.remote().result() if b["at"] >= started]
    sizes = [b["size"] for b in batches]
    assert sum(sizes) == 16, sizes
    assert max(sizes) > 1, sizes
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1


# --- bad input ---------------------------------------------------------------------------------

BAD_BODIES = [
    ({"n": 1}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "x", "negative_prompt": "y" * 2001}, "negative_prompt"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 5}, "n"),
    ({"prompt": "x", "n": "two"}, "n"),
    ({"prompt": "x", "size": "big"}, "size"),
    ({"prompt": "x", "size": "65x64"}, "size"),
    ({"prompt": "x", "size": "2048x2048"}, "size"),
    ({"prompt": "x", "size": "32x32"}, "size"),
    ({"prompt": "x", "response_format": "gif"}, "response_format"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "steps": 51}, "steps"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "x", "seed": -2}, "seed"),
    ({"prompt": "x", "seed": 2**32}, "seed"),
    ({"prompt": "x", "scheduler": "warp-drive"}, "scheduler"),
    ({"prompt": "x", "colour": "blue"}, "colour"),
    ({"prompt": 12}, "prompt"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES, ids=[p for _, p in BAD_BODIES])
def test_bad_json_field_is_400_naming_it(client: httpx.Client, body: dict, param: str) -> None:
    response = generate(client, **body)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param)
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"", "application/json"),
        (b"prompt=x", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_body_is_400_not_500(client: httpx.Client, content: bytes, content_type: str) -> None:
    response = client.post(
        "/v1/images/generations",
        content=content,
        headers={**AUTH, "Content-Type": content_type},
    )
    assert response.status_code == 400, response.text
    assert_error_shape(response.json())


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "prompt"),
        ({"prompt": "x", "steps": "many"}, "steps"),
        ({"prompt": "x", "size": "1x1"}, "size"),
        ({"prompt": "x", "sise": "64x64"}, "sise"),
    ],
)
def test_bad_imagine_query_is_400_naming_it(client: httpx.Client, params: dict, param: str) -> None:
    response = client.get("/imagine", params=params, headers=AUTH)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEY}, {"Authorization": "Basic x"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_api_key_required(client: httpx.Client, headers: dict) -> None:
    for response in (
        client.post("/v1/images/generations", json={"prompt": "x"}, headers=headers),
        client.get("/imagine", params={"prompt": "x"}, headers=headers),
        client.get("/v1/models", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error_shape(response.json())
        assert response.json()["error"]["type"] == "authentication_error"


def test_unknown_route_is_404_in_error_shape(client: httpx.Client) -> None:
    response = client.get("/v2/nothing")
    assert response.status_code == 404
    assert_error_shape(response.json())


# --- overload, timeouts, live reconfiguration ----------------------------------------------------


@pytest.fixture(scope="module")
def tight_app(base: str, tiny_model_dir: Path) -> str:
    """A second app whose model takes one request at a time and queues one: easy to overload."""
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=20,
        max_steps=500,
        request_timeout_s=4,
        retry_after_s=7,
    )
    deploy_fixed_capacity_app(settings, "tight", "/tight", in_flight=1, queued=1)
    return f"{base}/tight"


def test_full_queue_overflows_into_503_with_retry_after(tight_app: str) -> None:
    responses = asyncio.run(
        concurrent_gets(tight_app, [{"prompt": f"load {i}", "seed": i} for i in range(8)])
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1, statuses
    assert statuses.count(503) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers.get("retry-after") == "7", (response.headers, response.text)
            assert_error_shape(response.json())
            assert response.json()["error"]["type"] == "overloaded_error"
        else:
            assert decode_png(response.content).shape == (64, 64, 3)


def test_slow_request_times_out_with_504_and_frees_the_replica(tight_app: str) -> None:
    with httpx.Client(base_url=tight_app, timeout=60) as http:
        slow = http.get("/imagine", params={"prompt": "slow", "steps": 500})
        assert slow.status_code == 504, slow.text
        assert_error_shape(slow.json())
        assert slow.json()["error"]["type"] == "timeout_error"
        # A render nobody waits for is interrupted between steps, so the single replica is
        # soon free again: a small request succeeds within its own 4 s deadline.
        quick = wait_for(
            lambda: (
                (r := http.get("/imagine", params={"prompt": "quick", "steps": 2})).status_code == 200 and r
            ),
            timeout_s=30,
            what="the replica to be free after the timed-out render",
        )
        assert decode_png(quick.content).shape == (64, 64, 3)


def test_reconfigure_changes_batch_size_live(base: str, tiny_model_dir: Path) -> None:
    serve.run(build_app(app_args(tiny_model_dir, max_batch_size=2)), name=APP, route_prefix="/")
    try:
        wait_for(
            lambda: model_handle().describe.remote().result()["max_batch_size"] == 2,
            timeout_s=60,
            what="max_batch_size 2",
        )
        started = time.time()
        responses = asyncio.run(
            concurrent_gets(base, [{"prompt": f"small {i}", "seed": i} for i in range(8)])
        )
        assert [r.status_code for r in responses] == [200] * 8
        sizes = [b["size"] for b in model_handle().batch_log.remote().result() if b["at"] >= started]
        assert sum(sizes) == 8 and max(sizes) == 2, sizes
    finally:
        serve.run(build_app(app_args(tiny_model_dir)), name=APP, route_prefix="/")


def test_discord_route_without_configuration_is_503_saying_what_to_set(client: httpx.Client) -> None:
    response = client.post("/discord/interactions", content=b"{}")
    assert response.status_code == 503
    assert_error_shape(response.json())
    assert "DISCORD_PUBLIC_KEY" in response.json()["error"]["message"]
