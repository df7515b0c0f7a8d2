"""API keys with names and limits: who a caller is, what it may ask for, how it shares the model.

A key is given either as a bare string (``RAYDIFFUSION_API_KEYS=k1,k2``: no limits, named
``key-<first 8 hex digits of its SHA-256>`` so logs, usage and metrics can tell keys apart without
ever showing one) or as an object with a name and limits, in the config's ``api_keys:``, in the
environment as a JSON list, or in the Secrets Manager secret's ``RAYDIFFUSION_API_KEYS``::

    api_keys:
      - {name: alice, key: "...", images_per_minute: 60, concurrent_images: 16, daily_images: 2000}
      - {name: batch-jobs, key: "...", weight: 0.5, priority: -1}
      - {name: ops, key: "...", admin: true}        # may read GET /v1/usage

The name is what usage records, metrics and fair queueing use; the key itself never leaves this
module's callers (``repr=False``, constant-time matching).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A key name becomes part of store keys and metric tags: plain characters only. The prefixes of
# callers that are not API keys (Discord users, keyless clients) are reserved.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RESERVED_PREFIXES = ("discord-", "ip-", "anonymous")


class CallerLimits(BaseModel):
    """Limits on one caller (an API key, a Discord user or guild); None: unlimited."""

    model_config = ConfigDict(extra="forbid")

    images_per_minute: int | None = Field(
        default=None, ge=1, description="Images accepted per rolling minute."
    )
    concurrent_images: int | None = Field(
        default=None, ge=1, description="Images accepted and not yet finished, at any moment."
    )
    daily_images: int | None = Field(default=None, ge=1, description="Images accepted per UTC day.")

    @property
    def unlimited(self) -> bool:
        return self.images_per_minute is None and self.concurrent_images is None and self.daily_images is None


class ApiKeySpec(CallerLimits):
    name: str = Field(pattern=KEY_NAME_PATTERN)
    key: str = Field(min_length=1, repr=False)
    # Fair queueing on the model replica (serve_app/engine/fair_order.py): a key with weight 2
    # gets two images rendered per image of a weight-1 key while both wait; a higher priority
    # is always served first.
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)
    priority: int = Field(default=0, ge=-100, le=100)
    admin: bool = Field(default=False, description="May read everyone's usage (GET /v1/usage).")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.lower().startswith(RESERVED_PREFIXES):
            raise ValueError(f"API key names may not start with {', '.join(RESERVED_PREFIXES)}")
        return name


def default_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_key_specs(value: Any) -> tuple[ApiKeySpec, ...]:
    """Every accepted form: "k1,k2", a JSON list as a string, a list of strings and/or objects."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return parse_key_specs(json.loads(text))
        return tuple(ApiKeySpec(name=default_name(k), key=k) for k in _split(text))
    if isinstance(value, ApiKeySpec):
        return (value,)
    if isinstance(value, dict):
        return (ApiKeySpec.model_validate(value),)
    if isinstance(value, Iterable):
        specs: list[ApiKeySpec] = []
        for item in value:
            specs.extend(parse_key_specs(item) if not isinstance(item, str) else _bare(item))
        names = [spec.name for spec in specs]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate is not None:
            raise ValueError(f"API key name {duplicate!r} is used twice")
        return tuple(specs)
    raise ValueError("API keys must be a string, a list of strings or a list of {name, key, ...}")


def _split(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _bare(key: str) -> tuple[ApiKeySpec, ...]:
    key = key.strip()
    return (ApiKeySpec(name=default_name(key), key=key),) if key else ()


def match_key(presented: str, specs: Iterable[ApiKeySpec]) -> ApiKeySpec | None:
    """The spec whose key was presented, compared with every key in constant time (no early exit
    that would tell an attacker how many keys it got past)."""
    token = presented.encode()
    found: ApiKeySpec | None = None
    for spec in specs:
        if hmac.compare_digest(token, spec.key.encode()) and found is None:
            found = spec
    return found


WEBHOOK_SECRET_PREFIX = "whsec_"


def check_webhook_secret(secret: str) -> bytes:
    """The key bytes of a Standard Webhooks secret (``whsec_`` + base64 of 24 to 64 random bytes).

    Checked when the settings or the secret are read, so a mistyped secret fails the deploy (or
    is ignored with a warning on rotation) instead of signing with a key no receiver holds.
    """
    import base64
    import binascii

    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("webhook_secret must start with 'whsec_' (Standard Webhooks)")
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("webhook_secret must be 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("webhook_secret must hold 24 to 64 bytes (the spec's range)")
    return key
