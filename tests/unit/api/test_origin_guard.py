"""The ingress admits only requests carrying the HTTPS front's secret origin header (fail closed)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from serve_app.api.origin import OriginGuard
from serve_app.config.credentials import Credentials, CredentialSource, merge_credentials
from serve_app.config.settings import AppSettings

HEADER = "X-Raydiffusion-Origin"


class SecretHolding(CredentialSource):
    """A credential source whose secret was read (or not): the guard's only input."""

    def __init__(self, secret: dict[str, str] | None) -> None:
        super().__init__(AppSettings())
        self.secret = secret

    async def current(self) -> Credentials:
        return merge_credentials(self.secret or {}, AppSettings(), secret_loaded=self.secret is not None)


def _app(secret: dict[str, str] | None) -> FastAPI:
    app = FastAPI()

    @app.get("/anything")
    async def anything() -> dict[str, bool]:
        return {"reached": True}

    @app.post("/discord/interactions")
    async def interactions() -> dict[str, bool]:
        return {"reached": True}

    app.add_middleware(OriginGuard, credentials=SecretHolding(secret), header=HEADER, retry_after_s=7)
    return app


def _call(secret: dict[str, str] | None, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(secret))
        async with httpx.AsyncClient(transport=transport, base_url="http://head:8000") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(go())


def test_the_right_header_passes_and_anything_else_is_403() -> None:
    secret = {"ORIGIN_VERIFY_SECRET": "s3cr3t-value-from-bootstrap"}
    ok = _call(secret, "GET", "/anything", {HEADER: "s3cr3t-value-from-bootstrap"})
    assert ok.status_code == 200 and ok.json() == {"reached": True}
    for headers in ({}, {HEADER: "wrong"}, {HEADER: "s3cr3t-value-from-bootstra"}, {"X-Other": "s3cr3t"}):
        refused = _call(secret, "POST", "/discord/interactions", headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "origin_not_allowed"
        assert "s3cr3t" not in refused.text


def test_no_readable_secret_value_is_503_with_retry_after_never_open() -> None:
    for secret in (None, {}, {"ORIGIN_VERIFY_SECRET": ""}):
        refused = _call(secret, "GET", "/anything", {HEADER: ""})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "7"
        assert refused.json()["error"]["code"] == "origin_secret_unavailable"
