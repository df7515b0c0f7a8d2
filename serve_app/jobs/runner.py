"""Running a stored job to a terminal state: render, heartbeat, retry, cancel, deadline.

Once accepted, a job ends ``succeeded``, ``failed`` or ``canceled`` whatever happens in between:

- the run writes progress and a heartbeat to the record about once a second, so any ingress
  replica can answer for it, and reads the job's cancel marker as often;
- a render whose model replica died is retried once (same seeds, same images), then failed; the
  other images of the job are cancelled first, so the retry never renders anything twice at once;
- a full model queue is waited out (it is back-pressure, not failure) for ``request_timeout_s``;
- a job with a deadline (a Discord job: its interaction token dies 15 minutes after the command)
  is bounded by it end to end: queue wait, every attempt and storing the images. Past it the job
  is failed with ``error_code == "deadline"`` so its source can say so while it still can.

Each job's source plugs in a ``Delivery`` (the API's webhook, the Discord message) that wraps the
run: it observes progress and hands the outcome over. Fresh and adopted jobs go through the same
``start``, so an adopted Discord job still edits its message.

One job runs in one place at a time, and delivery is part of the job (see jobs/records.py):

- ``start`` first takes the job's lease; a ``LeaseKeeper`` renews it in the background, apart from
  progress heartbeats and overload waits, and stops the run (without storing anything) as soon as
  it cannot be sure it still holds it, before any other replica can take it over;
- the outcome is stored once (``JobStore.finalize``), then delivered, and only then is the job
  marked done. An ingress that dies in between leaves it active: the replica that adopts it finds
  its outcome stored and only delivers it (``execute`` returns a terminal job as it is). So a
  delivery is made at least once; receivers tell repeats apart by the prediction id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from serve_app.config.settings import AppSettings
from serve_app.core.content_policy import MESSAGE as FLAGGED_MESSAGE
from serve_app.core.errors import ContentPolicyError, GenerationFailedError, OverloadedError, ServiceError
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent
from serve_app.engine.client import ModelClient
from serve_app.jobs.log import log_finished_job
from serve_app.jobs.preview_board import Preview, PreviewBoard
from serve_app.jobs.queue_position import QueueInfo, QueueSnapshot
from serve_app.jobs.records import TERMINAL, JobRecord, JobStore, Lease, Progress
from serve_app.ops import metrics as service_metrics
from serve_app.ops.alerts import failure_alerts
from serve_app.storage import save_results

logger = logging.getLogger("ray.serve")

MAX_ATTEMPTS = 2
HEARTBEAT_S = 1.0
# A heartbeat against a slow store must not stall the run; a missed one is only a late one.
HEARTBEAT_STORE_TIMEOUT_S = 5.0
# A cancel on another replica is seen at that replica's next heartbeat.
CANCEL_WAIT_S = 2 * HEARTBEAT_S + 1.0
# Renewals per lease: a lease survives LEASE_RENEWALS - 1 slow or failed renewals in a row.
LEASE_RENEWALS = 4


class ProgressObserver(Protocol):
    def update(self, event: ProgressEvent) -> None: ...

    # The job's place in line while none of its images renders yet; None once one does.
    def queued(self, info: QueueInfo | None) -> None: ...

    # A job of several images: the latest preview of each (by image index) whenever one arrives,
    # since ``update`` carries only the summed progress. A one-image job's preview rides on ``update``.
    def previewed(self, latest: dict[int, Preview]) -> None: ...


Execute = Callable[[ProgressObserver | None], Awaitable[JobRecord]]


class Delivery(Protocol):
    """What a job's source does around its run: call ``execute`` once, then deliver the outcome."""

    async def __call__(self, record: JobRecord, execute: Execute) -> None: ...


class PredictionCanceled(Exception):
    """A cancel request arrived (through the store or on this replica)."""


class DeadlineExceeded(Exception):
    """The job's deadline passed before it could finish."""


class LeaseKeeper:
    """Renews a job's lease while it runs; cancels the run the moment the lease may be lost.

    Renewal is its own task, on its own schedule: a heartbeat that waits on a slow store, or a
    run that waits out a full model queue for ``retry_after_s``, never lets the lease lapse
    unnoticed. A renewal that has not landed by the time the holder's own view of the lease ends
    (``Lease.valid_until``, which ends before the other replicas' view does) counts as lost.
    """

    def __init__(self, jobs: JobStore, lease: Lease, lease_s: float, run: asyncio.Task[None]) -> None:
        self.lease = lease
        self.lost = False
        self._jobs = jobs
        self._lease_s = lease_s
        self._run = run
        self._task = asyncio.create_task(self._keep())

    def held(self) -> bool:
        return not self.lost and self.lease.held()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / LEASE_RENEWALS)
            remaining = self.lease.valid_until - time.monotonic()
            renewed = None
            if remaining > 0:
                try:
                    # A renewal that has not landed when the lease ends (on our side) is a loss.
                    renewed = await asyncio.wait_for(self._jobs.renew(self.lease, self._lease_s), remaining)
                except TimeoutError:
                    renewed = None
                except Exception as error:
                    logger.warning(
                        "prediction %s: lease renewal failed (%s)",
                        self.lease.prediction_id,
                        type(error).__name__,
                    )
                    if self.lease.held():
                        continue  # try again at the next renewal, while the lease still holds
            if renewed is None:
                logger.warning(
                    "prediction %s: lease lost; stopping here, another replica may run it",
                    self.lease.prediction_id,
                )
                self.lost = True
                self._run.cancel()
                return
            self.lease = renewed


class JobRunner:
    def __init__(
        self,
        client: ModelClient,
        jobs: JobStore,
        settings: AppSettings,
        deliveries: dict[str, Delivery] | None = None,
    ) -> None:
        self._client = client
        self._jobs = jobs
        self._settings = settings
        self._deliveries = dict(deliveries or {})
        # Who holds the leases this runner takes: unique per process and per runner.
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._keepers: dict[str, LeaseKeeper] = {}
        # Per job, the heartbeat write in flight: at most one (see _heartbeat).
        self._beats: dict[str, asyncio.Future[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._finished: dict[str, asyncio.Event] = {}
        # Live previews of the jobs running here: in memory only (see preview_board).
        self.previews = PreviewBoard()

    @property
    def client(self) -> ModelClient:
        return self._client

    @property
    def jobs(self) -> JobStore:
        return self._jobs

    def add_delivery(self, source: str, delivery: Delivery) -> None:
        self._deliveries[source] = delivery

    def is_running(self, prediction_id: str) -> bool:
        return prediction_id in self._tasks

    @property
    def lease_s(self) -> float:
        return self._settings.prediction_stale_s

    def start(self, record: JobRecord, lease: Lease | None = None) -> asyncio.Task[None]:
        """Take the job's lease (unless given one), run the job and deliver it, in the background.

        The task never raises for a job. A job whose lease another replica holds is left to it; a
        job already terminal (adopted after its ingress died before delivering) is only delivered.
        """
        self._cancel[record.id] = asyncio.Event()
        self._finished[record.id] = asyncio.Event()
        delivery = self._deliveries.get(record.source)

        async def execute(observer: ProgressObserver | None) -> JobRecord:
            return await self.execute(record, observer)

        async def run() -> None:
            held = lease or await self._jobs.claim(record.id, self.owner, self.lease_s)
            if held is None:
                logger.info("prediction %s is held by another replica; not run here", record.id)
                return
            keeper = self._keepers[record.id] = LeaseKeeper(self._jobs, held, self.lease_s, task)
            try:
                if delivery is None:
                    await self.execute(record)
                else:
                    await delivery(record, execute)
            except Exception:
                logger.exception("delivery of prediction %s failed", record.id)
            except asyncio.CancelledError:
                if task.cancelling() and not keeper.lost:
                    raise  # shutting down: left active, adopted elsewhere
                # The lease is gone (or the outcome could not be stored): left active, and whoever
                # holds the lease next runs or delivers the job.
                return
            finally:
                await keeper.stop()
            if keeper.held():
                # Delivered (or its delivery gave up for good): nothing is left to adopt.
                await self._jobs.finish(record.id)

        task = asyncio.create_task(run())
        self._tasks[record.id] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(record.id, None)
            self._cancel.pop(record.id, None)
            self._finished.pop(record.id, None)
            self._keepers.pop(record.id, None)
            self._beats.pop(record.id, None)
            self.previews.forget(record.id)

        task.add_done_callback(forget)
        return task

    async def cancel(self, prediction_id: str) -> JobRecord | None:
        """Request a cancel and answer at once with the state it led to (never after webhooks).

        The marker is written first, so the cancel holds wherever the job runs; a job on this
        replica stops now, one on another replica at its next heartbeat.
        """
        record = await self._jobs.load(prediction_id)
        if record is None or record.status in TERMINAL:
            return record
        await self._jobs.request_cancel(prediction_id)
        cancel, finished = self._cancel.get(prediction_id), self._finished.get(prediction_id)
        if cancel is not None and finished is not None:
            cancel.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), CANCEL_WAIT_S)
            return await self._jobs.load(prediction_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            record = await self._jobs.load(prediction_id)
            if record is None or record.status in TERMINAL or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(HEARTBEAT_S / 4)

    async def shutdown(self) -> None:
        """Stop running jobs without finishing them: their records stay for another replica to adopt."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one run ----------------------------------------------------------------------------------

    async def execute(
        self, record: JobRecord, observer: ProgressObserver | None = None
    ) -> JobRecord:
        """Run to a terminal state and store it; returns the final record, never raises for a job.

        A job already terminal is returned as it is, before any await: nothing is rendered or
        stored again, and a delivery wrapping this call sees its outcome at once.
        """
        if record.status in TERMINAL:
            return record
        cancel = self._cancel.get(record.id) or asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = None if record.deadline_at is None else loop.time() + record.deadline_at - time.time()
        # Back-pressure is waited out for request_timeout_s (the same patience a synchronous caller
        # gets), never past the job's deadline.
        wait_until = loop.time() + self._settings.request_timeout_s
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        results: list[ImageResult] = []
        try:
            if record.attempts >= MAX_ATTEMPTS:
                raise GenerationFailedError("The job was interrupted and could not be completed.")
            if cancel.is_set() or await self._jobs.cancel_requested(record.id):
                raise PredictionCanceled
            jobs = await self._jobs.image_specs(record)  # with their input images
            while True:
                if cancel.is_set():
                    raise PredictionCanceled
                if deadline is not None and loop.time() >= deadline:
                    raise DeadlineExceeded
                record.attempts += 1
                record.status = "processing"
                record.started_at = record.started_at or time.time()
                record.heartbeat_at = time.time()
                record.error = None
                await self._jobs.save(record)
                try:
                    async with _timeout_at(deadline):
                        results = await self._render(record, jobs, observer, cancel)
                    break
                except TimeoutError:
                    if deadline is None:
                        raise
                    raise DeadlineExceeded from None
                except OverloadedError:
                    record.attempts -= 1  # back-pressure is not a failed attempt: wait for room
                    record.overload_waits += 1
                    pause = self._settings.retry_after_s
                    if loop.time() + pause > wait_until:
                        if deadline is not None and wait_until >= deadline:
                            raise DeadlineExceeded from None
                        raise
                    await _sleep_unless(cancel, pause)
                except GenerationFailedError as error:
                    if record.attempts >= MAX_ATTEMPTS:
                        raise
                    logger.warning("prediction %s: %s; retrying once", record.id, error.message)
            if cancel.is_set() or await self._jobs.cancel_requested(record.id):
                raise PredictionCanceled
            try:
                async with _timeout_at(deadline):
                    await self._succeed(record, jobs, results)
            except TimeoutError:
                if deadline is None:
                    raise
                raise DeadlineExceeded from None
        except PredictionCanceled:
            record.status, record.error, record.error_code = "canceled", None, None
        except DeadlineExceeded:
            record.status, record.error_code = "failed", "deadline"
            record.error = "The job could not be finished before its deadline."
        except ServiceError as error:
            record.status, record.error, record.error_code = "failed", error.message, error.code
        except asyncio.CancelledError:
            raise  # the replica is shutting down: leave the record for another to adopt
        except Exception as error:
            logger.exception("prediction %s failed", record.id)
            record.status, record.error = "failed", f"Internal error: {type(error).__name__}"
            record.error_code = "internal"
        record.completed_at = time.time()
        if record.started_at is not None:
            record.predict_time_s = round(record.completed_at - record.started_at, 3)
        record = await self._finish(record)
        service_metrics.job_finished(record.source, record.status)
        if record.status == "failed":
            failure_alerts(self._settings).job_failed(
                record.id, record.source, record.error_code, record.error
            )
        log_finished_job(record, results, self._settings.served_model_name)
        return record

    async def _render(
        self,
        record: JobRecord,
        jobs: list[ImageSpec],
        observer: ProgressObserver | None,
        cancel: asyncio.Event,
    ) -> list[ImageResult]:
        steps = [0] * len(jobs)
        total = sum(job.steps for job in jobs)
        queued = QueueSnapshot(self._client.load, jobs)  # before its own images count as in flight

        async def one(index: int, job: ImageSpec) -> ImageResult:
            async for event in self._client.generate_stream(job):
                if isinstance(event, ImageResult):
                    return event
                steps[index] = event.step
                # The replica holding the image told its real place there: show it now, not at
                # the next heartbeat.
                if queued.observe(index, event) and observer is not None and not any(steps):
                    observer.queued(queued.now(self._client.load))
                if event.preview is not None:
                    self.previews.put(record.id, index, event.step, event.preview)
                if observer is not None:
                    observer.update(ProgressEvent(event.state, sum(steps), total) if len(jobs) > 1 else event)
                    if event.preview is not None and len(jobs) > 1:
                        observer.previewed(self.previews.latest(record.id))
            raise GenerationFailedError("The model stream ended without an image.")

        images = [asyncio.create_task(one(i, job)) for i, job in enumerate(jobs)]
        if observer is not None:
            observer.queued(queued.now(self._client.load))
        canceled = asyncio.create_task(cancel.wait())
        last_beat = time.monotonic()
        try:
            pending: set[asyncio.Future[object]] = set(images)
            while pending:
                done, pending = await asyncio.wait(
                    pending | {canceled}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(canceled)
                for task in done:
                    error = None if task is canceled else task.exception()
                    if error is not None:
                        raise error  # the finally below stops the siblings
                if cancel.is_set():
                    raise PredictionCanceled
                if observer is not None:
                    observer.queued(queued.now(self._client.load) if not any(steps) else None)
                if pending and time.monotonic() - last_beat >= HEARTBEAT_S:
                    last_beat = time.monotonic()
                    record.progress = Progress(step=sum(steps), total=total, images=list(steps))
                    # Shown until the first denoising step; after it, progress says more.
                    record.queue = queued.now(self._client.load) if not any(steps) else None
                    if await self._heartbeat(record):
                        raise PredictionCanceled
            return [task.result() for task in images]
        finally:
            # One failed image fails the attempt: stop its siblings (their renders stop between
            # steps on the model) before a retry submits them all again.
            record.queue = None
            for task in (*images, canceled):
                task.cancel()
            await asyncio.gather(*images, canceled, return_exceptions=True)

    async def _heartbeat(self, record: JobRecord) -> bool:
        """Write progress and a sign of life; True when a cancel was requested.

        A write that outlives its timeout keeps running in its thread; the next heartbeat does not
        start another one meanwhile (each would hold a thread, and a hung store would take them
        all). Such a write landing late is harmless: the job's outcome has a key of its own.
        """
        record.heartbeat_at = time.time()
        try:
            pending = self._beats.get(record.id)
            if pending is None or pending.done():
                pending = self._beats[record.id] = asyncio.ensure_future(self._jobs.save(record))
            await asyncio.wait_for(asyncio.shield(pending), HEARTBEAT_STORE_TIMEOUT_S)
            return await asyncio.wait_for(
                self._jobs.cancel_requested(record.id), HEARTBEAT_STORE_TIMEOUT_S
            )
        except Exception as error:
            logger.warning("prediction %s: heartbeat failed (%s)", record.id, type(error).__name__)
            return False

    async def _succeed(
        self, record: JobRecord, jobs: list[ImageSpec], results: list[ImageResult]
    ) -> None:
        image_ids = await asyncio.to_thread(
            save_results, self._jobs.images, self._settings, jobs, results, record.source, record.id
        )
        record.image_ids = image_ids
        record.nsfw_content_detected = [result.nsfw_content_detected for result in results]
        record.queue_time_s = round(max(result.queue_s for result in results), 3)
        done = [job.steps for job in jobs]
        record.progress = Progress(step=sum(done), total=sum(done), images=done)
        if results and all(record.nsfw_content_detected):  # nothing to show: the caller can act on it
            raise ContentPolicyError(FLAGGED_MESSAGE)
        record.status = "succeeded"

    async def _finish(self, record: JobRecord) -> JobRecord:
        """Store the outcome (once: an earlier stored one wins) before anyone is told of it.

        The job stays active until its delivery is made (``start``). A runner whose lease may be
        gone stores nothing: the run is stopped, and the lease's new holder decides the outcome.
        """
        keeper = self._keepers.get(record.id)
        if keeper is not None and not keeper.held():
            raise asyncio.CancelledError
        try:
            record = await self._jobs.finalize(record)
        except Exception:
            # Left active: the sweep adopts it once its lease ends, and reruns or fails it. Nothing
            # is delivered from here: an outcome that is not stored could be told twice, differently.
            logger.exception("prediction %s: could not store its final state", record.id)
            raise asyncio.CancelledError from None
        finished = self._finished.get(record.id)
        if finished is not None:
            finished.set()
        return record


def _timeout_at(deadline: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    return asyncio.timeout_at(deadline) if deadline is not None else contextlib.nullcontext()


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake early when ``event`` is set (a cancel while waiting for room)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
