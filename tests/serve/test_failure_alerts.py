"""Failure alerts reach an SNS topic (moto's standalone server) and an alert webhook, rate limited.

Real parts throughout: moto's server over HTTP, with an SQS queue subscribed to the topic to read
what SNS delivered; a real HTTP receiver on loopback for the webhook; a real local Ray Serve whose
prediction fails (it cannot render within the request timeout).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import ray
from ray import serve
from support import deploy_fixed_capacity_app, kill_serve_replica, serve_replicas, wait_for

from serve_app.app import compose
from serve_app.config.settings import AppSettings
from serve_app.jobs.records import TERMINAL
from serve_app.ops.alerts import AlertLimiter, FailureAlerts

REGION = "us-east-1"
LIMIT = 3


class Receiver:
    """An alert webhook endpoint on loopback that records every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> str:
    """The run's moto (in the environment before Ray started, so replicas' boto3 clients use it)."""
    return moto_endpoint


@pytest.fixture(scope="module")
def serve_url(aws: str, serve_url: str) -> str:
    return serve_url


class Topic:
    """An SNS topic with an SQS queue subscribed: what SNS delivered can be read back."""

    def __init__(self, name: str) -> None:
        sns = boto3.client("sns", region_name=REGION)
        self._sqs = boto3.client("sqs", region_name=REGION)
        self.arn = sns.create_topic(Name=name)["TopicArn"]
        self._queue = self._sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=self._queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn)
        self.messages: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        answer = self._sqs.receive_message(QueueUrl=self._queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            envelope = json.loads(message["Body"])
            self.messages.append({"subject": envelope.get("Subject"), **json.loads(envelope["Message"])})
            self._sqs.delete_message(QueueUrl=self._queue, ReceiptHandle=message["ReceiptHandle"])
        return self.messages


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def alert_settings(topic: Topic, receiver: Receiver, **extra: Any) -> AppSettings:
    return AppSettings(
        alerts_sns_topic_arn=topic.arn,
        alert_webhook_url=receiver.url,
        webhook_allowed_hosts=["127.0.0.1"],  # the receiver is on loopback
        webhook_retry_initial_s=0.05,
        alerts_max_per_window=LIMIT,
        **extra,
    )


def test_the_limiter_lets_a_handful_through_per_window() -> None:
    limiter = AlertLimiter(limit=3, window_s=60)
    assert [limiter.allow(now=10.0) for _ in range(100)].count(True) == 3
    assert limiter.take_suppressed() == 97
    assert not limiter.allow(now=69.0)  # the window slides: the first three are still in it
    assert limiter.allow(now=70.0)


def test_a_burst_of_100_failures_sends_at_most_the_configured_handful(aws: str, receiver: Receiver) -> None:
    topic = Topic("burst")
    alerts = FailureAlerts(alert_settings(topic, receiver))

    async def burst() -> None:
        for i in range(100):
            alerts.job_failed(f"pred_{i}", "api", "timeout", "not ready")
        await alerts.drain()

    asyncio.run(burst())
    delivered = wait_for(lambda: len(topic.poll()) >= LIMIT and topic.messages, 30, "SNS messages")
    assert sorted(m["id"] for m in delivered) == [f"pred_{i}" for i in range(LIMIT)]  # the first ones
    assert len(receiver.bodies) == LIMIT
    assert all(body["kind"] == "job_failed" for body in receiver.bodies)
    # Nothing more arrives late.
    assert len(topic.poll()) == LIMIT


def test_an_alert_webhook_on_a_private_address_is_not_called_by_default(
    aws: str, receiver: Receiver
) -> None:
    topic = Topic("guarded")
    settings = alert_settings(topic, receiver).model_copy(update={"webhook_allowed_hosts": []})
    alerts = FailureAlerts(settings)

    async def one() -> None:
        alerts.job_failed("pred_private", "api", "timeout", "not ready")
        await alerts.drain()

    asyncio.run(one())
    assert wait_for(lambda: topic.poll(), 30, "the SNS message")[0]["id"] == "pred_private"
    assert receiver.bodies == []  # loopback is refused unless allowed, as for job webhooks


def test_a_failed_prediction_alerts_sns_and_the_webhook(
    serve_url: str, tiny_model_dir: Path, receiver: Receiver
) -> None:
    topic = Topic("served")
    settings = alert_settings(
        topic,
        receiver,
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=2,
        max_steps=500,
        request_timeout_s=1,  # a 500-step render cannot make it: the job fails
    )
    deploy_fixed_capacity_app(settings, "alerting", "/alerting", in_flight=1, queued=4)
    with httpx.Client(base_url=f"{serve_url}/alerting", timeout=60) as http:
        created = http.post("/v1/predictions", json={"input": {"prompt": "too slow", "steps": 500}})
        assert created.status_code == 201, created.text
        prediction = created.json()["id"]
        body = wait_for(
            lambda: (b := http.get(f"/v1/predictions/{prediction}").json())["status"] in TERMINAL and b,
            60,
            "the prediction to fail",
        )
    assert body["status"] == "failed", body
    [message] = wait_for(lambda: topic.poll(), 30, "the SNS alert")
    assert message["id"] == prediction and message["kind"] == "job_failed"
    assert message["source"] == "api" and message["error_code"] == "timeout"
    assert prediction in message["subject"]
    [hook] = wait_for(lambda: list(receiver.bodies), 30, "the webhook alert")
    assert hook["id"] == prediction and hook["kind"] == "job_failed"
    # Done with it: its replicas shut down while the next test runs, not one after another at the
    # module's end (each waits out Serve's graceful-shutdown loop).
    serve.delete("alerting", _blocking=False)


WATCHED = "watched"


@pytest.fixture(scope="module")
def watched_topic(aws: str) -> Topic:
    return Topic("replicas")


@pytest.fixture(scope="module")
def watched_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def watched(
    serve_url: str, tiny_model_dir: Path, watched_topic: Topic, watched_receiver: Receiver
) -> str:
    """One app for both replica tests (one replica start fewer): the replacement test runs first,
    on a fresh topic and receiver, so nothing it asserts can come from the other test; the dying
    test then kills the replacement under a job."""
    settings = alert_settings(
        watched_topic,
        watched_receiver,
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=2,
        max_steps=500,
        request_timeout_s=120,  # room for Serve to start a replacement
        replica_watch_interval_s=0.5,
    )
    # Both tests' alerts come from this one ingress: a limit that neither of them can reach (each
    # had an ingress, and so a limiter, of its own before).
    settings = settings.model_copy(update={"alerts_max_per_window": 10 * LIMIT})
    # Health-checked every second: the controller notices a dead replica within about that.
    model_options = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}, "health_check_period_s": 1}
    serve.run(compose(settings, model_options), name=WATCHED, route_prefix=f"/{WATCHED}")
    return f"{serve_url}/{WATCHED}"


def model_replica(app: str) -> dict[str, Any]:
    (replica,) = serve_replicas(app)
    return replica


def serve_log_lines(needle: str) -> list[str]:
    """Lines of this session's Serve replica logs containing ``needle``."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    return [
        line
        for path in logs.glob("*.log")
        for line in path.read_text(errors="replace").splitlines()
        if needle in line
    ]


def test_a_model_replica_replaced_between_requests_is_alerted(
    watched: str, watched_topic: Topic, watched_receiver: Receiver
) -> None:
    topic, receiver = watched_topic, watched_receiver
    replica = model_replica(WATCHED)
    replica_id = replica["name"].rsplit("#", 1)[-1]
    # The ingress has seen the replica running (its watch logs each change of the running set).
    wait_for(
        lambda: [line for line in serve_log_lines("DiffusionModel replicas running") if replica_id in line],
        60,
        "the ingress's replica watch to see the model replica",
    )
    # A crash with no request on it: only Serve's controller notices, and replaces the replica.
    kill_serve_replica(replica)
    hooks = wait_for(
        lambda: [b for b in receiver.bodies if b["kind"] == "replica_replaced"], 90, "the replacement alert"
    )
    assert hooks[0]["replicas"] == [replica_id], hooks
    assert hooks[0]["deployment"] == "DiffusionModel"
    sns = wait_for(
        lambda: [m for m in topic.poll() if m["kind"] == "replica_replaced"], 30, "the SNS replacement alert"
    )
    assert sns[0]["replicas"] == [replica_id]
    assert not [b for b in receiver.bodies if b["kind"] == "replica_lost"]  # no request saw it die
    # The replacement serves: the deployment recovered, and said so in no further alert.
    with httpx.Client(base_url=watched, timeout=120) as http:
        assert http.get("/imagine", params={"prompt": "after"}).status_code == 200
    assert len([b for b in receiver.bodies if b["kind"] == "replica_replaced"]) == 1


def test_a_model_replica_dying_under_a_job_is_alerted(
    watched: str, watched_topic: Topic, watched_receiver: Receiver
) -> None:
    topic, receiver = watched_topic, watched_receiver
    # The replacement test above ran first and found no replica_lost alert: any now are this one's.
    assert not [b for b in receiver.bodies if b["kind"] == "replica_lost"]
    with httpx.Client(base_url=watched, timeout=60) as http:
        created = http.post("/v1/predictions", json={"input": {"prompt": "fragile", "steps": 300}})
        prediction = created.json()["id"]

        def rendering() -> bool:
            progress = http.get(f"/v1/predictions/{prediction}").json().get("progress") or {}
            return (progress.get("step") or 0) > 0

        wait_for(rendering, 60, "the render to start")
        replica = model_replica(WATCHED)
        kill_serve_replica(replica)
        hooks = wait_for(
            lambda: [b for b in receiver.bodies if b["kind"] == "replica_lost"], 60, "the replica alert"
        )
        assert hooks[0]["detail"]
        # Waited for by kind: the topic also holds the replacement test's message.
        lost = wait_for(lambda: [m for m in topic.poll() if m["kind"] == "replica_lost"], 30, "the SNS alert")
        assert any(m["kind"] == "replica_lost" for m in lost)
        http.post(f"/v1/predictions/{prediction}/cancel")
