"""Adopting jobs whose ingress died: nothing accepted is left ``processing`` forever.

Every ingress replica sweeps the store's active jobs. A job whose lease (``prediction_stale_s``
long, renewed by its runner) has ended lost its runner (crash, node gone, restart); the first
replica to claim the next lease runs it again through the shared ``JobRunner.start``, with the
job's own delivery (the webhook, or the Discord message it must edit). The runner decides the
outcome: a rerun with the same seeds, a cancel that arrived meanwhile, a deadline already past,
or a second interruption. A job still active with its outcome stored died before its delivery was
made: the adopter only delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from serve_app.config.settings import AppSettings
from serve_app.jobs.records import TERMINAL, JobStore
from serve_app.jobs.runner import JobRunner

logger = logging.getLogger("ray.serve")


class JobAdopter:
    def __init__(self, runner: JobRunner, jobs: JobStore, settings: AppSettings) -> None:
        self._runner = runner
        self._jobs = jobs
        self._settings = settings

    @property
    def owner(self) -> str:
        return self._runner.owner

    async def adopt_stale(self) -> int:
        """Start every active job whose lease has ended (or that never got one in time).

        Staleness is the lease's, not the record's heartbeat: a runner keeps its lease while its
        heartbeats wait on a slow store or it waits out a full queue, and stops before the lease
        ends when it cannot renew it, so a job is never run in two places at once.
        """
        adopted = 0
        for prediction_id in await self._jobs.active_ids():
            if self._runner.is_running(prediction_id):
                continue
            record = await self._jobs.load(prediction_id)
            legacy_terminal = record is not None and record.status in TERMINAL
            if record is None or (legacy_terminal and not await self._jobs.has_outcome(prediction_id)):
                # Nothing to run, or finished before outcomes had a key of their own (delivered then).
                await self._jobs.unmark_active(prediction_id)
                continue
            idle_since = record.completed_at or record.heartbeat_at or record.created_at
            lease = await self._jobs.claim(prediction_id, self.owner, self._runner.lease_s, idle_since)
            if lease is None:
                continue
            record = await self._jobs.load(prediction_id)  # what the winner of the claim saw may be old
            if record is None:
                continue
            logger.warning(
                "adopting prediction %s (%s; idle for %.0fs)",
                record.id,
                "to deliver its outcome" if record.status in TERMINAL else "to run it",
                time.time() - idle_since,
            )
            self._runner.start(record, lease)
            adopted += 1
        return adopted

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.adopt_stale()
            except Exception:
                logger.exception("prediction sweep failed")
            await asyncio.sleep(self._settings.prediction_sweep_interval_s)
