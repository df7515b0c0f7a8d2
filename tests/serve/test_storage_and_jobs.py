"""Stored images, the gallery, async predictions and secrets, on the local store and on S3.

S3 and Secrets Manager are moto's standalone server over real HTTP; the same tests run against an
app with the local store and one with the S3 store. Webhooks go to a local recording server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
import ray
from fake_discord import FakeDiscord, ScriptedAnswer
from PIL import Image
from ray import serve
from support import (
    HangingServer,
    assert_error_shape,
    decode_png,
    deploy_fixed_capacity_app,
    kill_serve_replica,
    max_pixel_difference,
    serve_replicas,
    wait_for,
)

from serve_app.app import build_app, compose
from serve_app.config.settings import AppSettings
from serve_app.core.image_inputs import image_specs
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.jobs.records import JobStore, new_record
from serve_app.storage import LocalImageStore

BUCKET = "raydiffusion-images"
SECRET_ID = "raydiffusion/prod"
SECRET_KEY = "key-from-secrets-manager"
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> str:
    """The run's moto (in the environment before Ray started, so replicas reach it too)."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("secretsmanager").create_secret(
        Name=SECRET_ID, SecretString=json.dumps({"RAYDIFFUSION_API_KEYS": SECRET_KEY})
    )
    return moto_endpoint


@pytest.fixture(scope="module")
def serve_url(aws: str, serve_url: str) -> str:
    return serve_url


@pytest.fixture(scope="module")
def hooks() -> Iterator[FakeDiscord]:
    server = FakeDiscord()  # a plain recording HTTP server serves as the webhook receiver too
    yield server
    server.close()


def args(model_dir: Path, **extra: object) -> dict:
    return {
        "model": str(model_dir),
        "default_size": "64x64",
        "default_steps": 4,
        "max_steps": 300,
        "webhook_retry_initial_s": 0.1,
        # The webhook receivers here listen on loopback, which webhooks may not reach by default.
        "webhook_allowed_hosts": ["127.0.0.1"],
        "prediction_stale_s": 3,
        "prediction_sweep_interval_s": 1,
        **extra,
    }


@pytest.fixture(scope="module")
def apps(serve_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    local_dir = tmp_path_factory.mktemp("store")
    serve.run(build_app(args(tiny_model_dir, data_dir=str(local_dir))), name="local", route_prefix="/local")
    serve.run(
        build_app(
            args(
                tiny_model_dir,
                image_store="s3",
                s3_bucket=BUCKET,
                s3_prefix="prod",
                api_keys=["env-key"],
                secrets_manager_secret_id=SECRET_ID,
            )
        ),
        name="s3",
        route_prefix="/s3",
    )
    return {
        "local": {"base": f"{serve_url}/local", "headers": {}, "dir": local_dir},
        "s3": {"base": f"{serve_url}/s3", "headers": {"Authorization": f"Bearer {SECRET_KEY}"}},
    }


@pytest.fixture(params=["local", "s3"])
def app(request: pytest.FixtureRequest, apps: dict[str, dict]) -> dict:
    return {"kind": request.param, **apps[request.param]}


def client_for(app: dict) -> httpx.Client:
    return httpx.Client(base_url=app["base"], headers=app["headers"], timeout=120)


def wait_terminal(http: httpx.Client, prediction_id: str, timeout_s: float = 120) -> dict:
    return wait_for(
        lambda: (body := http.get(f"/v1/predictions/{prediction_id}").json())["status"] in TERMINAL and body,
        timeout_s,
        f"prediction {prediction_id} to finish",
    )


def raw_request(app: dict, method: str, path: str) -> tuple[int, bytes]:
    """One request with the path exactly as given (http.client sends it verbatim)."""
    url = httpx.URL(app["base"])
    connection = HTTPConnection(url.host, url.port, timeout=30)
    try:
        connection.request(method, f"{url.path.rstrip('/')}{path}", headers=app["headers"])
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stored_record(app: dict, image_id: str) -> dict:
    if app["kind"] == "local":
        return json.loads((app["dir"] / "images" / f"{image_id}.json").read_text())
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"prod/images/{image_id}.json")["Body"].read()
    return json.loads(body)


# --- url responses and records -------------------------------------------------------------------


def test_url_response_serves_the_png_and_keeps_a_record(app: dict) -> None:
    with client_for(app) as http:
        response = http.post(
            "/v1/images/generations",
            json={"prompt": "a harbour", "n": 2, "size": "64x96", "seed": 21, "response_format": "url"},
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [d["seed"] for d in data] == [21, 22]
        for item in data:
            assert item["b64_json"] is None
            image = httpx.get(item["url"], timeout=30)  # no API key: the URL itself grants access
            assert image.status_code == 200
            assert decode_png(image.content).shape == (96, 64, 3)
            image_id = item["url"].split("/")[-1].split(".png")[0]
            record = stored_record(app, image_id)
            assert record["prompt"] == "a harbour" and record["seed"] == item["seed"]
            assert (record["width"], record["height"], record["steps"]) == (64, 96, 4)
            assert record["model"] and record["timings"]["render_s"] > 0


def test_unknown_image_is_404(apps: dict) -> None:
    response = httpx.get(f"{apps['local']['base']}/images/img_0000000000000deadbeef00.png")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_gallery_lists_newest_first_with_a_cursor(app: dict) -> None:
    with client_for(app) as http:
        prompts = [f"gallery {app['kind']} {i}" for i in range(5)]
        for prompt in prompts:
            response = http.post("/v1/images/generations", json={"prompt": prompt, "response_format": "url"})
            assert response.status_code == 200
        seen: list[dict] = []
        cursor = None
        while True:
            page = http.get(
                "/v1/images", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            assert len(page["data"]) <= 2
            seen.extend(page["data"])
            cursor = page["next_cursor"]
            assert page["has_more"] == (cursor is not None)
            if cursor is None:
                break
        ids = [item["id"] for item in seen]
        assert len(ids) == len(set(ids)), "no image twice across pages"
        # Ids order by creation millisecond; within one millisecond the order is arbitrary.
        created_ms = [int(item["created"] * 1000) for item in seen]
        assert created_ms == sorted(created_ms, reverse=True), "newest first"
        ours = [item["prompt"] for item in seen if item["prompt"] in prompts]
        assert ours == list(reversed(prompts))
        assert httpx.get(seen[0]["url"], timeout=30).status_code == 200
        assert http.get("/v1/images", params={"limit": 0}).status_code == 400
        assert http.get("/v1/images", params={"cursor": "../etc"}).status_code == 400


# --- predictions -----------------------------------------------------------------------------------


def test_prediction_lifecycle_to_succeeded(app: dict) -> None:
    with client_for(app) as http:
        created = http.post("/v1/predictions", json={"input": {"prompt": "a kite", "n": 2, "seed": 5}})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] in {"starting", "processing"}
        assert body["seeds"] == [5, 6]
        assert created.headers["location"] == body["urls"]["get"]
        assert body["urls"]["cancel"].endswith(f"/v1/predictions/{body['id']}/cancel")
        done = wait_terminal(http, body["id"])
        assert done["status"] == "succeeded", done
        # Both images' steps added up, and each image's own (n: 2, 4 steps each).
        assert done["progress"] == {"step": 8, "total": 8, "images": [{"step": 4, "total": 4}] * 2}
        assert done["metrics"]["predict_time"] > 0 and done["completed_at"] and done["started_at"]
        assert len(done["output"]) == 2
        for url in done["output"]:
            assert decode_png(httpx.get(url, timeout=30).content).shape == (64, 64, 3)


def test_prediction_input_is_validated_like_every_other_request(app: dict) -> None:
    with client_for(app) as http:
        for body, param in [
            ({"input": {"prompt": "x", "steps": 0}}, "input.steps"),
            ({"input": {"prompt": "x", "size": "7x7"}}, "size"),
            ({"input": {}}, "input.prompt"),
            ({"input": {"prompt": "x"}, "webhook": "not a url"}, "webhook"),
            ({"input": {"prompt": "x"}, "webhook": "http://169.254.169.254/latest/meta-data/"}, "webhook"),
            ({"input": {"prompt": "x"}, "webhook": "http://10.1.2.3/hook"}, "webhook"),
            ({"input": {"prompt": "x"}, "webhook": "http://[::1]:9/hook"}, "webhook"),
            ({"prompt": "x"}, "input"),
        ]:
            response = http.post("/v1/predictions", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["param"] == param, response.json()
        assert http.get("/v1/predictions/pred_doesnotexist").status_code == 404
        # Sent as written: httpx would normalise the dots away before they reach the server.
        for method, raw_path in [
            ("POST", "/v1/predictions/../../etc/cancel"),
            ("POST", "/v1/predictions/..%2F..%2Fetc/cancel"),
            ("GET", "/v1/predictions/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
            ("GET", "/v1/predictions/pred_..%2F..%2Fpredictions-active"),
        ]:
            status, body = raw_request(app, method, raw_path)
            assert status == 404, (raw_path, status, body)
            assert set(json.loads(body)) == {"error"}, body
        # Longer than any file name may be: unknown (404), not a storage failure (503).
        overlong = "pred_" + "a" * 246
        assert http.get(f"/v1/predictions/{overlong}").status_code == 404
        assert http.post(f"/v1/predictions/{overlong}/cancel").status_code == 404


def noise_png(seed: int, size: int = 64) -> bytes:
    pixels = (np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def edited(http: httpx.Client, png: bytes, **fields: object) -> np.ndarray:
    """The same job through the OpenAI edits API: what the prediction must have rendered."""
    response = http.post(
        "/v1/images/edits",
        data={"prompt": "a boat", **{k: str(v) for k, v in fields.items()}},
        files={"image": ("image.png", png, "image/png")},
    )
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))


def succeeded_image(app: dict, http: httpx.Client, body: dict) -> tuple[dict, np.ndarray, dict]:
    """Run a prediction to success; its image and the stored image's record."""
    created = http.post("/v1/predictions", json=body)
    assert created.status_code == 201, created.text
    done = wait_terminal(http, created.json()["id"])
    assert done["status"] == "succeeded", done
    (url,) = done["output"]
    image_id = url.split("/")[-1].split(".png")[0]
    return done, decode_png(httpx.get(url, timeout=30).content), stored_record(app, image_id)


def test_predictions_start_from_a_data_url_or_a_stored_image(app: dict) -> None:
    picture = noise_png(11)
    with client_for(app) as http:
        done, image, record = succeeded_image(
            app, http, {"input": {"prompt": "a boat", "image": data_url(picture), "strength": 0.5, "seed": 3}}
        )
        assert (record["kind"], record["strength"]) == ("img2img", 0.5)
        assert (done["input"]["kind"], done["input"]["strength"]) == ("img2img", 0.5)
        assert len(done["input"]["image"]) < 100  # the data URL is not echoed whole
        same = edited(http, picture, seed=3, strength=0.5, size="64x64")
        assert max_pixel_difference(image, same) <= 1
        assert max_pixel_difference(image, edited(http, noise_png(12), seed=3, strength=0.5)) > 10

        # A URL this service handed out (on S3: the store's own presigned URL) is read from the store.
        stored = http.post(
            "/v1/images/generations", json={"prompt": "a dock", "seed": 8, "response_format": "url"}
        ).json()["data"][0]["url"]
        done, image, record = succeeded_image(
            app, http, {"input": {"prompt": "a boat", "init_image": stored, "seed": 4}}
        )
        assert (record["kind"], record["strength"]) == ("img2img", 0.75)  # default_strength
        assert done["input"]["image"] == stored
        source = httpx.get(stored, timeout=30).content
        assert max_pixel_difference(image, edited(http, source, seed=4, strength=0.75)) <= 1

        # Upscale: twice the picture's size, a low-strength pass (upscale_strength).
        done, image, record = succeeded_image(
            app, http, {"input": {"prompt": "a boat", "image": stored, "upscale": True, "seed": 5}}
        )
        assert image.shape == (128, 128, 3)
        assert (record["kind"], record["strength"], done["input"]["size"]) == ("upscale", 0.3, "128x128")


def test_prediction_image_inputs_are_only_data_urls_or_our_own_images(app: dict, fake: FakeDiscord) -> None:
    with client_for(app) as http:
        stored = http.post(
            "/v1/images/generations", json={"prompt": "a dock", "response_format": "url"}
        ).json()["data"][0]["url"]
        image_id = stored.split("/")[-1].split(".png")[0]
        png = noise_png(1)
        # A live server holding real PNGs, our file name included: a regression that fetched
        # them would find images there, so "nothing fetched" is a count of its requests.
        elsewhere = fake.host(f"/images/{image_id}.png", png)
        admin = fake.host("/admin.png", png)
        for extra, param in [
            ({"image": elsewhere}, "input.image"),  # our file name on another host: not ours
            ({"image": admin}, "input.image"),
            ({"image": "http://169.254.169.254/latest/meta-data/"}, "input.image"),
            ({"init_image": "file:///etc/passwd"}, "input.init_image"),
            ({"image": "/images/img_0000000000000deadbeef00.png"}, "input.image"),  # no such image
            ({"image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "input.image"),  # not an image
            ({"image": stored, "strength": 1.5}, "input.strength"),
            ({"image": stored, "mask": elsewhere}, "input.mask"),
            ({"mask": stored}, "input.mask"),  # a mask needs an image
            ({"upscale": True}, "input.upscale"),
            ({"image": stored, "size": "2048x2048"}, "size"),
        ]:
            response = http.post("/v1/predictions", json={"input": {"prompt": "x", **extra}})
            assert response.status_code == 400, (extra, response.text)
            assert_error_shape(response.json(), param=param)
    assert fake.calls_to("/images/") == [] and fake.calls_to("/admin.png") == []


def test_progress_then_cancel_interrupts_the_render(app: dict) -> None:
    receiver = HangingServer()  # a webhook that never answers: the cancel must not wait for it
    with client_for(app) as http:
        body = http.post(
            "/v1/predictions",
            json={"input": {"prompt": "long", "steps": 300}, "webhook": f"{receiver.url}/hook"},
        ).json()
        running = wait_for(
            lambda: (
                (b := http.get(f"/v1/predictions/{body['id']}").json())["progress"]
                and b["progress"]["step"] > 0
                and b
            ),
            60,
            "progress to be reported",
        )
        assert running["status"] == "processing" and running["progress"]["total"] == 300
        started = time.monotonic()
        canceled = http.post(f"/v1/predictions/{body['id']}/cancel")
        cancel_s = time.monotonic() - started
        canceled_at = time.time()
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled", canceled.json()  # answered at once, final
        assert cancel_s < 3.0, cancel_s
        final = http.get(f"/v1/predictions/{body['id']}").json()
        assert final["status"] == "canceled" and final["output"] is None
        # The render itself stopped: the model's batch of 300 steps ended right after the cancel,
        # not when its remaining steps (most of them) would have been rendered.
        handle = serve.get_deployment_handle("DiffusionModel", app_name=app["kind"])
        batch = wait_for(
            lambda: (
                (b := [e for e in handle.batch_log.remote().result() if e["at"] <= canceled_at][-1])[
                    "render_s"
                ]
                is not None
                and b
            ),
            30,
            "the canceled batch to end",
        )
        assert batch["at"] + batch["render_s"] < canceled_at + 3.0, (batch, canceled_at)
        # The replica is free again: a short job completes promptly.
        quick = http.post("/v1/predictions", json={"input": {"prompt": "after cancel", "steps": 2}}).json()
        assert wait_terminal(http, quick["id"], 60)["status"] == "succeeded"
    receiver.close()


def test_webhook_is_delivered_after_receiver_failures(apps: dict, hooks: FakeDiscord) -> None:
    hooks.fail_next("/hook", ScriptedAnswer(500, {}), ScriptedAnswer(503, {}))
    with client_for({"base": apps["local"]["base"], "headers": {}}) as http:
        body = http.post(
            "/v1/predictions",
            json={
                "input": {"prompt": "call me", "seed": 8},
                "webhook": f"{hooks.url.removesuffix('/api/v10')}/hook",
            },
        ).json()
        calls = hooks.wait_for(lambda calls: any(c.status == 200 for c in calls), 60, "the webhook")
        assert [c.status for c in calls if "/hook" in c.path] == [500, 503, 200]
        delivered = calls[-1].json
        assert delivered["id"] == body["id"] and delivered["status"] == "succeeded"
        assert delivered["output"] and decode_png(
            httpx.get(delivered["output"][0], timeout=30).content
        ).shape == (64, 64, 3)


def test_replica_killed_mid_job_is_retried_and_succeeds(
    apps: dict, record_property: Callable[[str, object], None]
) -> None:
    """The render's replica dies: the job is retried once with the same seed and succeeds (what
    RELIABILITY.md reports); a failure here is a failure, not an accepted outcome."""
    with client_for({"base": apps["local"]["base"], "headers": {}}) as http:
        body = http.post(
            "/v1/predictions", json={"input": {"prompt": "fragile", "steps": 150, "seed": 3}}
        ).json()
        wait_for(
            lambda: (
                (b := http.get(f"/v1/predictions/{body['id']}").json())["progress"]
                and b["progress"]["step"] > 0
            ),
            60,
            "the render to start",
        )
        (replica,) = serve_replicas("local")
        kill_serve_replica(replica)
        final = wait_terminal(http, body["id"], 180)
        record_property(
            "figure:replica_killed_mid_job",
            {"status": final["status"], "attempts": final["attempts"],
             "summary": f"{final['status']} on attempt {final['attempts']}"},
        )
        assert (final["status"], final["attempts"]) == ("succeeded", 2), final
        assert decode_png(httpx.get(final["output"][0], timeout=30).content).shape == (64, 64, 3)


def test_records_survive_an_ingress_restart_and_stale_jobs_are_adopted(apps: dict) -> None:
    local = apps["local"]
    with client_for({"base": local["base"], "headers": {}}) as http:
        done = http.post("/v1/predictions", json={"input": {"prompt": "durable"}}).json()
        first = wait_terminal(http, done["id"])
        assert first["status"] == "succeeded"
        # Restart the ingress (its replica dies, Serve starts a new one): the finished job is still
        # there. Only the ingress restarts: a redeploy would restart the model replica too.
        (ingress,) = serve_replicas("local", "Ingress")
        kill_serve_replica(ingress)
        wait_for(
            lambda: [r for r in serve_replicas("local", "Ingress") if r["name"] != ingress["name"]],
            120,
            "Serve to start a new ingress replica",
        )
        again = wait_for(
            lambda: (r := http.get(f"/v1/predictions/{done['id']}")).status_code == 200 and r.json(),
            120,
            "the restarted ingress",
        )
        assert again["status"] == "succeeded" and again["output"] == first["output"]
        # An in-flight job whose ingress died: running, silent for a minute, one attempt used.
        orphan_id = "pred_orphan0000000000001"
        orphan = {
            "id": orphan_id,
            "status": "processing",
            "source": "api",
            "input": {"prompt": "orphan", "n": 1},
            "jobs": [
                {
                    "prompt": "orphan",
                    "width": 64,
                    "height": 64,
                    "steps": 3,
                    "guidance_scale": 7.5,
                    "scheduler": "ddim",
                    "seed": 77,
                    "negative_prompt": "",
                }
            ],
            "created_at": time.time() - 120,
            "started_at": time.time() - 110,
            "heartbeat_at": time.time() - 60,
            "attempts": 1,
        }
        (local["dir"] / "predictions").mkdir(exist_ok=True)
        (local["dir"] / "predictions" / f"{orphan_id}.json").write_text(json.dumps(orphan))
        (local["dir"] / "predictions-active").mkdir(exist_ok=True)
        (local["dir"] / "predictions-active" / f"{orphan_id}.json").write_text(json.dumps({"id": orphan_id}))

        adopted = wait_terminal(http, orphan_id, 120)
        assert adopted["status"] == "succeeded", adopted
        assert adopted["attempts"] == 2 and adopted["seeds"] == [77]


def test_an_adopted_image_job_renders_the_same_image(apps: dict, tiny_model_dir: Path) -> None:
    """The record round trip: written by one process, its input image read back by the adopter."""
    local = apps["local"]
    picture = noise_png(21)
    with client_for({"base": local["base"], "headers": {}}) as http:
        body = {"input": {"prompt": "kept", "image": data_url(picture), "strength": 0.6, "seed": 9}}
        _, fresh, _ = succeeded_image({"kind": "local", **local}, http, body)
        # The same job, accepted by "another ingress" that died at once: silent, one attempt used.
        # The app's own settings: the job names the app's model, as one its other ingress wrote would.
        settings = AppSettings.model_validate(args(tiny_model_dir, data_dir=str(local["dir"])))
        params = GenerationParams(prompt="kept", seed=9)
        specs = build_image_specs(params, 1, settings)
        jobs = image_specs(specs, "img2img", Image.open(io.BytesIO(picture)), 0.6)
        orphan = new_record(params, 1, settings, "api", jobs=jobs)
        orphan.status, orphan.attempts = "processing", 1
        orphan.created_at = orphan.heartbeat_at = time.time() - 60
        asyncio.run(JobStore(LocalImageStore(local["dir"])).accept(orphan))
        assert list((local["dir"] / "inputs" / orphan.id).iterdir())

        adopted = wait_terminal(http, orphan.id, 120)
        assert adopted["status"] == "succeeded" and adopted["attempts"] == 2, adopted
        image = decode_png(httpx.get(adopted["output"][0], timeout=30).content)
        assert max_pixel_difference(image, fresh) <= 1
        assert not (local["dir"] / "inputs" / orphan.id).exists() or not list(
            (local["dir"] / "inputs" / orphan.id).iterdir()
        )  # the input leaves with the finished job


@pytest.fixture
def tight_app(serve_url: str, tiny_model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """One model replica that renders one image and queues one more: easy to fill."""
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        max_steps=300,
        retry_after_s=1,
        data_dir=str(tmp_path),
    )
    deploy_fixed_capacity_app(settings, "tight", "/tight", in_flight=1, queued=1)
    yield f"{serve_url}/tight"
    serve.delete("tight")


def test_full_model_queue_is_waited_out(tight_app: str, tmp_path: Path) -> None:
    # The model holds 2 images (1 rendering, 1 queued): of 4 jobs sent together at least 2 meet a
    # full queue on their first try. Every one must wait for room, not fail "at capacity".
    with httpx.Client(base_url=tight_app, timeout=60) as http:
        ids = [
            http.post("/v1/predictions", json={"input": {"prompt": f"crowd {i}", "steps": 30}}).json()["id"]
            for i in range(4)
        ]
        finals = [wait_terminal(http, prediction_id, 180) for prediction_id in ids]
    assert [f["status"] for f in finals] == ["succeeded"] * 4, finals
    assert all(f["attempts"] == 1 for f in finals)  # waiting for room is not a failed attempt
    records = [json.loads((tmp_path / "predictions" / f"{i}.json").read_text()) for i in ids]
    assert sum(r["overload_waits"] for r in records) >= 1, "no job met the full queue"


@pytest.fixture
def twin_replicas_app(serve_url: str, tiny_model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """Two model replicas that hold one image each: the two images of a job land on both."""
    settings = AppSettings(
        model=str(tiny_model_dir), default_size="64x64", max_steps=300, data_dir=str(tmp_path)
    )
    model_options = {
        "max_ongoing_requests": 1,
        "autoscaling_config": {"min_replicas": 2, "max_replicas": 2},
        "user_config": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0},
    }
    serve.run(compose(settings, model_options), name="twins", route_prefix="/twins")
    yield f"{serve_url}/twins"
    serve.delete("twins")


def test_failed_image_cancels_its_sibling_before_the_retry(twin_replicas_app: str) -> None:
    with httpx.Client(base_url=twin_replicas_app, timeout=60) as http:
        body = http.post(
            "/v1/predictions", json={"input": {"prompt": "pair", "n": 2, "steps": 150, "seed": 40}}
        ).json()
        # Each image's own steps, not their sum: both renders are under way, one on each replica.
        wait_for(
            lambda: (
                (progress := http.get(f"/v1/predictions/{body['id']}").json()["progress"])
                and len(progress["images"]) == 2
                and all(image["step"] >= 2 for image in progress["images"])
            ),
            60,
            "both renders to start",
        )
        replicas = serve_replicas("twins")
        assert len(replicas) == 2
        killed, survivor = (ray.get_actor(replica["name"], namespace="serve") for replica in replicas)
        ray.kill(killed, no_restart=True)
        killed_at = time.time()

        # The surviving replica's own log, read from its actor. Not through a handle: that call may
        # land on the replica Serve starts in place of the killed one (nothing there from before
        # the kill), and with max_ongoing_requests=1 it waits for a slot behind a whole retry render.
        def survivor_log() -> list[dict]:
            return ray.get(
                survivor.__ray_call__.remote(
                    lambda actor: actor._replica_impl._user_callable_wrapper.user_callable.batch_log()
                ),
                timeout=30,
            )

        # Its render from before the kill (the sibling of the image that died) must stop at once,
        # not run its 150 steps out beside the retry.
        sibling = wait_for(
            lambda: next(
                (e for e in survivor_log() if e["at"] < killed_at and e["render_s"] is not None),
                None,
            ),
            60,
            "the surviving replica's first render to end",
        )
        assert sibling["at"] + sibling["render_s"] < killed_at + 3.0, (sibling, killed_at)
        final = wait_terminal(http, body["id"], 180)
        assert final["status"] == "succeeded" and final["attempts"] == 2, final


# --- secrets -----------------------------------------------------------------------------------------


def test_api_key_comes_from_secrets_manager_over_the_environment(apps: dict) -> None:
    base = apps["s3"]["base"]
    assert httpx.get(f"{base}/v1/images", timeout=30).status_code == 401
    assert (
        httpx.get(f"{base}/v1/images", headers={"Authorization": "Bearer env-key"}, timeout=30).status_code
        == 401
    )
    ok = httpx.get(f"{base}/v1/images", headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=30)
    assert ok.status_code == 200
