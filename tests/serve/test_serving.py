"""The serving core end to end: real Ray Serve, real HTTP over loopback, the tiny offline model."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
from fake_discord import DiscordSigner, FakeDiscord, snowflake
from ray import serve
from support import (
    assert_error_shape,
    decode_png,
    deploy_fixed_capacity_app,
    max_pixel_difference,
    serve_replicas,
    wait_for,
)

from serve_app.app import build_app, compose
from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent

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
    assert generate(client, prompt="a rendered image brings the replica's description").status_code == 200
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    (model,) = response.json()["data"]
    assert model["id"] == str(tiny_model_dir)
    # The setting is on, but the tiny model ships no checker: the listing says what runs.
    assert model["configured"]["safety_checker"] is True
    replica = model["replica"]
    assert replica["safety_checker"] is False and model["safety_checker"] is False
    assert replica["device"] == "cpu"
    assert replica["dtype"] == "float32"
    assert replica["attention"] == "sdpa"
    assert replica["max_batch_size"] == 8
    assert 0 <= replica["age_s"] < 120


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


def test_batch_log_splits_each_batch_into_its_stages(base: str) -> None:
    """Denoise on the pipeline thread, then decode, safety and encode in the finish stage (issue 23)."""
    started = time.time()
    responses = asyncio.run(concurrent_gets(base, [{"prompt": f"split {i}", "seed": i} for i in range(4)]))
    assert [r.status_code for r in responses] == [200] * 4
    batches = [b for b in model_handle().batch_log.remote().result() if b["at"] >= started]
    assert sum(b["size"] for b in batches) == 4
    for batch in batches:
        stages = batch["stages_s"]
        assert set(stages) == {"denoise", "decode", "safety", "encode"}, batch
        assert stages["denoise"] > 0 and stages["decode"] > 0 and stages["encode"] > 0, batch
        # The batch's wall time covers its denoise and its finish stage.
        assert batch["render_s"] >= batch["denoise_s"] > 0, batch


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
    tight_model = serve.get_deployment_handle("DiffusionModel", app_name="tight")
    with httpx.Client(base_url=tight_app, timeout=60) as http:
        started = time.time()
        slow = http.get("/imagine", params={"prompt": "slow", "steps": 500})
        assert slow.status_code == 504, slow.text
        assert_error_shape(slow.json())
        assert slow.json()["error"]["type"] == "timeout_error"
        # The replica's own record of that batch: it ended, and ran far fewer than its 500 steps.
        (abandoned,) = wait_for(
            lambda: [
                b
                for b in tight_model.batch_log.remote().result()
                if b["at"] >= started and b["steps"] == [500] and b["render_s"] is not None
            ],
            timeout_s=30,
            what="the abandoned 500-step batch to end",
        )
        assert 0 < abandoned["steps_done"][0] < 500, abandoned
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


def test_discord_route_without_configuration_is_503_saying_what_to_set(client: httpx.Client) -> None:
    response = client.post("/discord/interactions", content=b"{}")
    assert response.status_code == 503
    assert_error_shape(response.json())
    assert "DISCORD_PUBLIC_KEY" in response.json()["error"]["message"]


# --- /v1/models never calls a replica ------------------------------------------------------------------


def replicas_of(app_name: str) -> set[str]:
    return {actor["name"] for actor in serve_replicas(app_name)}


def deploy(settings: AppSettings, name: str, model_options: dict, ingress_options: dict | None = None) -> str:
    serve.run(compose(settings, model_options, ingress_options), name=name, route_prefix=f"/{name}")
    return name


def test_models_at_zero_replicas_answers_at_once_and_starts_no_replica(
    base: str, tiny_model_dir: Path
) -> None:
    settings = AppSettings(model=str(tiny_model_dir), default_size="64x64", model_name="cold-model")
    scale_to_zero = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1, "upscale_delay_s": 0}
    deploy(settings, "cold", {"autoscaling_config": scale_to_zero})
    try:
        started = time.monotonic()
        response = httpx.get(f"{base}/cold/v1/models", timeout=60)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert elapsed < 2, elapsed
        (model,) = response.json()["data"]
        assert model["id"] == "cold-model" and model["replica"] is None
        # Several autoscaler periods later, still nothing started: the call queued no request.
        watch_until = time.monotonic() + 5
        while time.monotonic() < watch_until:
            assert replicas_of("cold") == set()
            states = serve.status().applications["cold"].deployments["DiffusionModel"].replica_states
            assert sum(states.values()) == 0, states
            time.sleep(0.5)
    finally:
        serve.delete("cold")


def test_models_answers_while_the_model_queue_is_full(tight_app: str) -> None:
    async def run() -> tuple[httpx.Response, float, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=tight_app, timeout=60) as http:
            holders = [
                asyncio.create_task(http.get("/imagine", params={"prompt": f"hold {i}", "steps": 500}))
                for i in range(3)
            ]
            # One renders, one waits, the third is refused: the queue is full from then on.
            done, _ = await asyncio.wait(holders, return_when=asyncio.FIRST_COMPLETED)
            assert {task.result().status_code for task in done} == {503}
            started = time.monotonic()
            models = await http.get("/v1/models")
            elapsed = time.monotonic() - started
            return models, elapsed, list(await asyncio.gather(*holders))

    models, elapsed, holders = asyncio.run(run())
    assert models.status_code == 200, models.text
    assert elapsed < 1, elapsed
    assert {r.status_code for r in holders} <= {503, 504}


# --- progress, failures and the safety checker -------------------------------------------------------


def test_heun_progress_stays_within_the_requested_steps(base: str) -> None:
    """Heun runs 2n-1 iterations for n steps; progress is reported in the n steps asked for.

    Coalesced (issue 23): at most one event per iteration and a few per second, the last step always.
    """
    job = ImageSpec(prompt="heun", width=64, height=64, steps=3, guidance_scale=7.5, scheduler="heun", seed=1)
    events = list(model_handle().options(stream=True).generate_stream.remote(job))
    rendering = [e for e in events if isinstance(e, ProgressEvent) and e.state == "rendering"]
    assert 1 <= len(rendering) <= 5, rendering
    assert all(e.total == 3 and 1 <= e.step <= 3 for e in rendering), rendering
    assert [e.step for e in rendering] == sorted(e.step for e in rendering)
    assert rendering[-1].step == 3 and isinstance(events[-1], ImageResult)


@pytest.fixture(scope="module")
def broken_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a text encoder of the wrong width: it loads, and every render raises
    (like a replica with a broken CUDA context: alive, but never able to render)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    target = tmp_path_factory.mktemp("broken") / "tiny-sd-broken"
    shutil.copytree(tiny_model_dir, target)
    config = CLIPTextConfig.from_pretrained(str(tiny_model_dir / "text_encoder"))
    config.hidden_size, config.intermediate_size = 16, 20  # the UNet expects 32
    shutil.rmtree(target / "text_encoder")
    CLIPTextModel(config).save_pretrained(target / "text_encoder")
    return target


def test_a_replica_whose_renders_all_fail_is_replaced(base: str, broken_model_dir: Path) -> None:
    settings = AppSettings(
        model=str(broken_model_dir), default_size="64x64", default_steps=2, unhealthy_after_failed_renders=2
    )
    deploy(
        settings,
        "broken",
        {
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
            "health_check_period_s": 1,
            "health_check_timeout_s": 30,
        },
    )
    try:
        first = wait_for(lambda: replicas_of("broken"), 60, "the replica")
        for attempt in range(2):
            response = httpx.get(f"{base}/broken/imagine", params={"prompt": f"fail {attempt}"}, timeout=60)
            assert response.status_code == 500, response.text
            assert response.json()["error"]["code"] == "generation_failed"
        wait_for(
            lambda: (names := replicas_of("broken")) and first.isdisjoint(names),
            60,
            "Serve to replace the replica that cannot render",
        )
    finally:
        serve.delete("broken")


@pytest.fixture(scope="module")
def flagging_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model plus a real diffusers safety checker (tiny, random CLIP) whose thresholds
    every image clears: the real flagging path, deterministically."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), local_files_only=True)
    torch.manual_seed(0)
    tiny_clip = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1}
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(
            text_config=tiny_clip,
            vision_config={**tiny_clip, "image_size": 32, "patch_size": 8},
            projection_dim=32,
        )
    )
    checker.concept_embeds_weights.data.fill_(-2.0)  # below any cosine similarity: always flagged
    target = tmp_path_factory.mktemp("flagging") / "tiny-sd-flagging"
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=checker,
        feature_extractor=extractor,
        requires_safety_checker=True,
    ).save_pretrained(target)
    return target


def test_flagged_images_are_refused_and_the_checker_is_a_visible_setting(
    base: str, flagging_model_dir: Path, tmp_path: Path
) -> None:
    one_replica = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}
    discord, signer = FakeDiscord(), DiscordSigner()
    settings = AppSettings(
        model=str(flagging_model_dir),
        default_size="64x64",
        default_steps=2,
        data_dir=str(tmp_path),
        discord_public_key=signer.public_key_hex,
        discord_application_id="nsfw-app",
        discord_api_base_url=discord.url,
    )
    deploy(settings, "nsfw", one_replica)
    try:
        with httpx.Client(base_url=f"{base}/nsfw", timeout=60) as http:
            for response in (
                http.get("/imagine", params={"prompt": "anything"}),
                http.post("/v1/images/generations", json={"prompt": "anything", "n": 2}),
                http.post("/v1/images/generations", json={"prompt": "anything", "response_format": "url"}),
            ):
                assert response.status_code == 400, response.text
                assert_error_shape(response.json())
                assert response.json()["error"]["code"] == "content_policy_violation"
            (model,) = http.get("/v1/models").json()["data"]
            assert model["safety_checker"] is True and model["replica"]["safety_checker"] is True

            # An async job: failed with the reason, no output; its image records carry the flag.
            job = http.post("/v1/predictions", json={"input": {"prompt": "anything", "seed": 3}}).json()
            final = wait_for(
                lambda: (b := http.get(f"/v1/predictions/{job['id']}").json())["status"]
                in {"succeeded", "failed", "canceled"}
                and b,
                60,
                "the prediction to end",
            )
            assert final["status"] == "failed" and "safety checker" in final["error"], final
            assert final["output"] is None and final["nsfw_content_detected"] == [True]
            gallery = http.get("/v1/images", params={"limit": 100}).json()["data"]
            (record,) = [r for r in gallery if r["prediction_id"] == job["id"]]
            assert record["nsfw_content_detected"] is True

        # Discord: the deferred message is edited with a clear reason, not a black image.
        body = json.dumps(
            {
                "id": snowflake(),
                "application_id": "nsfw-app",
                "type": 2,
                "token": "nsfw-token",
                "member": {"user": {"id": "u1"}},
                "data": {"name": "imagine", "options": [{"name": "prompt", "type": 3, "value": "anything"}]},
            }
        ).encode()
        ack = httpx.post(f"{base}/nsfw/discord/interactions", content=body, headers=signer.headers(body))
        assert ack.json() == {"type": 5}, ack.text
        calls = discord.wait_for(
            lambda cs: any(c.json and "safety checker" in c.json.get("content", "") for c in cs),
            60,
            "the message saying the image was flagged",
        )
        assert not any(c.files for c in calls), "no image was attached"

        deploy(settings.model_copy(update={"safety_checker": False}), "nsfw", one_replica)
        with httpx.Client(base_url=f"{base}/nsfw", timeout=60) as http:
            image = http.get("/imagine", params={"prompt": "anything"})
            assert image.status_code == 200 and decode_png(image.content).shape == (64, 64, 3)
            (model,) = http.get("/v1/models").json()["data"]
            assert model["safety_checker"] is False and model["replica"]["safety_checker"] is False
    finally:
        serve.delete("nsfw")
        discord.close()


def test_ingress_backpressure_sends_the_configured_retry_after(base: str, tiny_model_dir: Path) -> None:
    """The proxy's own 503 (the ingress's queue is full) says retry_after_s like the app's 503s."""
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        max_steps=500,
        request_timeout_s=5,
        retry_after_s=9,
    )
    deploy(
        settings,
        "narrow",
        {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
        {"max_ongoing_requests": 1, "max_queued_requests": 1},
    )
    try:
        responses = asyncio.run(
            concurrent_gets(f"{base}/narrow", [{"prompt": f"narrow {i}", "steps": 100} for i in range(6)])
        )
        refused = [r for r in responses if r.status_code == 503]
        assert refused, [r.status_code for r in responses]
        assert {r.headers.get("retry-after") for r in refused} == {"9"}
    finally:
        serve.delete("narrow")


def test_reconfigure_changes_batch_size_live(base: str, tiny_model_dir: Path) -> None:
    """Last in the module: it leaves the app at max_batch_size 2 (no restore, which would cost
    another replica start: ``serve.run`` gives each run a new code version, so replicas restart;
    ``serve deploy`` of a changed user_config alone is the in-place path)."""
    serve.run(build_app(app_args(tiny_model_dir, max_batch_size=2)), name=APP, route_prefix="/")
    wait_for(
        lambda: model_handle().describe.remote().result()["max_batch_size"] == 2,
        timeout_s=60,
        what="max_batch_size 2",
    )
    started = time.time()
    responses = asyncio.run(concurrent_gets(base, [{"prompt": f"small {i}", "seed": i} for i in range(8)]))
    assert [r.status_code for r in responses] == [200] * 8
    sizes = [b["size"] for b in model_handle().batch_log.remote().result() if b["at"] >= started]
    assert sum(sizes) == 8 and max(sizes) == 2, sizes
