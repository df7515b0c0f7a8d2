"""The model client as routes see it: admitted before sending, given back when nothing ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.api.callers import _CURRENT, Caller, Callers, MeteredClient
from serve_app.config.api_keys import CallerLimits
from serve_app.core.errors import OverloadedError, RateLimitedError
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.jobs.usage import UsageBook
from serve_app.storage.local import LocalImageStore


class Model:
    """Stands in for the deployment handle's side: records what reached it, or is full."""

    def __init__(self) -> None:
        self.received: list[ImageSpec] = []
        self.full = False

    async def generate(self, jobs: list[ImageSpec]) -> list[ImageResult]:
        if self.full:
            raise OverloadedError(5)
        self.received.extend(jobs)
        return [ImageResult(b"png", j.seed, j.width, j.height, j.steps, 0.0, 1.0, len(jobs)) for j in jobs]


def spec() -> ImageSpec:
    return ImageSpec("p", 64, 64, 2, 7.5, "ddim", 1)


def test_limits_stamp_refund_and_concurrency(tmp_path: Path) -> None:
    model = Model()
    callers = Callers(UsageBook(LocalImageStore(str(tmp_path))), 5)
    client = MeteredClient(model, callers)  # type: ignore[arg-type]
    alice = Caller("alice", CallerLimits(images_per_minute=4, concurrent_images=2), weight=2.0, priority=1)

    async def scenario() -> None:
        _CURRENT.set(alice)
        callers.quotas.admit([("alice", alice.limits)], 1)  # another request of alice's, running
        await client.generate([spec()])
        assert {(j.caller, j.caller_weight, j.caller_priority) for j in model.received} == {("alice", 2.0, 1)}
        assert callers.quotas.in_flight("alice") == 1  # released once, not twice: the other still holds
        model.full = True
        with pytest.raises(OverloadedError):
            await client.generate([spec()])
        assert callers.quotas.in_flight("alice") == 1
        model.full = False
        await client.generate([spec()])  # the refused request cost nothing of the minute (3 of 4)
        with pytest.raises(RateLimitedError):
            await client.generate([spec(), spec()])
        assert len(model.received) == 2  # the refused ones never reached the model
        await callers.usage.flush()

    asyncio.run(scenario())
