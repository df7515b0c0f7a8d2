"""Many people, one model (issue 26): fair queueing, key limits, usage, signed webhooks, Prefer: wait.

One app, one model replica that holds every waiting image (as deployments/*.yaml configure it),
batches of 8, real HTTP over loopback, a real webhook receiver on loopback that checks every
webhook with the Standard Webhooks library. Tiny model, 64x64, 2-3 steps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import assert_error_shape, deploy_fixed_capacity_app, wait_for

from serve_app.config.settings import AppSettings

APP = "fair"
BATCH = 8
FLOOD_STEPS = 2
SINGLE_STEPS = 3  # another step count: the single image's pipeline call is told apart in the batch log
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEYS = {
    "flood": "sk-flood-0000",
    "single": "sk-single-0000",
    "limited": "sk-limited-0000",
    "counted": "sk-counted-0000",
    "ops": "sk-ops-0000",
}


class Receiver:
    """A webhook receiver that verifies each delivery as a Replicate client would."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.fail_first_completed = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    payload = Webhook(WEBHOOK_SECRET).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = json.loads(body), False
                # The same delivery, one byte changed: the library must refuse it.
                try:
                    Webhook(WEBHOOK_SECRET).verify(body.replace(b'"status"', b'"statuS"'), headers)
                    tampered_refused = False
                except WebhookVerificationError:
                    tampered_refused = True
                entry = {
                    "id": headers.get("webhook-id"),
                    "verified": verified,
                    "tampered_refused": tampered_refused,
                    "status": payload.get("status"),
                    "prediction": payload.get("id"),
                }
                receiver.deliveries.append(entry)
                failing = receiver.fail_first_completed and str(entry["id"]).endswith("_completed")
                receiver.fail_first_completed = receiver.fail_first_completed and not failing
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fair-store")


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path, data_dir: Path) -> str:
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=FLOOD_STEPS,
        max_images=64,
        max_steps=500,
        request_timeout_s=300,
        data_dir=str(data_dir),
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_retry_initial_s=0.1,
        api_keys=[
            {"name": "flood", "key": KEYS["flood"]},
            {"name": "single", "key": KEYS["single"]},
            {"name": "limited", "key": KEYS["limited"], "images_per_minute": 2},
            {"name": "counted", "key": KEYS["counted"]},
            {"name": "ops", "key": KEYS["ops"], "admin": True},
        ],
    )
    # As deployments/*.yaml: the replica holds the waiting images (its fair queue orders them).
    deploy_fixed_capacity_app(settings, APP, "/fair", in_flight=256, queued=64, max_batch_size=BATCH)
    return f"{serve_url}/fair"


def client(base: str, name: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {KEYS[name]}"})


def batch_log() -> list[dict[str, Any]]:
    return serve.get_deployment_handle("DiffusionModel", app_name=APP).batch_log.remote().result()


def test_a_flood_from_one_key_does_not_delay_another_keys_image(base: str) -> None:
    with client(base, "flood") as flood, client(base, "single") as single:
        assert single.get("/imagine", params={"prompt": "warm up", "steps": 2}).status_code == 200
        floods = []
        for _ in range(3):  # 192 images, 24 batches of 8
            response = flood.post("/v1/predictions", json={"input": {"prompt": "flood", "n": 64}})
            assert response.status_code == 201, response.text
            floods.append(response.json()["id"])
        started = len(batch_log())
        # The flood is rendering: its first batch has started and most of it still waits.
        wait_for(lambda: len(batch_log()) > started, 120, "the flood's first batch")
        sent_after = len(batch_log())
        response = single.get("/imagine", params={"prompt": "just one", "steps": SINGLE_STEPS})
        assert response.status_code == 200, response.text
        log = batch_log()
        mine = [i for i, entry in enumerate(log) if SINGLE_STEPS in entry["steps"]]
        assert len(mine) == 1, log[-3:]
        # Rendered in the batch after the one rendering when it arrived (one more for the race
        # between reading the log and the request landing), not behind ~180 flood images.
        assert mine[0] <= sent_after + 1, (mine[0], sent_after)
        flood_images_done = sum(
            size
            for entry in log[started:]
            for size, steps in zip(entry["groups"], entry["steps"], strict=True)
            if steps == FLOOD_STEPS
        )
        flood_images_left = 192 - flood_images_done
        assert flood_images_left >= 100, flood_images_left  # FIFO would have put it behind these
        # The batch still filled from both callers: batching is kept.
        assert log[mine[0]]["size"] == BATCH, log[mine[0]]
        for prediction in floods:  # the rest of the flood is not needed
            flood.post(f"/v1/predictions/{prediction}/cancel")


def test_a_key_over_its_rate_gets_429_with_retry_after_and_nothing_is_queued(
    base: str, data_dir: Path
) -> None:
    with client(base, "limited") as limited:
        ok = limited.post("/v1/images/generations", json={"prompt": "limit", "n": 2, "size": "64x64"})
        assert ok.status_code == 200, ok.text
        records_before = sorted((data_dir / "predictions").glob("*.json"))
        refused = limited.post("/v1/predictions", json={"input": {"prompt": "over", "n": 1}})
        assert refused.status_code == 429, refused.text
        assert_error_shape(refused.json())
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert sorted((data_dir / "predictions").glob("*.json")) == records_before  # nothing stored
        again = limited.get("/imagine", params={"prompt": "over"})
        assert again.status_code == 429 and "Retry-After" in again.headers
    with client(base, "ops") as ops:
        # Only the two rendered images were counted: the refused requests queued nothing.
        rows = wait_for(lambda: usage(ops, "limited"), 30, "limited's usage")
        assert rows["images"] == 2, rows


def usage(http: httpx.Client, caller: str) -> dict[str, Any] | None:
    response = http.get("/v1/usage", params={"caller": caller})
    assert response.status_code == 200, response.text
    return response.json()["total"] if response.json()["data"] else None


def test_usage_sums_match_the_images_rendered(base: str) -> None:
    with client(base, "counted") as counted:
        sync = counted.post("/v1/images/generations", json={"prompt": "count", "n": 3, "size": "64x64"})
        assert sync.status_code == 200 and len(sync.json()["data"]) == 3
        job = counted.post(
            "/v1/predictions", json={"input": {"prompt": "count", "n": 2}}, headers={"Prefer": "wait"}
        )
        assert job.json()["status"] == "succeeded", job.json()
        # A key that is not admin reads its own usage only.
        assert counted.get("/v1/usage", params={"caller": "flood"}).status_code == 403
        expected_pixel_steps = 5 * 64 * 64 * FLOOD_STEPS

        def settled() -> dict[str, Any] | None:
            total = usage(counted, "counted")
            return total if total and total["images"] == 5 else None

        total = wait_for(settled, 30, "counted's usage to reach 5 images")
        assert total["pixel_steps"] == expected_pixel_steps and total["gpu_s"] > 0
    with client(base, "ops") as ops:
        everyone = ops.get("/v1/usage").json()
        callers = {row["caller"] for row in everyone["data"]}
        assert {"counted", "limited", "single", "flood"} <= callers
        assert not any(key in json.dumps(everyone) for key in KEYS.values())  # names, never keys


def test_prefer_wait_answers_with_the_output(base: str) -> None:
    with client(base, "single") as http:
        response = http.post(
            "/v1/predictions",
            json={"input": {"prompt": "wait for me", "seed": 3}},
            headers={"Prefer": "wait=60"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "succeeded" and len(body["output"]) == 1, body
        assert response.headers["Preference-Applied"] == "wait=60"
        png = http.get(body["output"][0])
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_cancel_after_cancels_a_prediction_that_runs_too_long(base: str) -> None:
    with client(base, "single") as http:
        response = http.post(
            "/v1/predictions",
            json={"input": {"prompt": "too long", "steps": 500}},
            headers={"Cancel-After": "1s"},
        )
        assert response.status_code == 201, response.text
        prediction = response.json()["id"]

        def ended() -> dict[str, Any] | None:
            view = http.get(f"/v1/predictions/{prediction}").json()
            return view if view["status"] in {"canceled", "failed", "succeeded"} else None

        final = wait_for(ended, 60, "the prediction to end")
        assert final["status"] == "canceled", final


def test_every_webhook_is_signed_filtered_and_retried_under_its_id(
    base: str, receiver: Receiver
) -> None:
    with client(base, "single") as http:
        response = http.post(
            "/v1/predictions",
            json={
                "input": {"prompt": "hook", "seed": 5},
                "webhook": receiver.url,
                "webhook_events_filter": ["start", "completed"],
            },
        )
        assert response.status_code == 201, response.text
        prediction = response.json()["id"]

        def delivered() -> list[dict[str, Any]]:
            mine = [d for d in receiver.deliveries if d["prediction"] == prediction]
            return mine if sum(d["id"] == f"msg_{prediction}_completed" for d in mine) == 2 else []

        deliveries = wait_for(delivered, 60, "the completed webhook and its retry")
    ids = [d["id"] for d in deliveries]
    assert ids[0] == f"msg_{prediction}_start"
    # The first completed attempt got a 500; the retry kept its id.
    assert ids[1:] == [f"msg_{prediction}_completed"] * 2, ids
    assert all(d["verified"] for d in deliveries), deliveries
    assert all(d["tampered_refused"] for d in deliveries), deliveries
    with client(base, "single") as http:
        assert http.get(f"/v1/predictions/{prediction}").json()["status"] == "succeeded"
