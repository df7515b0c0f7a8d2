"""POST a finished prediction to the caller's webhook, with bounded retries, to public hosts only.

A receiver that is briefly down (deploying, 5xx, timeout) still gets the result: attempts back off
exponentially, up to ``max_attempts``. A 4xx other than 408/429 means the receiver rejected the
payload itself, so retrying would not help. Every attempt re-checks the destination (see
``outbound_urls``: DNS can change after the job was accepted) and connects to the address it
checked; redirects are never followed, since a public receiver could otherwise bounce the POST
to a private address. Logs show the URL redacted to its scheme, host and port.

Signed as the Standard Webhooks specification says (what Replicate sends, and what its
``standardwebhooks`` libraries verify): ``webhook-id`` names the message and stays the same on
every retry (receivers deduplicate by it), ``webhook-timestamp`` is the attempt's time (receivers
refuse stale ones, so a captured request cannot be replayed later), and ``webhook-signature`` is
``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` with the ``whsec_`` secret's key. The body
is serialised once and sent byte for byte as signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

from serve_app.config.api_keys import check_webhook_secret
from serve_app.core.errors import InvalidRequestError
from serve_app.core.outbound_urls import (
    AllowList,
    Destination,
    ForbiddenDestinationError,
    UnresolvableHostError,
    redact_url,
    resolve_destination,
)

logger = logging.getLogger("ray.serve")


async def validate_webhook(url: str, allowed_hosts: Sequence[str]) -> None:
    """At creation: a webhook that could never be called is the caller's error (400 naming it)."""
    try:
        await resolve_destination(url, AllowList.parse(allowed_hosts))
    except ForbiddenDestinationError as error:
        raise InvalidRequestError(f"'webhook' cannot be used: {error}.", param="webhook") from None


def signature_headers(
    secret: str, message_id: str, payload: bytes, at: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of message ``message_id``."""
    timestamp = str(int(time.time() if at is None else at))
    signed = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(check_webhook_secret(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


async def deliver_webhook(
    url: str,
    body: dict[str, Any],
    max_attempts: int,
    initial_backoff_s: float,
    timeout_s: float = 10.0,
    allowed_hosts: Sequence[str] = (),
    *,
    message_id: str | None = None,
    secret: str | None = None,
) -> int:
    """Returns the attempt that succeeded, or 0 if none did.

    With ``secret`` every attempt is signed (fresh timestamp, the same ``message_id``); without one
    the ``webhook-id`` header still names the message, so receivers can deduplicate retries.
    """
    allowed = AllowList.parse(allowed_hosts)
    payload = json.dumps(body, separators=(",", ":")).encode()
    shown = redact_url(url)
    backoff = initial_backoff_s
    # trust_env=False: an HTTP(S)_PROXY from the environment would connect on our behalf to
    # whatever the name resolves to there, bypassing the address check.
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as http:
        for attempt in range(1, max_attempts + 1):
            try:
                destination = await resolve_destination(url, allowed)
                headers = {"Content-Type": "application/json"}
                if message_id is not None:
                    headers["webhook-id"] = message_id
                    if secret:
                        headers.update(signature_headers(secret, message_id, payload))
                response = await _post_pinned(http, destination, payload, headers)
                if response.status_code < 300:
                    return attempt
                if response.status_code < 400:
                    logger.warning(
                        "webhook %s answered a redirect (HTTP %d); redirects are not followed",
                        shown,
                        response.status_code,
                    )
                    return 0
                if response.status_code < 500 and response.status_code not in (408, 429):
                    logger.warning("webhook %s refused the payload: HTTP %d", shown, response.status_code)
                    return 0
                reason = f"HTTP {response.status_code}"
            except UnresolvableHostError as error:
                reason = str(error)
            except ForbiddenDestinationError as error:
                logger.warning("webhook %s not called: %s", shown, error)
                return 0
            except httpx.HTTPError as error:
                reason = type(error).__name__
            if attempt < max_attempts:
                logger.info("webhook attempt %d failed (%s); retrying in %.1fs", attempt, reason, backoff)
                await asyncio.sleep(backoff)
                backoff *= 2
    logger.warning("webhook %s not delivered after %d attempts", shown, max_attempts)
    return 0


async def _post_pinned(
    http: httpx.AsyncClient, destination: Destination, payload: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST to the checked address while the receiver still sees its own name (Host, TLS SNI)."""
    original = httpx.URL(destination.url)
    pinned = original.copy_with(host=destination.address)
    host_header = original.netloc.decode("ascii").rpartition("@")[2]
    extensions = {"sni_hostname": destination.host} if original.scheme == "https" else {}
    return await http.post(
        pinned, content=payload, headers={**headers, "Host": host_header}, extensions=extensions
    )
