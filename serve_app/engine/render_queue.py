"""Where each waiting job stands in one model replica's queue, and how long it has to wait.

Only the replica knows its real queue: the jobs ``@serve.batch`` handed to its render loop, in
order, behind the batch the pipeline is rendering. Callers that stream progress are told their
place from here (``DiffusionModel._tell_places``), so a caller's position counts every image ahead
of it whichever ingress, bot or handle sent it.

The wait is priced like the ingress prices it (``load_tracking``): seconds per unit of work
(one denoising step of a 512x512 image), measured on this replica's own completed batches, so a
batch of four images that took T counts T/4 per image. The rendering batch's share is what is left
of its estimate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from serve_app.core.images import ImageSpec, RenderTicket
from serve_app.core.load import LoadTracker, work_units


@dataclass(frozen=True)
class Place:
    ahead: int  # images someone still waits for, rendering or waiting before this one
    expected_wait_s: float | None  # None until this replica measured a batch


def job_units(job: ImageSpec) -> float:
    return work_units(job.steps, job.width, job.height)


class ReplicaQueue:
    def __init__(self) -> None:
        self.speed = LoadTracker()
        self._rendering: list[tuple[RenderTicket, float]] = []  # the pipeline's batch: callers, units
        self._started = 0.0

    def batch_started(
        self, jobs: Sequence[ImageSpec], tickets: Sequence[RenderTicket], at: float | None = None
    ) -> None:
        self._rendering = [(ticket, job_units(job)) for job, ticket in zip(jobs, tickets, strict=True)]
        self._started = time.perf_counter() if at is None else at

    def batch_finished(self, completed: bool, at: float | None = None) -> None:
        """Measure the batch when every image of it rendered in full (an interrupted one says nothing)."""
        at = time.perf_counter() if at is None else at
        units = sum(units for _, units in self._rendering)
        if completed and units > 0 and not any(ticket.cancelled for ticket, _ in self._rendering):
            self.speed.observe(at - self._started, 1, units)
        self._rendering = []

    def places(
        self, jobs: Sequence[ImageSpec], tickets: Sequence[RenderTicket], at: float | None = None
    ) -> list[Place | None]:
        """Per waiting job, in queue order: its place, or None for a job its caller left."""
        at = time.perf_counter() if at is None else at
        live = [units for ticket, units in self._rendering if not ticket.cancelled]
        ahead = len(live)
        per_unit = self.speed.seconds_per_unit
        # A batch every caller left is interrupted at its next step: nothing left to wait for.
        wait = max(0.0, sum(live) * per_unit - (at - self._started)) if per_unit is not None and live else 0.0
        places: list[Place | None] = []
        for job, ticket in zip(jobs, tickets, strict=True):
            if ticket.cancelled:
                places.append(None)
                continue
            units = job_units(job)
            own = None if per_unit is None else round(wait + units * per_unit, 1)
            places.append(Place(ahead=ahead, expected_wait_s=own))
            ahead += 1
            if per_unit is not None:
                wait += units * per_unit
        return places
