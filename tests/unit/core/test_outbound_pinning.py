"""Outbound requests connect to the address that was checked, never to what a second lookup says.

DNS is the one stand-in here (no resolver we control runs on this machine): ``getaddrinfo`` answers
chosen names with chosen loopback addresses, the first answer differing from the later ones as in
a DNS rebinding attack. Everything else is real: live HTTP servers on 127.0.0.1 and 127.0.0.2
(both loopback on Linux, on one port), counting what they get, and the real clients.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bot_gateway.source_images import SourceImageError, fetch_image
from serve_app.config.settings import AppSettings
from serve_app.core.webhooks import deliver_webhook

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class CountingServer:
    """A live HTTP server answering 200 with a PNG to every GET and POST, counting them."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.requests: list[tuple[str, str, str]] = []  # method, path, Host header
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                owner.requests.append((self.command, self.path, self.headers.get("host", "")))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((address, port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    """The checked receiver on 127.0.0.1 and a trap on 127.0.0.2, on the same port."""
    receiver = CountingServer("127.0.0.1")
    trap = CountingServer("127.0.0.2", receiver.port)
    yield receiver, trap
    receiver.close()
    trap.close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names -> the addresses successive lookups get (the last one repeats)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[name]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_webhook_goes_to_the_checked_address_when_a_second_lookup_differs(
    servers: tuple[CountingServer, CountingServer], dns: dict[str, list[str]]
) -> None:
    """The name passes the check (127.0.0.1 is allowed), then resolves to 127.0.0.2 (not allowed):
    a client connecting by name would reach the trap."""
    receiver, trap = servers
    dns["hooks.rebind.test"] = ["127.0.0.1", "127.0.0.2"]
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    attempt = asyncio.run(
        deliver_webhook(url, {"id": "pred_x"}, 1, 0.01, timeout_s=5, allowed_hosts=["127.0.0.1/32"])
    )
    assert attempt == 1
    assert trap.requests == []
    assert receiver.requests == [("POST", "/hook", f"hooks.rebind.test:{receiver.port}")]


def test_a_discord_attachment_whose_name_resolves_to_a_private_address_is_never_fetched(
    servers: tuple[CountingServer, CountingServer], dns: dict[str, list[str]]
) -> None:
    """cdn.discordapp.com is allowed by name, yet a name must still resolve to public addresses:
    one that resolves to loopback (a poisoned resolver, a rebinding record) is refused unfetched."""
    receiver, trap = servers
    dns["cdn.discordapp.com"] = ["127.0.0.2"]
    settings = AppSettings()
    with pytest.raises(SourceImageError):
        asyncio.run(fetch_image(f"http://cdn.discordapp.com:{trap.port}/attachments/1/2/a.png", settings))
    assert trap.requests == [] and receiver.requests == []


def test_a_discord_attachment_is_fetched_from_the_checked_address(
    servers: tuple[CountingServer, CountingServer], dns: dict[str, list[str]]
) -> None:
    """Allowed by address (a test CDN on 127.0.0.1), then rebound: the GET still goes to the
    checked address, with the name in Host."""
    receiver, trap = servers
    dns["cdn.rebind.test"] = ["127.0.0.1", "127.0.0.2"]
    settings = AppSettings(discord_attachment_hosts=["cdn.rebind.test", "127.0.0.1"])
    url = f"http://cdn.rebind.test:{receiver.port}/attachments/1/2/a.png"
    # The name is allowed; its first answer (127.0.0.1) is an allowed address.
    assert asyncio.run(fetch_image(url, settings)) == PNG
    assert trap.requests == []
    assert receiver.requests == [("GET", "/attachments/1/2/a.png", f"cdn.rebind.test:{receiver.port}")]
