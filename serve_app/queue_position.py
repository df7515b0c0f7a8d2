"""A job's place in the queue and its expected wait, for callers watching a prediction.

The ingress cannot see inside the model's queue (Serve's router and ``@serve.batch`` hold it), but
it knows how many images it has sent and not yet got back, and how fast images render
(``load_tracking``). So a job notes, when its images are submitted, how many were already in
flight and how many had finished by then; every image that finishes afterwards was ahead of it
(first in, first out), and the rest still are. Images sent by other ingress replicas are not
counted: the position is a lower bound with more than one ingress.
"""

from __future__ import annotations

from pydantic import BaseModel

from serve_app.generation import ImageJob
from serve_app.load_tracking import LoadTracker, work_units


class QueueInfo(BaseModel):
    position: int  # images sent to the model before this job's and not finished yet
    # Seconds until this job's images are ready at the measured speed; None before any render
    # was measured (the model may still be starting or loading its weights).
    expected_wait_s: float | None = None


class QueueSnapshot:
    """Taken just before a job's images are submitted; answers where they stand later."""

    def __init__(self, load: LoadTracker, jobs: list[ImageJob]) -> None:
        self._ahead = load.in_flight
        self._completed = load.completed
        self._own_units = sum(work_units(job.steps, job.width, job.height) for job in jobs)

    def now(self, load: LoadTracker) -> QueueInfo:
        position = max(0, self._ahead - (load.completed - self._completed))
        if load.seconds_per_unit is None:
            return QueueInfo(position=position)
        ahead_units = position * (load.units_per_image or 0.0)
        wait = (ahead_units + self._own_units) * load.seconds_per_unit
        return QueueInfo(position=position, expected_wait_s=round(wait, 1))
