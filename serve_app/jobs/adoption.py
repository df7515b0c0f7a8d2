"""Adopting jobs whose ingress died: nothing accepted is left ``processing`` forever.

Every ingress replica sweeps the store's active jobs. A job whose record shows no heartbeat for
``prediction_stale_s`` lost its runner (crash, node gone, restart); the first replica to claim its
lease runs it again through the shared ``JobRunner.start``, with the job's own delivery (the
webhook, or the Discord message it must edit). The runner decides the outcome: a rerun with the
same seeds, a cancel that arrived meanwhile, a deadline already past, or a second interruption.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
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
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"

    def _stale(self, heartbeat_at: float | None, created_at: float) -> bool:
        return time.time() - (heartbeat_at or created_at) >= self._settings.prediction_stale_s

    async def adopt_stale(self) -> int:
        adopted = 0
        for prediction_id in await self._jobs.active_ids():
            if self._runner.is_running(prediction_id):
                continue
            record = await self._jobs.load(prediction_id)
            if record is None or record.status in TERMINAL:
                await self._jobs.unmark_active(prediction_id)
                continue
            if not self._stale(record.heartbeat_at, record.created_at):
                continue
            # The lease lasts as long as a heartbeat may be missing: once the winner runs the
            # job its heartbeat keeps everyone else off, and if it dies the lease has expired.
            if not await self._jobs.claim(prediction_id, self.owner, self._settings.prediction_stale_s):
                continue
            record = await self._jobs.load(prediction_id)  # what the winner of the claim saw may be old
            if record is None or record.status in TERMINAL:
                continue
            if not self._stale(record.heartbeat_at, record.created_at):
                continue
            logger.warning(
                "adopting prediction %s (no heartbeat for %.0fs)",
                record.id,
                time.time() - (record.heartbeat_at or record.created_at),
            )
            self._runner.start(record)
            adopted += 1
        return adopted

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.adopt_stale()
            except Exception:
                logger.exception("prediction sweep failed")
            await asyncio.sleep(self._settings.prediction_sweep_interval_s)
