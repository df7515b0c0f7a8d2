"""``GET /v1/usage``: images, pixels x steps and GPU-seconds, summed by caller and UTC day.

An admin key (``admin: true`` in its spec) reads everyone's; any other key reads its own (the
``caller`` filter is then its own name). Without API keys there is no one to trust with other
callers' usage, so the route answers 403: an open service does not publish who used it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.params import Depends

from serve_app.api.callers import request_caller
from serve_app.config.api_keys import KEY_NAME_PATTERN
from serve_app.core.errors import ForbiddenError, InvalidRequestError
from serve_app.core.quotas import utc_day
from serve_app.jobs.usage import UsageBook

DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# Key names, Discord users and keyless clients (ip-...): what usage records name.
CALLER_PATTERN = KEY_NAME_PATTERN.replace("{0,63}", "{0,80}")


def create_usage_router(usage: UsageBook, dependencies: list[Depends]) -> APIRouter:
    router = APIRouter(dependencies=dependencies)

    @router.get("/v1/usage")
    async def read_usage(
        request: Request,
        start: Annotated[str | None, Query(pattern=DAY_PATTERN)] = None,
        end: Annotated[str | None, Query(pattern=DAY_PATTERN)] = None,
        caller: Annotated[str | None, Query(pattern=CALLER_PATTERN)] = None,
    ) -> dict[str, Any]:
        """Totals per caller and day from ``start`` to ``end`` (UTC days, both included; default today)."""
        asking = request_caller(request)
        if asking is None or asking.name.startswith(("ip-", "anonymous")):
            raise ForbiddenError("Usage needs an API key (an admin key for other callers' usage).")
        if not asking.admin:
            if caller is not None and caller != asking.name:
                raise ForbiddenError("Only an admin key may read another caller's usage.", param="caller")
            caller = asking.name
        today = utc_day(time.time())
        start = start or end or today
        end = end or (today if start <= today else start)
        try:
            rows = await usage.summary(start, end, caller)
        except ValueError as error:
            raise InvalidRequestError(f"Invalid days: {error}.", param="start") from None
        return {
            "object": "list",
            "start": start,
            "end": end,
            "caller": caller,
            "data": rows,
            "total": {
                "requests": sum(row["requests"] for row in rows),
                "images": sum(row["images"] for row in rows),
                "pixel_steps": sum(row["pixel_steps"] for row in rows),
                "gpu_s": round(sum(row["gpu_s"] for row in rows), 3),
            },
        }

    return router
