"""Webhooks reach public hosts only (SSRF), never follow redirects, and never log credentials.

Pure address classification, real DNS resolution of names the machine knows (``localhost``), and
deliveries over real HTTP to loopback receivers (allowed only through the allow-list setting).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator

import pytest
from fake_discord import FakeDiscord, ScriptedAnswer

from serve_app.core.outbound_urls import (
    AllowList,
    ForbiddenDestinationError,
    is_public_address,
    redact_url,
    resolve_destination,
)
from serve_app.core.webhooks import deliver_webhook

NOT_PUBLIC = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.1.1.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:db8::1",  # documentation
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def resolve(url: str, *allowed: str) -> str:
    return asyncio.run(resolve_destination(url, AllowList.parse(list(allowed)), timeout_s=3)).address


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",  # a name: refused after resolution
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:a9fe:a9fe]/hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "ftp://8.8.8.8/hook",
        "http:///nohost",
        "not a url",
    ],
)
def test_non_public_or_odd_destinations_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenDestinationError):
        resolve(url)


def test_allow_list_names_hosts_addresses_and_networks() -> None:
    assert resolve("http://localhost:9/x", "localhost") in {"127.0.0.1", "::1"}
    assert resolve("http://127.0.0.1:9/x", "127.0.0.1") == "127.0.0.1"
    assert resolve("http://127.0.0.2:9/x", "127.0.0.0/8") == "127.0.0.2"
    assert resolve("http://[::1]:9/x", "::1/128") == "::1"
    with pytest.raises(ForbiddenDestinationError):
        resolve("http://10.0.0.1/x", "127.0.0.0/8", "localhost")
    assert resolve("https://93.184.215.14/x") == "93.184.215.14"  # public needs no allow-list


def test_redaction_drops_credentials_query_and_path() -> None:
    assert redact_url("https://user:pw@hooks.example.com:8443/t/SECRET?token=x#f") == (
        "https://hooks.example.com:8443/…"
    )
    assert redact_url("http://[::1]:9/") == "http://[::1]:9"
    assert "SECRET" not in redact_url("http://h/SECRET")


@pytest.fixture
def receiver() -> Iterator[FakeDiscord]:
    server = FakeDiscord()
    yield server
    server.close()


def origin(server: FakeDiscord) -> str:
    return server.url.removesuffix("/api/v10")


def deliver(url: str, allowed: list[str]) -> int:
    return asyncio.run(deliver_webhook(url, {"id": "pred_x"}, 3, 0.01, timeout_s=5, allowed_hosts=allowed))


def test_loopback_receiver_is_not_called_unless_allowed(receiver: FakeDiscord) -> None:
    assert deliver(f"{origin(receiver)}/hook", []) == 0
    assert deliver(f"{origin(receiver).replace('127.0.0.1', 'localhost')}/hook", []) == 0
    assert receiver.calls == []
    assert deliver(f"{origin(receiver)}/hook", ["127.0.0.1"]) == 1
    (call,) = receiver.calls
    assert call.json == {"id": "pred_x"} and call.headers["host"] == origin(receiver).split("//")[1]


def test_redirects_are_not_followed(receiver: FakeDiscord) -> None:
    with FakeDiscordContext() as metadata:
        target = f"{origin(metadata)}/latest/meta-data/iam"
        receiver.fail_next("/hook", ScriptedAnswer(307, {}, {"Location": target}))
        assert deliver(f"{origin(receiver)}/hook", ["127.0.0.1"]) == 0
        assert [c.status for c in receiver.calls] == [307]  # not retried either
        assert metadata.calls == []


def test_webhook_urls_are_redacted_in_logs(receiver: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    secret_url = f"http://hookuser:PASSWORD123@{origin(receiver).split('//')[1]}/hook/PATHTOKEN?token=QUERYTOKEN"
    receiver.fail_next("/hook", ScriptedAnswer(503, {}), ScriptedAnswer(400, {}))
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        assert deliver(secret_url, ["127.0.0.1"]) == 0  # 503, then refused with 400
        assert deliver(secret_url, []) == 0  # loopback, not allowed
        assert deliver(secret_url.replace("/hook/", "/nothing/"), ["127.0.0.1"]) == 1
    logged = caplog.text
    assert "refused the payload" in logged and "not called" in logged
    for secret in ("hookuser", "PASSWORD123", "PATHTOKEN", "QUERYTOKEN"):
        assert secret not in logged, secret
    # The credentials still reach the receiver itself (basic auth from the URL).
    assert receiver.calls[-1].headers["authorization"].startswith("Basic ")


class FakeDiscordContext:
    def __enter__(self) -> FakeDiscord:
        self.server = FakeDiscord()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.close()


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://169.254.169.254/latest/meta-data/", [], False),
        ("http://localhost:8080/hook", [], False),
        ("http://[::ffff:10.0.0.1]/hook", [], False),
        ("http://localhost:8080/hook", ["localhost"], True),
        ("https://93.184.215.14/hook", [], True),
    ],
)
def test_creation_check_is_a_400_naming_webhook(url: str, allowed: list[str], ok: bool) -> None:
    from serve_app.core.errors import InvalidRequestError
    from serve_app.core.webhooks import validate_webhook

    if ok:
        asyncio.run(validate_webhook(url, allowed))
        return
    with pytest.raises(InvalidRequestError) as raised:
        asyncio.run(validate_webhook(url, allowed))
    assert isinstance(raised.value, InvalidRequestError) and raised.value.param == "webhook"
