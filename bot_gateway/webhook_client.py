"""Edit interaction messages through Discord's webhook API, riding out rate limits and outages.

Edits use the interaction token (no bot token): ``PATCH /webhooks/{app}/{token}/messages/@original``.
The token lives 15 minutes, so retries are bounded by that deadline rather than by a count:
a 429 waits exactly ``retry_after``; a 5xx, timeout or connection error backs off exponentially
(capped at 30 s) and tries again until the token would expire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bot_gateway.protocol import TOKEN_LIFETIME_S

logger = logging.getLogger("ray.serve")

USER_AGENT = "DiscordBot (https://github.com/raydiffusion/raydiffusion, 0.1.0)"
MAX_BACKOFF_S = 30.0


class DiscordAPIError(Exception):
    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"Discord answered {status_code}: {body[:300]}")
        self.status_code = status_code
        self.body = body


class TokenExpiredError(DiscordAPIError):
    """Retries ran into the 15-minute token deadline."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str


class DiscordWebhookClient:
    """One job's connection to Discord: open it with ``async with`` so its sockets close with the job."""

    def __init__(
        self,
        api_base_url: str,
        application_id: str,
        retry_initial_s: float = 1.0,
        request_timeout_s: float = 15.0,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._application_id = application_id
        self._retry_initial_s = retry_initial_s
        self._http = httpx.AsyncClient(timeout=request_timeout_s, headers={"User-Agent": USER_AGENT})

    async def edit_original(
        self,
        token: str,
        payload: dict[str, Any],
        attachment: Attachment | None = None,
        deadline: float | None = None,
    ) -> None:
        """Edit the interaction's original (deferred) message; ``deadline`` is a monotonic time."""
        url = f"{self._base}/webhooks/{self._application_id}/{token}/messages/@original"
        await self._send("PATCH", url, payload, attachment, deadline)

    async def delete_original(self, token: str, deadline: float | None = None) -> None:
        """Delete the interaction's original message: for a button's interaction, the message the
        button is on (how Delete removes a result without a bot token)."""
        url = f"{self._base}/webhooks/{self._application_id}/{token}/messages/@original"
        await self._send("DELETE", url, None, None, deadline)

    async def _send(
        self,
        method: str,
        url: str,
        payload: dict[str, Any] | None,
        attachment: Attachment | None,
        deadline: float | None,
    ) -> None:
        deadline = deadline if deadline is not None else time.monotonic() + TOKEN_LIFETIME_S
        backoff = self._retry_initial_s
        while True:
            try:
                if attachment is None:
                    response = await self._http.request(method, url, json=payload)
                else:
                    response = await self._http.request(
                        method,
                        url,
                        data={"payload_json": json.dumps(payload)},
                        files={
                            "files[0]": (
                                attachment.filename,
                                attachment.content,
                                attachment.content_type,
                            )
                        },
                    )
            except httpx.TransportError as error:
                wait, reason = backoff, f"{type(error).__name__}"
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                if response.status_code < 300:
                    return
                if response.status_code == 429:
                    wait, reason = _retry_after(response), "rate limited"
                elif response.status_code >= 500:
                    wait, reason = backoff, f"HTTP {response.status_code}"
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                else:
                    raise DiscordAPIError(response.status_code, response.text)
            if time.monotonic() + wait > deadline:
                raise TokenExpiredError(0, f"gave up before the token expired ({reason})")
            logger.warning("Discord %s %s: %s; retrying in %.2fs", method, url.split("/")[-1], reason, wait)
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DiscordWebhookClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed


def _retry_after(response: httpx.Response) -> float:
    """Discord sends ``retry_after`` (float seconds) in the JSON body and a Retry-After header."""
    try:
        return max(0.0, float(response.json()["retry_after"]))
    except (ValueError, KeyError, TypeError):
        pass
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0
