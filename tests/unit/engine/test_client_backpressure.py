"""The ingress's model client under back-pressure: no render is left running for a refused caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.serve.exceptions import BackPressureError

from serve_app.config.settings import AppSettings
from serve_app.core.errors import OverloadedError
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.engine.client import ModelClient


class Response:
    """What ``remote()`` hands back: an awaitable render that can be cancelled."""

    def __init__(self) -> None:
        self.canceled = False
        self._done = asyncio.Event()

    def cancel(self) -> None:
        self.canceled = True

    def __await__(self) -> Any:
        return self._done.wait().__await__()


class QueueFullAfter:
    """A deployment handle whose model queue takes ``room`` requests, then refuses the next one
    the way Serve does: ``remote()`` itself raises BackPressureError."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[Response] = []
        self.generate = self

    def options(self, **_: Any) -> QueueFullAfter:
        return self

    def remote(self, _job: Any) -> Response:
        if len(self.sent) >= self.room:
            raise BackPressureError(num_queued_requests=self.room, max_queued_requests=self.room)
        self.sent.append(Response())
        return self.sent[-1]


def test_images_sent_before_the_queue_filled_are_cancelled_with_the_503() -> None:
    jobs = build_image_specs(GenerationParams(prompt="x"), 4, AppSettings(default_size="64x64"))
    handle = QueueFullAfter(room=2)  # images 0 and 1 are queued, image 2 is refused
    client = ModelClient(handle, timeout_s=30, retry_after_s=5)  # type: ignore[arg-type]
    with pytest.raises(OverloadedError):
        asyncio.run(client.generate(jobs))
    assert len(handle.sent) == 2
    assert [response.canceled for response in handle.sent] == [True, True]
    assert client.load.in_flight == 0
