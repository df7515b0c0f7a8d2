"""Who is asking, what they may still ask for, and what they used: callers of the HTTP API.

The API-key guard (``http_app.api_key_guard``) names every request's caller: the matched key's
name, or without keys the client's address (``ip-<address>``), so fair queueing and usage work on
an open service too. Every image a caller sends then travels with that name, weight and priority
on its ``ImageSpec``: the model replica shares its queue across callers by them.

``MeteredClient`` is the model client as the synchronous routes (OpenAI, ``/imagine``, edits,
A1111) see it: it admits the request against the caller's limits before anything is queued
(429 + Retry-After when over: ``serve_app/core/quotas.py``), stamps the caller on the images,
and records the usage of what was rendered (``serve_app/jobs/usage.py``). One wrapper rather than
a line in every route: each route already sends its images through the client, and a route added
later cannot forget the limits. Predictions admit at creation (``admit`` below) and are recorded
by the job runner when they finish.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request

from serve_app.config.api_keys import ApiKeySpec, CallerLimits
from serve_app.core.errors import OverloadedError
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent
from serve_app.core.load import LoadTracker
from serve_app.core.quotas import Admission, QuotaBook, utc_day
from serve_app.engine.client import ModelClient, ReplicaReports
from serve_app.jobs.usage import UsageBook

logger = logging.getLogger("ray.serve")

# A daily budget's seed read from the store must not hold a request up for long.
DAILY_SEED_TIMEOUT_S = 1.0
_ADDRESS_CHARACTERS = re.compile(r"[^A-Za-z0-9.]")


@dataclass(frozen=True)
class Caller:
    name: str
    limits: CallerLimits = field(default_factory=CallerLimits)
    weight: float = 1.0
    priority: int = 0
    admin: bool = False

    def stamp(self, jobs: Sequence[ImageSpec]) -> list[ImageSpec]:
        return [
            replace(job, caller=self.name, caller_weight=self.weight, caller_priority=self.priority)
            for job in jobs
        ]


def key_caller(spec: ApiKeySpec) -> Caller:
    limits = CallerLimits(
        images_per_minute=spec.images_per_minute,
        concurrent_images=spec.concurrent_images,
        daily_images=spec.daily_images,
    )
    return Caller(spec.name, limits, spec.weight, spec.priority, spec.admin)


def keyless_caller(request: Request) -> Caller:
    """Without API keys, the client's address tells callers apart (Serve's proxy passes it on)."""
    host = request.client.host if request.client else ""
    return Caller(f"ip-{_ADDRESS_CHARACTERS.sub('-', host)[:60]}" if host else "anonymous")


_CURRENT: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("raydiffusion_caller", default=None)


def set_caller(request: Request, caller: Caller) -> None:
    """Called by the key guard: the caller of this request, for the routes and the model client."""
    request.state.caller = caller
    _CURRENT.set(caller)


def request_caller(request: Request) -> Caller | None:
    return getattr(request.state, "caller", None)


class Callers:
    """Limits and usage of the HTTP callers of one ingress replica."""

    def __init__(self, usage: UsageBook, concurrency_retry_after_s: int) -> None:
        self.usage = usage
        self.quotas = QuotaBook(concurrency_retry_after_s)

    async def admit(self, caller: Caller, images: int) -> Admission:
        """Take ``images`` from the caller's limits, or raise ``RateLimitedError`` (nothing queued)."""
        if caller.limits.unlimited:
            return Admission((), images)
        if caller.limits.daily_images is not None and self.quotas.needs_daily_seed(caller.name):
            try:
                stored = await asyncio.wait_for(
                    self.usage.images_on(caller.name, utc_day_now()), DAILY_SEED_TIMEOUT_S
                )
                self.quotas.seed_daily(caller.name, stored)
            except Exception as error:  # the store is slow or down: count what this replica saw
                logger.warning("daily usage of %s not read (%s)", caller.name, type(error).__name__)
        return self.quotas.admit([(caller.name, caller.limits)], images)


def utc_day_now() -> str:
    return utc_day(time.time())


class MeteredClient:
    """``ModelClient`` with the caller's limits, name and usage (see the module docstring).

    Calls made outside an HTTP request (the job runner's) carry no caller here and pass straight
    through: their images were admitted and stamped when the job was created.
    """

    def __init__(self, client: ModelClient, callers: Callers) -> None:
        self._client = client
        self._callers = callers

    def __getattr__(self, name: str) -> Any:
        # Everything else the routes read from the client (its deployment, timeouts...) is the
        # model client's own: a wrapper must not hide what another route needs.
        return getattr(self._client, name)

    @property
    def load(self) -> LoadTracker:
        return self._client.load

    @property
    def replicas(self) -> ReplicaReports:
        return self._client.replicas

    async def generate(self, jobs: list[ImageSpec]) -> list[ImageResult]:
        caller = _CURRENT.get()
        if caller is None:  # not an HTTP caller's request: nothing to admit, only to count
            results = await self._client.generate(jobs)
            self._callers.usage.record(jobs, results, "sync")
            return results
        admission = await self._callers.admit(caller, len(jobs))
        stamped = caller.stamp(jobs)
        try:
            results = await self._client.generate(stamped)
        except OverloadedError:
            self._callers.quotas.refund(admission)  # nothing was queued: it costs the caller nothing
            raise
        except BaseException:
            self._callers.quotas.release(admission)
            raise
        self._callers.quotas.release(admission)
        self._callers.usage.record(stamped, results, "sync")
        return results

    async def generate_stream(self, job: ImageSpec) -> AsyncIterator[ProgressEvent | ImageResult]:
        caller = _CURRENT.get()
        if job.caller or caller is None:
            # A stored job's image (the job runner's): admitted and stamped when the job was
            # created, so only counted here, image by image, whoever runs or adopts the job.
            async for event in self._client.generate_stream(job):
                if isinstance(event, ImageResult):
                    self._callers.usage.record([job], [event], "job")
                yield event
            return
        # Streams are per image (A1111 sends a request's images as one stream each): admitted one
        # by one, so a request crossing a limit midway is refused and its siblings are stopped.
        admission = await self._callers.admit(caller, 1)
        (stamped,) = caller.stamp([job])
        given_back = False
        try:
            async for event in self._client.generate_stream(stamped):
                if isinstance(event, ImageResult):
                    self._callers.usage.record([stamped], [event], "sync")
                yield event
        except OverloadedError:
            self._callers.quotas.refund(admission)  # refund includes the concurrency
            given_back = True
            raise
        finally:
            if not given_back:
                self._callers.quotas.release(admission)
