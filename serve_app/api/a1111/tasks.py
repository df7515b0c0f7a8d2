"""A1111 requests in flight on this ingress: their progress for ``/sdapi/v1/progress`` and the
``/sdapi/v1/interrupt`` that stops them.

AUTOMATIC1111 renders one request at a time, so its progress and interrupt speak of "the current
job". Here every image of an A1111 request is an ordinary ``ImageSpec`` streamed through the
``ModelClient`` (so it batches with everybody else's), and this registry keeps, per request (a
*task*, named by ``force_task_id`` or a generated ``task(...)`` id as A1111 does), the steps each
image has reached. Progress answers for the caller's task when it names it (``id_task``), else for
the oldest task still running here. Interrupt cancels the images' streams: the model stops their
render between denoising steps (once every caller sharing that pipeline call has left), and the
request answers with the images that were already finished.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from serve_app.api.a1111.protocol import ProgressResponse
from serve_app.core.errors import GenerationFailedError, InvalidRequestError
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.core.load import LoadTracker
from serve_app.engine.client import ModelClient
from serve_app.jobs.queue_position import QueueInfo, QueueSnapshot
from serve_app.ops.request_log import log_finished_request

# Finished tasks stay answerable by id for a while (clients poll once more after the answer).
RECENT_TASKS = 256


def new_task_id(kind: str) -> str:
    """A1111's ``create_task_id``: ``task(txt2img-AB12CD3)``."""
    suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(7))
    return f"task({kind}-{suffix})"


@dataclass
class A1111Task:
    id: str
    job: str  # A1111's state.job, e.g. "scripts_txt2img"
    steps: list[int]  # per image: steps asked for
    batch_size: int
    started_at: float = field(default_factory=time.time)
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    done_steps: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    ended: bool = False
    queue: QueueSnapshot | None = None  # taken when its images are submitted, told their places
    load: LoadTracker | None = None

    def __post_init__(self) -> None:
        self.done_steps = [0] * len(self.steps)
        self.finished = [False] * len(self.steps)

    @property
    def progress(self) -> float:
        total = sum(self.steps)
        return min(1.0, sum(self.done_steps) / total) if total else 0.0

    def state(self) -> dict[str, Any]:
        """A1111's ``shared.state.dict()``: one A1111 "job" is one ``n_iter`` batch of images."""
        batches = [
            range(start, min(start + self.batch_size, len(self.steps)))
            for start in range(0, len(self.steps), self.batch_size)
        ]
        done_batches = sum(all(self.finished[i] for i in batch) for batch in batches)
        current = next((b for b in batches if not all(self.finished[i] for i in b)), None)
        step = min((self.done_steps[i] for i in current if not self.finished[i]), default=0) if current else 0
        return {
            "skipped": False,
            "interrupted": self.interrupted.is_set(),
            "stopping_generation": False,
            "job": "" if self.ended else self.job,
            "job_count": 0 if self.ended else len(batches),
            "job_timestamp": datetime.fromtimestamp(self.started_at).strftime("%Y%m%d%H%M%S"),
            "job_no": done_batches,
            "sampling_step": step,
            "sampling_steps": max(self.steps, default=0),
        }

    def waiting(self) -> QueueInfo | None:
        """Where its images stand in line, until the first of them starts rendering."""
        if self.ended or any(self.done_steps) or self.queue is None or self.load is None:
            return None
        return self.queue.now(self.load)

    def textinfo(self) -> str:
        if self.ended:
            return "Interrupted" if self.interrupted.is_set() else "Done"
        if not any(self.done_steps):
            waiting = self.waiting()
            return "Waiting..." if waiting is None else f"In queue: {waiting.position} ahead"
        return f"Sampling step {sum(self.done_steps)}/{sum(self.steps)}"


IDLE_STATE: dict[str, Any] = {
    "skipped": False,
    "interrupted": False,
    "stopping_generation": False,
    "job": "",
    "job_count": 0,
    "job_timestamp": "0",
    "job_no": 0,
    "sampling_step": 0,
    "sampling_steps": 0,
}


class A1111Tasks:
    def __init__(self) -> None:
        self._running: dict[str, A1111Task] = {}
        self._recent: OrderedDict[str, A1111Task] = OrderedDict()

    def start(self, task_id: str | None, kind: str, jobs: Sequence[ImageSpec], batch_size: int) -> A1111Task:
        if task_id is not None and task_id in self._running:
            raise InvalidRequestError(f"Task {task_id!r} is already running.", param="force_task_id")
        task = A1111Task(
            id=task_id or new_task_id(kind),
            job=f"scripts_{kind}",
            steps=[job.steps for job in jobs],
            batch_size=max(1, batch_size),
        )
        self._running[task.id] = task
        return task

    async def run(
        self, task: A1111Task, client: ModelClient, jobs: Sequence[ImageSpec]
    ) -> list[ImageResult | None]:
        """Every image's result, in order; ``None`` for images stopped by an interrupt.

        One failed image fails the request (its siblings are stopped), as for every other route.
        """

        queue = QueueSnapshot(client.load, list(jobs))

        async def one(index: int, job: ImageSpec) -> ImageResult:
            async for event in client.generate_stream(job):
                if isinstance(event, ImageResult):
                    task.done_steps[index], task.finished[index] = job.steps, True
                    return event
                queue.observe(index, event)  # the replica's real place for it
                task.done_steps[index] = min(event.step, job.steps)
            raise GenerationFailedError("The model stream ended without an image.")

        task.queue, task.load = queue, client.load
        images = [asyncio.create_task(one(i, job)) for i, job in enumerate(jobs)]
        interrupted = asyncio.create_task(task.interrupted.wait())
        outcome = "canceled"
        rendered: list[ImageResult] = []
        try:
            pending: set[asyncio.Future[Any]] = set(images)
            while pending and not task.interrupted.is_set():
                done, pending = await asyncio.wait(
                    pending | {interrupted}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(interrupted)
                for finished in done:
                    error = None if finished is interrupted else finished.exception()
                    if error is not None:
                        raise error  # the finally below stops the siblings
            results = [
                image.result() if image.done() and not image.cancelled() and not image.exception() else None
                for image in images
            ]
            rendered = [result for result in results if result is not None]
            outcome = "succeeded" if len(rendered) == len(results) else "canceled"  # interrupted
            return results
        except BaseException as error:
            outcome = str(getattr(error, "code", None) or "canceled")  # as ModelClient logs them
            raise
        finally:
            for image in (*images, interrupted):
                image.cancel()
            await asyncio.gather(*images, interrupted, return_exceptions=True)
            self._end(task)
            # Streamed images skip ModelClient.generate's request log: one line per A1111 request.
            log_finished_request(list(jobs), rendered, outcome, source="a1111", request_id=task.id)

    def interrupt(self) -> int:
        """Interrupt every A1111 task running on this ingress; how many there were."""
        for task in self._running.values():
            task.interrupted.set()
        return len(self._running)

    def progress(self, task_id: str | None) -> ProgressResponse:
        task = self._find(task_id)
        if task is None:
            return ProgressResponse(progress=0, eta_relative=0, state=dict(IDLE_STATE), textinfo=None)
        progress = 1.0 if task.ended and not task.interrupted.is_set() else task.progress
        elapsed = time.time() - task.started_at
        eta = elapsed / progress - elapsed if 0 < progress < 1 and not task.ended else 0.0
        waiting = task.waiting()
        if waiting is not None and waiting.expected_wait_s is not None:
            eta = waiting.expected_wait_s
        return ProgressResponse(
            progress=progress,
            eta_relative=eta,
            state=task.state(),
            current_image=None,
            textinfo=task.textinfo(),
            current_task=task.id,
            queue_position=None if waiting is None else waiting.position,
            expected_wait_s=None if waiting is None else waiting.expected_wait_s,
        )

    def _find(self, task_id: str | None) -> A1111Task | None:
        if task_id is not None:
            return self._running.get(task_id) or self._recent.get(task_id)
        return next(iter(self._running.values()), None)

    def _end(self, task: A1111Task) -> None:
        task.ended = True
        self._running.pop(task.id, None)
        self._recent[task.id] = task
        while len(self._recent) > RECENT_TASKS:
            self._recent.popitem(last=False)
