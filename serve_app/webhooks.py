"""POST a finished prediction to the caller's webhook, with bounded retries.

A receiver that is briefly down (deploying, 5xx, timeout) still gets the result: attempts back off
exponentially, up to ``max_attempts``. A 4xx other than 408/429 means the receiver rejected the
payload itself, so retrying would not help.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

logger = logging.getLogger("ray.serve")


async def deliver_webhook(
    url: str, body: dict[str, Any], max_attempts: int, initial_backoff_s: float, timeout_s: float = 10.0
) -> int:
    """Returns the attempt that succeeded, or 0 if none did."""
    backoff = initial_backoff_s
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        for attempt in range(1, max_attempts + 1):
            try:
                response = await http.post(url, json=body)
                if response.status_code < 300:
                    return attempt
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    logger.warning("webhook %s refused the payload: HTTP %d", url, response.status_code)
                    return 0
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                reason = type(error).__name__
            if attempt < max_attempts:
                logger.info("webhook attempt %d failed (%s); retrying in %.1fs", attempt, reason, backoff)
                await asyncio.sleep(backoff)
                backoff *= 2
    logger.warning("webhook %s not delivered after %d attempts", url, max_attempts)
    return 0
