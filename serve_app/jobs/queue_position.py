"""A job's place in the queue and its expected wait, for callers watching a job.

The model replicas know their real queues: a replica streams each waiting job its place there
(``ProgressEvent.ahead``: images waiting or rendering on that replica before it, and the wait at
that replica's measured speed; ``serve_app/engine/render_queue.py``), and that is what callers are shown.

A job that no replica has taken yet (it waits in Serve's router, a full model queue, or for a
replica that is still starting) has no replica figure; for it the ingress estimates from what it
knows: how many images it has sent and not yet got back, and how fast images render
(``load_tracking``). Each image that finishes after the job was submitted was ahead of it (first in,
first out), the rest still are. That estimate misses images other ingress replicas sent, so it is
only used when no replica has placed the job within ``REPLICA_GRACE_S`` of its submission; before
that the place is unknown (``None``), not a guess that a replica corrects a moment later.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from serve_app.core.images import ImageSpec, ProgressEvent
from serve_app.core.load import LoadTracker, work_units

# How long a replica usually takes to place a job it was sent (Serve's routing plus the
# @serve.batch window); past it the job is probably not on any replica, and the ingress estimates.
REPLICA_GRACE_S = 1.0


class QueueInfo(BaseModel):
    position: int  # images ahead of this job's in the model's queue, not finished yet
    # Seconds until this job's images are ready at the measured speed; None before any render
    # was measured (the model may still be starting or loading its weights).
    expected_wait_s: float | None = None


class QueueSnapshot:
    """Taken just before a job's images are submitted; answers where they stand later."""

    def __init__(
        self,
        load: LoadTracker,
        jobs: list[ImageSpec],
        grace_s: float = REPLICA_GRACE_S,
        at: float | None = None,  # monotonic seconds: when the images are submitted (now)
    ) -> None:
        self._ahead = load.in_flight
        self._completed = load.completed
        self._own_units = sum(work_units(job.steps, job.width, job.height) for job in jobs)
        self._images = len(jobs)
        self._since = time.monotonic() if at is None else at
        self._grace_s = grace_s
        # Per image: the replica's latest place for it, and when it arrived (monotonic).
        self._placed: dict[int, tuple[ProgressEvent, float]] = {}

    def observe(self, index: int, event: ProgressEvent, at: float | None = None) -> bool:
        """Note a replica's place for image ``index``; True when the event carried one."""
        if event.state != "queued" or event.ahead is None:
            return False
        self._placed[index] = (event, time.monotonic() if at is None else at)
        return True

    def now(self, load: LoadTracker, at: float | None = None) -> QueueInfo | None:
        at = time.monotonic() if at is None else at
        if len(self._placed) == self._images:
            return self._from_replicas(at)
        if at - self._since < self._grace_s:
            return None
        return self._estimate(load)

    def _from_replicas(self, at: float) -> QueueInfo:
        """The job waits as long as its last image: first place, longest wait (counting down)."""
        position = min(event.ahead or 0 for event, _ in self._placed.values())
        waits = [
            None if event.expected_wait_s is None else max(0.0, event.expected_wait_s - (at - received))
            for event, received in self._placed.values()
        ]
        if any(wait is None for wait in waits):
            return QueueInfo(position=position)
        return QueueInfo(position=position, expected_wait_s=round(max(w for w in waits if w is not None), 1))

    def _estimate(self, load: LoadTracker) -> QueueInfo:
        position = max(0, self._ahead - (load.completed - self._completed))
        if load.seconds_per_unit is None:
            return QueueInfo(position=position)
        ahead_units = position * (load.units_per_image or 0.0)
        wait = (ahead_units + self._own_units) * load.seconds_per_unit
        return QueueInfo(position=position, expected_wait_s=round(wait, 1))
