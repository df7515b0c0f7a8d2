"""What one image costs to ask for and what comes back: the messages between ingress and model.

Plain dataclasses, because they cross actor boundaries through Ray's pickling on every request;
validation happens once at the HTTP edge (pydantic) before a job is built.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_SEED = 2**32 - 1


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class ImageJob:
    """One image. A request for ``n`` images becomes ``n`` jobs, so batches fill across callers."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str
    seed: int
    negative_prompt: str = ""

    @property
    def group_key(self) -> tuple[int, int, int, float, str]:
        """Jobs with equal keys can share one pipeline call; anything else needs its own."""
        return (self.width, self.height, self.steps, self.guidance_scale, self.scheduler)


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    seed: int
    width: int
    height: int
    steps: int
    queue_s: float
    render_s: float
    batch_size: int
    # The model's safety checker flagged the image; ``png`` is then its blacked-out copy, never to be
    # handed out as a result.
    nsfw_content_detected: bool = False
    # The rendering replica's describe() at the time: how /v1/models learns about replicas without
    # calling one (which would wake a model scaled to zero).
    replica: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """Streamed to callers that want to show progress (the Discord bot, async jobs)."""

    state: Literal["queued", "rendering"]
    step: int = 0
    total: int = 0


@dataclass
class JobTicket:
    """A job's link between its caller and the pipeline's worker thread.

    Carries step progress back onto the replica's event loop (when the caller streams it), and the
    caller's cancellation forward, so a render nobody waits for any more stops between steps.
    """

    loop: asyncio.AbstractEventLoop
    wants_progress: bool = False
    cancelled: bool = False
    accepted_at: float = field(default_factory=time.perf_counter)
    queue: asyncio.Queue[ProgressEvent] = field(default_factory=asyncio.Queue)

    def report(self, event: ProgressEvent) -> None:
        if self.wants_progress:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
