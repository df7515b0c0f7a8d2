"""Credentials at request time: AWS Secrets Manager first, then the settings (args, environment).

In production the Discord public key and the API keys live in one JSON secret, e.g.
``{"DISCORD_PUBLIC_KEY": "...", "DISCORD_APPLICATION_ID": "...", "RAYDIFFUSION_API_KEYS": "k1,k2"}``,
named by ``SECRETS_MANAGER_SECRET_ID``. A rotated key must take effect within ``secrets_ttl_s``
without a redeploy, yet every API-key check and every Discord ACK (3-second deadline) reads these
values: so requests never wait on AWS. They get the last values read; a stale cache starts one
refresh in the background, with short timeouts and one retry, and a failed refresh keeps the
last good values (before any, the environment's) and is tried again ``RETRY_AFTER_FAILURE_S``
later. Only the very first read of an ingress is waited for, at most ``secrets_timeout_s``, so a
fresh replica does not start by checking keys against the environment alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from serve_app.config.settings import AppSettings

logger = logging.getLogger("ray.serve")

RETRY_AFTER_FAILURE_S = 10.0


@dataclass(frozen=True)
class Credentials:
    api_keys: tuple[str, ...]
    discord_public_key: str | None
    discord_application_id: str | None

    @property
    def discord_configured(self) -> bool:
        return bool(self.discord_public_key and self.discord_application_id)


def _keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(k.strip() for k in value.split(",") if k.strip())
    if isinstance(value, list):
        return tuple(str(k).strip() for k in value if str(k).strip())
    return ()


def merge_credentials(secret: dict[str, Any], settings: AppSettings) -> Credentials:
    """The secret's values win; anything it lacks comes from the settings."""
    secret_keys = _keys(secret.get("RAYDIFFUSION_API_KEYS", secret.get("API_KEYS")))
    return Credentials(
        api_keys=secret_keys or tuple(settings.api_keys),
        discord_public_key=secret.get("DISCORD_PUBLIC_KEY") or settings.discord_public_key,
        discord_application_id=secret.get("DISCORD_APPLICATION_ID") or settings.discord_application_id,
    )


def secrets_client(timeout_s: float = 3.0) -> Any:
    """A Secrets Manager client that gives up in seconds: boto3's defaults (60 s reads, several
    retries) would hold a refresh for minutes during an AWS outage."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "secretsmanager",
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 2, "mode": "standard"},
        ),
    )


def read_secret(secret_id: str, client: Any = None) -> dict[str, Any]:
    response = (client or secrets_client()).get_secret_value(SecretId=secret_id)
    value = json.loads(response["SecretString"])
    if not isinstance(value, dict):
        raise ValueError(f"secret {secret_id} is not a JSON object")
    return value


class CredentialSource:
    def __init__(self, settings: AppSettings) -> None:
        self._settings = settings
        self._secret: dict[str, Any] = {}
        self._next_refresh_at = float("-inf")  # monotonic
        self._refresh: asyncio.Task[None] | None = None
        self._first_read_done = False
        self._client: Any = None  # built in the refresh thread, once: client creation is slow

    async def current(self) -> Credentials:
        secret_id = self._settings.secrets_manager_secret_id
        if secret_id:
            if (self._refresh is None or self._refresh.done()) and time.monotonic() >= self._next_refresh_at:
                self._refresh = asyncio.create_task(self._refresh_once(secret_id))
            if not self._first_read_done and self._refresh is not None:
                await asyncio.wait({self._refresh}, timeout=self._settings.secrets_timeout_s)
                self._first_read_done = True
        return merge_credentials(self._secret, self._settings)

    async def _refresh_once(self, secret_id: str) -> None:
        try:
            self._secret = await asyncio.to_thread(self._read, secret_id)
            self._next_refresh_at = time.monotonic() + self._settings.secrets_ttl_s
        except Exception as error:
            # Never log the secret itself; the error names only the id.
            logger.warning(
                "could not read secret %s (%s); keeping previous values", secret_id, type(error).__name__
            )
            retry_in = min(RETRY_AFTER_FAILURE_S, self._settings.secrets_ttl_s)
            self._next_refresh_at = time.monotonic() + retry_in
        finally:
            self._first_read_done = True

    def _read(self, secret_id: str) -> dict[str, Any]:
        if self._client is None:
            self._client = secrets_client(self._settings.secrets_timeout_s)
        return read_secret(secret_id, self._client)
