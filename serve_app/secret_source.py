"""Credentials at request time: AWS Secrets Manager first, then the settings (args, environment).

In production the Discord public key and the API keys live in one JSON secret, e.g.
``{"DISCORD_PUBLIC_KEY": "...", "DISCORD_APPLICATION_ID": "...", "RAYDIFFUSION_API_KEYS": "k1,k2"}``,
named by ``SECRETS_MANAGER_SECRET_ID``. They are read with boto3 and cached for ``secrets_ttl_s``,
so a rotated key takes effect within the TTL without a redeploy. If Secrets Manager cannot be
reached, the last values read are kept (and, before any, the environment's), so a brief AWS
outage does not lock everyone out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from serve_app.settings import AppSettings

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


def read_secret(secret_id: str) -> dict[str, Any]:
    import boto3

    response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    value = json.loads(response["SecretString"])
    if not isinstance(value, dict):
        raise ValueError(f"secret {secret_id} is not a JSON object")
    return value


class CredentialSource:
    def __init__(self, settings: AppSettings) -> None:
        self._settings = settings
        self._secret: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> Credentials:
        secret_id = self._settings.secrets_manager_secret_id
        if secret_id and time.monotonic() - self._fetched_at > self._settings.secrets_ttl_s:
            async with self._lock:
                if time.monotonic() - self._fetched_at > self._settings.secrets_ttl_s:
                    try:
                        self._secret = await asyncio.to_thread(read_secret, secret_id)
                        self._fetched_at = time.monotonic()
                    except Exception as error:
                        # Never log the secret itself; the error names only the id.
                        logger.warning(
                            "could not read secret %s (%s); keeping previous values",
                            secret_id,
                            type(error).__name__,
                        )
                        # Try again in RETRY_AFTER_FAILURE_S rather than a whole TTL later.
                        self._fetched_at = (
                            time.monotonic() - self._settings.secrets_ttl_s + RETRY_AFTER_FAILURE_S
                        )
        return merge_credentials(self._secret, self._settings)
