"""Hostile input, overload and faults against a real local Ray Serve: nothing accepted is lost.

Each test here is a row of RELIABILITY.md. The app is sized small on purpose (4 requests in
flight at the model, 8 queued) so that overload is reached quickly on two cores.
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import ray
import schemathesis
from conftest import free_port
from fake_discord import DiscordSigner, FakeDiscord, ScriptedAnswer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer
from ray import serve
from schemathesis.checks import not_a_server_error
from support import decode_png, deploy_fixed_capacity_app, kill_serve_replica, serve_replicas, wait_for

from serve_app.app import compose
from serve_app.config.settings import AppSettings

pytestmark = pytest.mark.slow

API_KEY = "reliability-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
APP_ID = "rel-app"
TIMEOUT_S = 45  # covers a replacement replica starting while a retried request waits


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path, fake: FakeDiscord, signer: DiscordSigner) -> str:
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        min_size=64,
        max_size=96,
        default_steps=2,
        max_steps=6,
        max_images=2,
        request_timeout_s=TIMEOUT_S,
        retry_after_s=2,
        api_keys=[API_KEY],
        discord_public_key=signer.public_key_hex,
        discord_application_id=APP_ID,
        discord_api_base_url=fake.url,
        discord_retry_initial_s=0.05,
        discord_max_jobs_per_user=100,
    )
    deploy_fixed_capacity_app(settings, "rel", "/", in_flight=4, queued=8, batch_wait_s=0.02)
    return serve_url


def model_handle() -> serve.handle.DeploymentHandle:
    return serve.get_deployment_handle("DiffusionModel", app_name="rel")


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body


# --- hostile input ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(
        ["64x64", "96x64", "64x96", "65x64", "0x0", "x", "64X64", "ddim", "euler_a", "b64_json", "url"]
    ),
    st.integers(-3, 10),
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "prompt",
            "n",
            "size",
            "seed",
            "steps",
            "guidance_scale",
            "scheduler",
            "negative_prompt",
            "response_format",
            "user",
            "model",
            "extra_field",
        )
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_any_generation_body_is_answered_200_or_a_4xx_in_shape(base: str, body: dict) -> None:
    response = httpx.post(f"{base}/v1/images/generations", json=body, headers=AUTH, timeout=60)
    assert response.status_code in {200, 400}, (body, response.status_code, response.text)
    if response.status_code == 400:
        assert_error_shape(response)
        param = response.json()["error"]["param"]
        assert param is None or param.split(".")[0] in body or param == "prompt", (body, param)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    query=st.dictionaries(
        st.sampled_from(["prompt", "size", "seed", "steps", "scheduler", "x"]),
        st.text(max_size=12),
        max_size=4,
    )
)
def test_any_imagine_query_is_answered_200_or_a_4xx_in_shape(base: str, query: dict) -> None:
    response = httpx.get(f"{base}/imagine", params=query, headers=AUTH, timeout=60)
    assert response.status_code in {200, 400}, (query, response.text)
    if response.status_code == 200:
        assert response.headers["content-type"] == "image/png"
    else:
        assert_error_shape(response)


interaction_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=5),
            "application_id": st.just(APP_ID),
            "token": st.text(string.ascii_letters, min_size=1, max_size=8),
        },
        optional={
            "type": st.one_of(st.integers(-2, 9), st.text(max_size=3), st.none()),
            "data": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["imagine", "other", ""])},
                    optional={
                        "options": st.lists(
                            st.fixed_dictionaries(
                                {
                                    "name": st.sampled_from(
                                        ["prompt", "seed", "steps", "size", "guidance", "bogus"]
                                    ),
                                    "type": st.integers(1, 11),
                                },
                                optional={"value": json_values},
                            ),
                            max_size=4,
                        )
                    },
                ),
            ),
            "member": st.one_of(json_values, st.just({"user": {"id": "fuzzer"}})),
            "message": json_values,
        },
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=interaction_bodies)
def test_signed_discord_payloads_never_cause_a_5xx(base: str, signer: DiscordSigner, body: bytes) -> None:
    response = httpx.post(
        f"{base}/discord/interactions", content=body, headers=signer.headers(body), timeout=30
    )
    assert response.status_code in {200, 400}, (body, response.status_code, response.text)
    if response.status_code == 200:
        assert response.json()["type"] in {1, 4, 5, 8}
    else:
        assert_error_shape(response)


def test_oversized_and_unsigned_discord_bodies(
    base: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    huge = b'{"type": 1, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert (
        httpx.post(
            f"{base}/discord/interactions", content=huge, headers=signer.headers(huge), timeout=30
        ).status_code
        == 413
    )
    for headers in ({}, {"X-Signature-Ed25519": "00" * 64, "X-Signature-Timestamp": str(int(time.time()))}):
        response = httpx.post(f"{base}/discord/interactions", content=b"{}", headers=headers, timeout=30)
        assert response.status_code == 401


def test_api_key_is_never_logged(base: str) -> None:
    httpx.get(f"{base}/v1/models", headers=AUTH, timeout=30)
    httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}-wrong"}, timeout=30)
    log_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    leaked = [p.name for p in log_dir.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    assert leaked == []


# --- overload ----------------------------------------------------------------------------------------


def test_burst_of_three_times_capacity_for_25_seconds(
    base: str, record_property: Callable[[str, object], None]
) -> None:
    """12 fit (4 rendering + 8 queued); 36 closed-loop clients for 25 s: only 200 or 503.

    25 s, not a minute: the suite's CI budget (20 minutes on 2 cores, every test included) cannot
    hold a longer one; `make bench` measures sustained load instead."""
    rss_before = model_handle().describe.remote().result()["rss_bytes"]
    outcomes: list[tuple[int, float, str | None]] = []

    async def run() -> None:
        stop_at = time.monotonic() + 25
        async with httpx.AsyncClient(
            base_url=base, headers=AUTH, timeout=TIMEOUT_S + 10, limits=httpx.Limits(max_connections=64)
        ) as http:

            async def client(index: int) -> None:
                while time.monotonic() < stop_at:
                    started = time.monotonic()
                    response = await http.get("/imagine", params={"prompt": f"burst {index}"})
                    outcomes.append(
                        (
                            response.status_code,
                            time.monotonic() - started,
                            response.headers.get("retry-after"),
                        )
                    )
                    if response.status_code == 503:
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(client(i) for i in range(36)))

    asyncio.run(run())
    statuses = {status for status, _, _ in outcomes}
    assert statuses <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses
    assert all(retry == "2" for status, _, retry in outcomes if status == 503)
    assert max(latency for _, latency, _ in outcomes) < TIMEOUT_S
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    served = sum(1 for status, _, _ in outcomes if status == 200)
    # More served than fit at once (the queue drained and refilled), and every client was answered
    # many times over (refusals are immediate): counts that do not depend on this machine's speed.
    assert served > 12 and len(outcomes) >= 200, (len(outcomes), served)
    rss_after = model_handle().describe.remote().result()["rss_bytes"]
    assert rss_after - rss_before < 100 * 1024 * 1024, (rss_before, rss_after)
    rss_growth_mb = round((rss_after - rss_before) / 2**20, 1)
    record_property(
        "figure:burst",
        {
            "served": served,
            "rejected": len(outcomes) - served,
            "rss_growth_mb": rss_growth_mb,
            "summary": (
                f"{served} served, {len(outcomes) - served} rejected with 503 + Retry-After, "
                f"0 other statuses; replica RSS growth {rss_growth_mb} MB"
            ),
        },
    )


# --- faults ------------------------------------------------------------------------------------------


# What RELIABILITY.md promises for a replica killed under load: no request fails; at most one clean
# 503 (error shape and Retry-After) per client while Serve has no replica to queue for.
MAX_CLEAN_503_AFTER_KILL = 4


def test_killed_replica_under_load_costs_no_request(
    base: str, record_property: Callable[[str, object], None]
) -> None:
    statuses: list[int] = []
    latencies: list[float] = []
    unclean: list[tuple[int, str]] = []  # non-200 answers without the error shape or Retry-After
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=TIMEOUT_S + 10) as http:
            while not stop.is_set():
                started = time.monotonic()
                response = http.get("/imagine", params={"prompt": f"fault {index}"})
                latencies.append(time.monotonic() - started)
                statuses.append(response.status_code)
                if response.status_code != 200:
                    try:
                        assert_error_shape(response)
                        assert response.status_code != 503 or response.headers.get("retry-after")
                    except (AssertionError, ValueError):
                        unclean.append((response.status_code, response.text[:200]))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(statuses) >= 10, 60, "load to be flowing")
    (replica,) = serve_replicas("rel")
    killed_at = len(statuses)
    kill_serve_replica(replica)
    # Serve replaces the replica; then ten requests in a row succeed.
    wait_for(
        lambda: len(statuses) >= killed_at + 10 and set(statuses[-10:]) == {200},
        120,
        "success to return to 100%",
    )
    stop.set()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S + 15)
    after_kill = statuses[killed_at:]
    rejected = sum(1 for s in after_kill if s == 503)
    failed = sum(1 for s in after_kill if s not in (200, 503))
    record_property(
        "figure:replica_kill",
        {
            "requests_after_kill": len(after_kill),
            "failed": failed,
            "clean_503": rejected,
            "summary": (
                f"{len(after_kill)} requests after the kill, {failed} failed, {rejected} refused with 503"
            ),
        },
    )
    assert set(after_kill) <= {200, 503}, after_kill  # a 500 would be a request lost to the kill
    assert rejected <= MAX_CLEAN_503_AFTER_KILL, after_kill
    assert unclean == [], unclean
    assert all(latency < TIMEOUT_S for latency in latencies)


def test_discord_outage_delays_but_never_loses_the_image(
    base: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    token = "outage-token"
    fake.fail_next(token, *[ScriptedAnswer(500, {"message": "down"}) for _ in range(6)])
    body = json.dumps(
        {
            "id": "9",
            "application_id": APP_ID,
            "type": 2,
            "token": token,
            "guild_id": "g",
            "member": {"user": {"id": "outage-user"}},
            "data": {"name": "imagine", "options": [{"name": "prompt", "type": 3, "value": "storm"}]},
        }
    ).encode()
    assert httpx.post(
        f"{base}/discord/interactions", content=body, headers=signer.headers(body), timeout=30
    ).json() == {"type": 5}
    calls = fake.wait_for(
        lambda cs: any(c.files and c.status == 200 for c in cs if token in c.path), 120, "delivery"
    )
    statuses = [c.status for c in calls if token in c.path]
    assert statuses.count(500) == 6 and statuses[-1] == 200


@pytest.fixture
def s3_app(serve_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    credentials = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket="outage")
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=2,
        image_store="s3",
        s3_bucket="outage",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
    )
    serve.run(
        compose(
            settings,
            model_options={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
            ingress_options={
                "ray_actor_options": {
                    "num_cpus": 0,
                    "runtime_env": {
                        "env_vars": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
                    },
                }
            },
        ),
        name="s3outage",
        route_prefix="/s3outage",
    )
    state = {"server": server, "port": port, "base": f"{serve_url}/s3outage"}
    yield state
    state["server"].stop()
    serve.delete("s3outage")


def test_s3_outage_is_a_clear_503_and_the_service_recovers(s3_app: dict) -> None:
    def url_request() -> httpx.Response:
        return httpx.post(
            f"{s3_app['base']}/v1/images/generations",
            json={"prompt": "p", "response_format": "url"},
            timeout=60,
        )

    assert url_request().status_code == 200
    s3_app["server"].stop()
    down = url_request()
    assert down.status_code == 503, down.text
    assert down.json()["error"]["type"] == "storage_unavailable" and down.headers["retry-after"]
    still_up = httpx.post(f"{s3_app['base']}/v1/images/generations", json={"prompt": "p"}, timeout=60)
    assert still_up.status_code == 200 and decode_png(
        __import__("base64").b64decode(still_up.json()["data"][0]["b64_json"])
    ).shape == (64, 64, 3)
    assert httpx.get(f"{s3_app['base']}/healthz", timeout=5).status_code == 200
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_app["port"])
    server.start()
    s3_app["server"] = server
    import boto3

    boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_app['port']}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="outage")  # moto keeps nothing across restarts
    recovered = wait_for(lambda: (r := url_request()).status_code == 200 and r, 60, "S3 to come back")
    assert httpx.get(recovered.json()["data"][0]["url"], timeout=30).status_code == 200


# --- schemathesis: every operation in the published OpenAPI schema ------------------------------------


def test_openapi_operations_never_answer_5xx(base: str) -> None:
    """schemathesis generates requests for every operation in /openapi.json (valid and not)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(
        # Webhooks would make this test call whatever URLs it invents; predictions' input is
        # covered by the property tests above and the lifecycle tests in test_storage_and_jobs.
        method="POST",
        path="/v1/predictions",
    )
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: object) -> None:
            response = case.call(headers=AUTH, timeout=60)  # type: ignore[attr-defined]
            case.validate_response(response, checks=[not_a_server_error])  # type: ignore[attr-defined]
            if 400 <= response.status_code < 500:
                body = response.json()
                assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(
                    body["error"]
                ), body
            if response.status_code == 400:
                # A 400 names the field at fault; only a body wrong as a whole (not JSON, not an
                # object) has none, and then says so (a flagged image is about no field either).
                error = response.json()["error"]
                whole = error["message"].startswith("The request body")
                assert error["param"] or whole or error["code"] == "content_policy_violation", error

        check()
    assert len(tested) >= 8, tested
