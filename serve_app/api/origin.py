"""Only requests that came through the HTTPS front (CloudFront) reach the app.

On AWS, port 8000 of the head admits CloudFront's origin-facing addresses, which any CloudFront
distribution (anyone's) also uses: the address alone proves nothing. Our distribution adds a
secret header (``origin_header``, value ``ORIGIN_VERIFY_SECRET`` in the Secrets Manager secret,
both written by `raydiffusion-aws bootstrap`); every request without the right value is refused
with 403, Discord's interactions and the browser page included. Fail closed: with the header
configured but no value readable yet (secret unread, or the key missing), every request is a 503
with Retry-After, never let through. A pure ASGI middleware, so it runs before routing and also
guards routes that have no API key.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.errors import error_response
from serve_app.config.credentials import CredentialSource
from serve_app.core.errors import ForbiddenError, ServiceUnavailableError


class OriginGuard:
    def __init__(self, app: ASGIApp, credentials: CredentialSource, header: str, retry_after_s: int) -> None:
        self._app = app
        self._credentials = credentials
        self._header = header.lower().encode("latin-1")
        self._retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        expected = (await self._credentials.current()).origin_secret
        if not expected:
            error: Any = ServiceUnavailableError(
                "The origin secret is not available yet; retry later.",
                code="origin_secret_unavailable",
                retry_after_s=self._retry_after_s,
            )
            return await error_response(error)(scope, receive, send)
        given = next((value for name, value in scope["headers"] if name == self._header), b"")
        if not hmac.compare_digest(given, expected.encode()):
            error = ForbiddenError(
                "Requests must come through the service's HTTPS address.", code="origin_not_allowed"
            )
            return await error_response(error)(scope, receive, send)
        await self._app(scope, receive, send)
