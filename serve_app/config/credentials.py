"""Credentials at request time: AWS Secrets Manager first, then the settings (args, environment).

In production the Discord public key and the API keys live in one JSON secret, e.g.
``{"DISCORD_PUBLIC_KEY": "...", "DISCORD_APPLICATION_ID": "...", "RAYDIFFUSION_API_KEYS": "k1,k2"}``,
named by ``SECRETS_MANAGER_SECRET_ID``. A rotated key must take effect within ``secrets_ttl_s``
without a redeploy, yet every API-key check and every Discord ACK (3-second deadline) reads these
values: so requests never wait on AWS. They get the last values read; a stale cache starts one
refresh in the background, with short timeouts and one retry, and a failed refresh keeps the
last good values and is tried again ``RETRY_AFTER_FAILURE_S`` later. Only the very first read of
an ingress is waited for, at most ``secrets_timeout_s``.

Fail closed: a service told to take its keys from a secret never checks them against the
environment alone. Until the secret has been read (the first read failed or hung), and whenever
neither the secret nor the settings hold an API key, ``Credentials.api_keys_unavailable`` is set
and protected routes answer 503 with Retry-After instead of letting everyone in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from serve_app.config.api_keys import ApiKeySpec, check_webhook_secret, parse_key_specs
from serve_app.config.settings import AppSettings

logger = logging.getLogger("ray.serve")

RETRY_AFTER_FAILURE_S = 10.0
FIRST_READ_RETRY_S = 1.0


@dataclass(frozen=True)
class Credentials:
    api_keys: tuple[str, ...]
    discord_public_key: str | None
    discord_application_id: str | None
    # Every key with its name, limits and share (serve_app/config/api_keys.py); api_keys' order.
    key_specs: tuple[ApiKeySpec, ...] = ()
    # Standard Webhooks signing secret (whsec_...): the secret's WEBHOOK_SECRET, else the settings'.
    webhook_secret: str | None = field(default=None, repr=False)
    # Keys must come from a secret that has not been read yet, or that (with the settings) holds
    # none: protected routes are refused rather than opened.
    api_keys_unavailable: bool = False
    # The value CloudFront's origin header must carry (the secret's ORIGIN_VERIFY_SECRET, written by
    # `raydiffusion-aws bootstrap`); checked only when settings.origin_header is set.
    origin_secret: str | None = field(default=None, repr=False)

    @property
    def discord_configured(self) -> bool:
        return bool(self.discord_public_key and self.discord_application_id)


def _keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(k.strip() for k in value.split(",") if k.strip())
    if isinstance(value, list):
        return tuple(str(k).strip() for k in value if str(k).strip())
    return ()


def merge_credentials(
    secret: dict[str, Any], settings: AppSettings, *, secret_loaded: bool = True
) -> Credentials:
    """The secret's values win; anything it lacks comes from the settings.

    With ``secrets_manager_secret_id`` set, API keys are required: an unread secret
    (``secret_loaded=False``), or a secret and settings with no key between them, leave
    ``api_keys_unavailable`` set (and no keys), never an open door.
    """
    secret_specs = _key_specs(secret.get("RAYDIFFUSION_API_KEYS", secret.get("API_KEYS")))
    specs = secret_specs or parse_key_specs(settings.api_keys)
    keys = tuple(spec.key for spec in specs)
    from_secret = bool(settings.secrets_manager_secret_id)
    unavailable = from_secret and (not secret_loaded or not keys)
    return Credentials(
        api_keys=() if unavailable else keys,
        key_specs=specs,
        webhook_secret=_webhook_secret(secret.get("WEBHOOK_SECRET")) or settings.webhook_secret,
        discord_public_key=secret.get("DISCORD_PUBLIC_KEY") or settings.discord_public_key,
        discord_application_id=secret.get("DISCORD_APPLICATION_ID") or settings.discord_application_id,
        api_keys_unavailable=unavailable,
        origin_secret=secret.get("ORIGIN_VERIFY_SECRET") or None,
    )


def _key_specs(value: Any) -> tuple[ApiKeySpec, ...]:
    """The secret's keys; a malformed list is ignored (with a warning naming no key), never half-read."""
    try:
        return parse_key_specs(value)
    except ValueError as error:
        logger.warning("the secret's RAYDIFFUSION_API_KEYS is malformed (%s); ignored", type(error).__name__)
        return ()


def _webhook_secret(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        check_webhook_secret(value)
    except ValueError as error:
        logger.warning("the secret's WEBHOOK_SECRET is unusable (%s); ignored", error)
        return None
    return value


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
        self._loaded = False  # a read has succeeded at least once
        self._client: Any = None  # built in the refresh thread, once: client creation is slow

    async def current(self) -> Credentials:
        secret_id = self._settings.secrets_manager_secret_id
        if secret_id:
            if (self._refresh is None or self._refresh.done()) and time.monotonic() >= self._next_refresh_at:
                self._refresh = asyncio.create_task(self._refresh_once(secret_id))
            if not self._first_read_done and self._refresh is not None:
                await asyncio.wait({self._refresh}, timeout=self._settings.secrets_timeout_s)
                self._first_read_done = True
        return merge_credentials(self._secret, self._settings, secret_loaded=self._loaded or not secret_id)

    async def _refresh_once(self, secret_id: str) -> None:
        try:
            self._secret = await asyncio.to_thread(self._read, secret_id)
            self._loaded = True
            self._next_refresh_at = time.monotonic() + self._settings.secrets_ttl_s
        except Exception as error:
            # Never log the secret itself; the error names only the id.
            logger.warning(
                "could not read secret %s (%s); %s",
                secret_id,
                type(error).__name__,
                "keeping previous values" if self._loaded else "protected routes refused until it is read",
            )
            # Before any good read protected routes are refused: try again soon, not in 10 s.
            retry_in = min(
                RETRY_AFTER_FAILURE_S if self._loaded else FIRST_READ_RETRY_S, self._settings.secrets_ttl_s
            )
            self._next_refresh_at = time.monotonic() + retry_in
        finally:
            self._first_read_done = True

    def _read(self, secret_id: str) -> dict[str, Any]:
        if self._client is None:
            self._client = secrets_client(self._settings.secrets_timeout_s)
        return read_secret(secret_id, self._client)
