"""Secrets Manager refreshes never hold up a request, even while AWS hangs.

Real parts: moto's standalone Secrets Manager over HTTP, reached through a TCP relay that can be
switched to "hang" (it keeps accepting and reading, and never answers), which is what an AWS
outage behind a black-holing network looks like to boto3.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from conftest import free_port
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from serve_app.api.errors import install_error_handlers
from serve_app.api.http_app import api_key_guard
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.testing.hanging_relay import HangingRelay

# moto keeps one in-process backend for every server it starts: a name per test keeps them apart.
SECRET_ID = f"raydiffusion/refresh-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def relayed_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HangingRelay, object]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    relay = HangingRelay(port)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
    }.items():
        monkeypatch.setenv(name, value)
    direct = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{port}")
    try:
        direct.create_secret(Name=SECRET_ID, SecretString=json.dumps({"RAYDIFFUSION_API_KEYS": "k1"}))
    except direct.exceptions.ResourceExistsException:
        rotate(direct, "k1")
    yield relay, direct
    relay.close()
    server.stop()


def rotate(direct: object, key: str) -> None:
    direct.put_secret_value(  # type: ignore[attr-defined]
        SecretId=SECRET_ID, SecretString=json.dumps({"RAYDIFFUSION_API_KEYS": key})
    )


async def keys_within(source: CredentialSource, expected: str, timeout_s: float) -> None:
    """Poll until the keys are ``expected``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = (await source.current()).api_keys
        if keys == (expected,):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"keys never became {expected!r}; last {keys!r}")


def test_rotation_is_picked_up_and_an_aws_hang_never_stalls_a_request(relayed_moto: tuple) -> None:
    relay, direct = relayed_moto
    settings = AppSettings(
        secrets_manager_secret_id=SECRET_ID, secrets_ttl_s=0.3, secrets_timeout_s=1.0, api_keys=["env-key"]
    )

    async def scenario() -> dict[str, float]:
        source = CredentialSource(settings)
        assert (await source.current()).api_keys == ("k1",)  # the first read is waited for
        rotate(direct, "k2")
        await keys_within(source, "k2", 15)  # picked up in the background after the TTL

        relay.hang.set()
        rotate(direct, "k3")
        answered_mid_refresh = 0
        # Several TTLs and refresh timeouts long: every call answers with the last good keys, and
        # answers while a refresh hangs (what proves it never waits on one; how fast is bench/'s).
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            keys = (await source.current()).api_keys
            refresh = source._refresh
            answered_mid_refresh += refresh is not None and not refresh.done()
            assert keys == ("k2",)
            await asyncio.sleep(0.02)
        attempted = relay.swallowed_requests  # refreshes did go out, and hung

        relay.hang.clear()
        await keys_within(source, "k3", 30)  # AWS back: the rotation arrives
        return {"answered_mid_refresh": answered_mid_refresh, "attempted": attempted}

    result = asyncio.run(scenario())
    assert result["answered_mid_refresh"] >= 1, result
    assert result["attempted"] >= 1, result


def guarded_app(source: CredentialSource) -> TestClient:
    """The API's own key guard and error rendering over one protected route."""
    app = FastAPI()
    install_error_handlers(app, retry_after_s=7)

    @app.get("/protected", dependencies=[Depends(api_key_guard(source, retry_after_s=7))])
    async def protected() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def test_a_secret_not_read_yet_refuses_protected_routes_never_opens_them(relayed_moto: tuple) -> None:
    """Fail closed: the first read hangs, the environment holds no key (as aws.yaml leaves it),
    and the protected route answers 503 with Retry-After until the secret arrives."""
    relay, _ = relayed_moto
    relay.hang.set()
    settings = AppSettings(secrets_manager_secret_id=SECRET_ID, secrets_ttl_s=300, secrets_timeout_s=0.5)
    source = CredentialSource(settings)
    with guarded_app(source) as http:
        refused = http.get("/protected")
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "7"
        assert refused.json()["error"]["code"] == "credentials_unavailable"
        # A key that would pass if the guard had fallen back to "no keys configured": refused too.
        assert http.get("/protected", headers={"Authorization": "Bearer anything"}).status_code == 503
        assert relay.swallowed_requests >= 1  # the read did go out, and hung

        relay.hang.clear()
        deadline = time.monotonic() + 30
        while (answer := http.get("/protected", headers={"Authorization": "Bearer k1"})).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the secret was never read once AWS answered"
            time.sleep(0.1)  # polling with a deadline: the refresh retries on its own schedule
        assert http.get("/protected").status_code == 401
        assert http.get("/protected", headers={"Authorization": "Bearer env-key"}).status_code == 401
