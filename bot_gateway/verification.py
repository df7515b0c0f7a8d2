"""Verify that an interaction really comes from Discord.

Discord signs ``timestamp + raw body`` with Ed25519 and periodically probes endpoints with bad
signatures; an endpoint that accepts one is removed from the application. So every failure here,
whatever its cause, is the same 401, and nothing of the request is processed before it passes.
"""

from __future__ import annotations

import time

from discord_interactions import verify_key

MAX_CLOCK_SKEW_S = 300  # a captured request replayed later than this is refused


class InvalidSignatureError(Exception):
    """The request is not provably from Discord; answer 401 and do nothing else."""


def verify_interaction(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: str,
    now: float | None = None,
) -> None:
    if not signature or not timestamp:
        raise InvalidSignatureError("missing X-Signature-Ed25519 or X-Signature-Timestamp")
    try:
        signed_at = int(timestamp)
        signature_bytes = bytes.fromhex(signature)
    except ValueError:
        raise InvalidSignatureError("malformed signature or timestamp") from None
    if len(signature_bytes) != 64:
        raise InvalidSignatureError("an Ed25519 signature is 64 bytes")
    current = time.time() if now is None else now
    if abs(current - signed_at) > MAX_CLOCK_SKEW_S:
        raise InvalidSignatureError("timestamp too far from now")
    # verify_key prints its exceptions; it returns False for any bad key, signature or message.
    if not verify_key(body, signature, timestamp, public_key):
        raise InvalidSignatureError("signature does not match")
