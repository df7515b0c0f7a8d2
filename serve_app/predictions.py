"""Asynchronous image jobs ("predictions", after Replicate's API) that are never silently lost.

A prediction is accepted (201) once its record, with every seed already resolved, is in the store.
From then on it ends ``succeeded``, ``failed`` or ``canceled``, whatever happens in between:

- the run writes progress and a heartbeat to the record about once a second, so any ingress
  replica can answer ``GET /v1/predictions/{id}`` and see a cancel request;
- a render whose model replica died is retried once (same seeds, same images), then failed;
- a full model queue is waited out (it is back-pressure, not failure) until the request deadline;
- a job whose ingress died (no heartbeat for ``prediction_stale_s``) is adopted by a sweep on any
  ingress replica and run again, at most twice in all.

The Discord bot runs its renders through the same ``execute`` with an observer for progress.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import asdict
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from serve_app.errors import APIError, GenerationFailedError, OverloadedError
from serve_app.generation import ImageJob, ImageResult, ProgressEvent
from serve_app.image_store import ImageStore, save_results
from serve_app.model_client import ModelClient
from serve_app.schemas import GenerationParams, build_jobs
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
MAX_ATTEMPTS = 2
HEARTBEAT_S = 1.0


class Progress(BaseModel):
    step: int = 0
    total: int = 0


class PredictionRecord(BaseModel):
    id: str
    status: Status = "starting"
    source: Literal["api", "discord"] = "api"
    input: dict[str, Any]
    jobs: list[dict[str, Any]]  # resolved ImageJobs: a rerun renders exactly the same images
    webhook: str | None = None
    base_url: str = ""  # where the caller reached us: the base of local image URLs
    image_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    progress: Progress = Field(default_factory=Progress)
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    queue_time_s: float | None = None
    predict_time_s: float | None = None
    attempts: int = 0
    heartbeat_at: float | None = None
    cancel_requested: bool = False
    webhook_attempts: int = 0

    @property
    def key(self) -> str:
        return record_key(self.id)


def record_key(prediction_id: str) -> str:
    return f"predictions/{prediction_id}.json"


def active_key(prediction_id: str) -> str:
    return f"predictions-active/{prediction_id}.json"


class ProgressObserver(Protocol):
    def update(self, event: ProgressEvent) -> None: ...


class PredictionCanceled(Exception):
    """Raised inside a run when a cancel request arrives through the store."""


class PredictionService:
    def __init__(self, client: ModelClient, store: ImageStore, settings: AppSettings) -> None:
        self._client = client
        self._store = store
        self._settings = settings
        self._tasks: dict[str, asyncio.Task[PredictionRecord]] = {}
        self._cancelling: set[str] = set()

    @property
    def store(self) -> ImageStore:
        return self._store

    @property
    def client(self) -> ModelClient:
        return self._client

    # --- records -----------------------------------------------------------------------------

    async def save(self, record: PredictionRecord) -> None:
        await asyncio.to_thread(self._store.put_json, record.key, record.model_dump(mode="json"))

    async def load(self, prediction_id: str) -> PredictionRecord | None:
        if not prediction_id.startswith("pred_") or not prediction_id[5:].isalnum():
            return None
        data = await asyncio.to_thread(self._store.get_json, record_key(prediction_id))
        return PredictionRecord.model_validate(data) if data else None

    async def create(
        self,
        params: GenerationParams,
        count: int,
        webhook: str | None,
        source: Literal["api", "discord"],
        base_url: str = "",
    ) -> PredictionRecord:
        """Validate, resolve seeds and persist; the job is accepted once this returns."""
        jobs = build_jobs(params, count, self._settings)
        record = PredictionRecord(
            id=f"pred_{secrets.token_hex(10)}",
            source=source,
            input={**params.model_dump(exclude_none=True), "n": count},
            jobs=[asdict(job) for job in jobs],
            webhook=webhook,
            base_url=self._settings.public_base_url or base_url,
            created_at=time.time(),
        )
        await self.save(record)
        await asyncio.to_thread(self._store.put_json, active_key(record.id), {"id": record.id})
        return record

    def start(self, record: PredictionRecord) -> asyncio.Task[PredictionRecord]:
        task = asyncio.create_task(self.execute(record))
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))
        return task

    async def cancel(self, prediction_id: str) -> PredictionRecord | None:
        record = await self.load(prediction_id)
        if record is None or record.status in TERMINAL:
            return record
        task = self._tasks.get(prediction_id)
        if task is not None:
            self._cancelling.add(prediction_id)
            task.cancel()
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                return await self.load(prediction_id)
        # Running on another replica: it sees the flag at its next heartbeat.
        record.cancel_requested = True
        await self.save(record)
        return record

    # --- running -------------------------------------------------------------------------------

    async def execute(
        self, record: PredictionRecord, observer: ProgressObserver | None = None
    ) -> PredictionRecord:
        """Run to a terminal state; always returns the final record, never raises for a job."""
        jobs = [ImageJob(**job) for job in record.jobs]
        deadline = time.monotonic() + self._settings.request_timeout_s
        try:
            while True:
                record.attempts += 1
                record.status = "processing"
                record.started_at = record.started_at or time.time()
                record.heartbeat_at = time.time()
                record.error = None
                await self.save(record)
                try:
                    results = await self._render(record, jobs, observer)
                    break
                except OverloadedError:
                    record.attempts -= 1  # back-pressure is not a failed attempt: wait for room
                    if time.monotonic() + self._settings.retry_after_s > deadline:
                        raise
                    await asyncio.sleep(self._settings.retry_after_s)
                except GenerationFailedError as error:
                    if record.attempts >= MAX_ATTEMPTS:
                        raise
                    logger.warning("prediction %s: %s; retrying once", record.id, error.message)
            await self._succeed(record, jobs, results)
        except asyncio.CancelledError:
            if record.id not in self._cancelling:
                raise  # the replica is shutting down: leave the record for another to adopt
            self._cancelling.discard(record.id)
            record.status, record.error = "canceled", None
        except PredictionCanceled:
            record.status, record.error = "canceled", None
        except APIError as error:
            record.status, record.error = "failed", error.message
        except Exception as error:
            logger.exception("prediction %s failed", record.id)
            record.status, record.error = "failed", f"Internal error: {type(error).__name__}"
        record.completed_at = time.time()
        if record.started_at is not None:
            record.predict_time_s = round(record.completed_at - record.started_at, 3)
        await self._finish(record)
        return record

    async def _render(
        self, record: PredictionRecord, jobs: list[ImageJob], observer: ProgressObserver | None
    ) -> list[ImageResult]:
        steps = [0] * len(jobs)
        total = sum(job.steps for job in jobs)

        async def one(index: int, job: ImageJob) -> ImageResult:
            async for event in self._client.generate_stream(job):
                if isinstance(event, ImageResult):
                    return event
                steps[index] = event.step
                if observer is not None:
                    observer.update(ProgressEvent(event.state, sum(steps), total) if len(jobs) > 1 else event)
            raise GenerationFailedError("The model stream ended without an image.")

        render = asyncio.ensure_future(asyncio.gather(*(one(i, job) for i, job in enumerate(jobs))))
        try:
            while True:
                done, _ = await asyncio.wait({render}, timeout=HEARTBEAT_S)
                if done:
                    return list(render.result())
                record.progress = Progress(step=sum(steps), total=total)
                record.heartbeat_at = time.time()
                stored = await self.load(record.id)
                if stored is not None and stored.cancel_requested:
                    raise PredictionCanceled
                await self.save(record)
        finally:
            if not render.done():
                render.cancel()
                await asyncio.gather(render, return_exceptions=True)

    async def _succeed(
        self, record: PredictionRecord, jobs: list[ImageJob], results: list[ImageResult]
    ) -> None:
        image_ids = await asyncio.to_thread(
            save_results, self._store, self._settings, jobs, results, record.source, record.id
        )
        record.image_ids = image_ids
        record.queue_time_s = round(max(result.queue_s for result in results), 3)
        record.progress = Progress(step=sum(job.steps for job in jobs), total=sum(job.steps for job in jobs))
        record.status = "succeeded"

    async def _finish(self, record: PredictionRecord) -> None:
        await self.save(record)
        await asyncio.to_thread(self._store.delete, active_key(record.id))
        if record.webhook:
            from serve_app.webhooks import deliver_webhook

            body = prediction_view(record, self._store, record.base_url)
            record.webhook_attempts = await deliver_webhook(
                record.webhook,
                body,
                self._settings.webhook_max_attempts,
                self._settings.webhook_retry_initial_s,
            )
            await self.save(record)

    # --- adoption of jobs whose ingress died ----------------------------------------------------

    async def adopt_stale(self) -> int:
        keys = await asyncio.to_thread(self._store.list_keys, "predictions-active/")
        adopted = 0
        for key in keys:
            prediction_id = key.rsplit("/", 1)[-1].removesuffix(".json")
            if prediction_id in self._tasks:
                continue
            record = await self.load(prediction_id)
            if record is None or record.status in TERMINAL:
                await asyncio.to_thread(self._store.delete, key)
                continue
            last_sign_of_life = record.heartbeat_at or record.created_at
            if time.time() - last_sign_of_life < self._settings.prediction_stale_s:
                continue
            adopted += 1
            if record.attempts >= MAX_ATTEMPTS:
                record.status = "failed"
                record.error = "The job was interrupted and could not be completed."
                record.completed_at = time.time()
                await self._finish(record)
            else:
                logger.warning(
                    "adopting prediction %s (no heartbeat for %.0fs)",
                    record.id,
                    time.time() - last_sign_of_life,
                )
                self.start(record)
        return adopted

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.adopt_stale()
            except Exception:
                logger.exception("prediction sweep failed")
            await asyncio.sleep(self._settings.prediction_sweep_interval_s)


def prediction_view(record: PredictionRecord, store: ImageStore, base_url: str) -> dict[str, Any]:
    """The public shape (Replicate's), with image URLs made at read time (presigned ones expire)."""
    base = base_url.rstrip("/")
    output = [store.image_url(i, base) for i in record.image_ids] if record.status == "succeeded" else None
    metrics: dict[str, float] = {}
    if record.queue_time_s is not None:
        metrics["queue_time"] = record.queue_time_s
    if record.predict_time_s is not None:
        metrics["predict_time"] = record.predict_time_s
    return {
        "id": record.id,
        "status": record.status,
        "input": record.input,
        "output": output,
        "error": record.error,
        "progress": record.progress.model_dump() if record.status != "starting" else None,
        "metrics": metrics,
        "seeds": [job["seed"] for job in record.jobs],
        "attempts": record.attempts,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "completed_at": _iso(record.completed_at),
        "urls": {
            "get": f"{base}/v1/predictions/{record.id}",
            "cancel": f"{base}/v1/predictions/{record.id}/cancel",
        },
    }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
