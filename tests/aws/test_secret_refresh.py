"""Secrets Manager refreshes never hold up a request, even while AWS hangs.

Real parts: moto's standalone Secrets Manager over HTTP, reached through a TCP relay that can be
switched to "hang" (it keeps accepting and reading, and never answers), which is what an AWS
outage behind a black-holing network looks like to boto3.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from conftest import free_port
from moto.server import ThreadedMotoServer

from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings

# moto keeps one in-process backend for every server it starts: a name per test keeps them apart.
SECRET_ID = f"raydiffusion/refresh-test-{uuid.uuid4().hex[:8]}"


class HangingRelay:
    """Forwards TCP to ``target_port`` until ``hang`` is set; then swallows bytes and never answers."""

    def __init__(self, target_port: int) -> None:
        self.hang = threading.Event()
        self.swallowed_requests = 0
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(client)
            if self.hang.is_set():
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            self._open.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        counted = False
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not counted:
                self.swallowed_requests += 1
                counted = True

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        counted = False
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.hang.is_set():  # a kept-alive connection goes silent too
                if from_client and not counted:
                    self.swallowed_requests += 1
                    counted = True
                continue
            counted = False
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            sock.close()


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


async def keys_within(source: CredentialSource, expected: str, timeout_s: float) -> float:
    """Poll until the keys are ``expected``; returns the slowest single call seen."""
    slowest = 0.0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        keys = (await source.current()).api_keys
        slowest = max(slowest, time.monotonic() - started)
        if keys == (expected,):
            return slowest
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
        slowest = 0.0
        # Several TTLs and refresh timeouts long: every call answers at once with the last good keys.
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            started = time.monotonic()
            keys = (await source.current()).api_keys
            slowest = max(slowest, time.monotonic() - started)
            assert keys == ("k2",)
            await asyncio.sleep(0.02)
        attempted = relay.swallowed_requests  # refreshes did go out, and hung

        relay.hang.clear()
        await keys_within(source, "k3", 30)  # AWS back: the rotation arrives
        return {"slowest": slowest, "attempted": attempted}

    result = asyncio.run(scenario())
    assert result["slowest"] < 0.1, result
    assert result["attempted"] >= 1, result


def test_a_hanging_first_read_is_bounded_and_falls_back_to_the_environment(relayed_moto: tuple) -> None:
    relay, _ = relayed_moto
    relay.hang.set()
    settings = AppSettings(
        secrets_manager_secret_id=SECRET_ID, secrets_ttl_s=300, secrets_timeout_s=0.5, api_keys=["env-key"]
    )

    async def scenario() -> tuple[float, float, tuple[str, ...]]:
        source = CredentialSource(settings)
        started = time.monotonic()
        first = (await source.current()).api_keys
        first_s = time.monotonic() - started
        started = time.monotonic()
        await source.current()
        return first_s, time.monotonic() - started, first

    first_s, second_s, keys = asyncio.run(scenario())
    assert keys == ("env-key",)
    assert first_s < 1.5 and second_s < 0.1, (first_s, second_s)
