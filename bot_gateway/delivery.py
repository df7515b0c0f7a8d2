"""Delivering a Discord ``/imagine`` job: show progress, then the image or the reason, in its message.

Discord got its deferred answer long before any image exists, so the only way left to reach the
user is editing that message with the interaction token, and the token dies 15 minutes after the
command. This is the job runner's delivery for Discord jobs: it wraps the run (fresh, or adopted
by another replica after its ingress died: the record carries the token and what the message
shows) and every outcome ends in an edit while the token still works. A job whose token is
already dead is not rendered at all: the runner fails it on its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field

from bot_gateway.attachments import AttachmentTooLargeError, fit_attachment
from bot_gateway.messages import failed_message, finished_message, preview_message, progress_text
from bot_gateway.webhook_client import Attachment, DiscordAPIError, DiscordWebhookClient
from serve_app.config.settings import AppSettings
from serve_app.core.images import ProgressEvent
from serve_app.jobs.preview_board import Preview
from serve_app.jobs.queue_position import QueueInfo
from serve_app.jobs.records import JobRecord, JobStore
from serve_app.jobs.runner import Execute
from serve_app.ops import metrics as service_metrics
from serve_app.ops.alerts import failure_alerts

logger = logging.getLogger("ray.serve")

# The render must stop this long before the token dies: room to store the image, read it back,
# re-encode it and upload it, or to edit in the reason it failed.
DELIVERY_MARGIN_S = 30.0
# The last edit must start a little before the token's end, not at it.
EDIT_SLACK_S = 2.0


class DiscordTarget(BaseModel):
    """What editing the job's Discord message needs, so any replica can deliver it, even after adoption."""

    application_id: str
    interaction_id: str
    # Valid for 15 minutes and enough to edit the message: kept in the store (which holds the
    # images too), never logged, never shown by the API.
    token: str = Field(repr=False)
    token_expires_at: float  # epoch seconds
    attachment_size_limit: int
    # The picture the job started from (a Discord CDN URL), shown in the message so that its
    # buttons can start from it again.
    source_image_url: str | None = None


class ProgressPublisher:
    """Edits the message with the latest state, at most once per ``interval_s``.

    Discord rate-limits message edits; progress events arrive every denoising step. Only the latest
    state is kept and sent; ``stop()`` waits for an edit in flight so it cannot land after the
    final one. A live preview (when the model makes them) rides on the next edit after it arrived,
    so previews cost no edits of their own; an edit with no new preview leaves the last one shown.
    """

    def __init__(self, edit: Callable[[str, Preview | None], Awaitable[None]], interval_s: float) -> None:
        self._edit = edit
        self._interval_s = interval_s
        self._state = ProgressEvent(state="queued")
        self._queue: QueueInfo | None = None
        self._latest = progress_text("queued")
        self._sent: str | None = None
        self._preview: Preview | None = None
        self._sent_preview: Preview | None = None
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def update(self, event: ProgressEvent) -> None:
        self._state = event
        if event.preview is not None:
            self._preview = Preview(event.step, event.preview)
        self._latest = self._text()

    def queued(self, info: QueueInfo | None) -> None:
        self._queue = info
        self._latest = self._text()

    def _text(self) -> str:
        event, queue = self._state, self._queue
        if event.state == "rendering" or queue is None:
            return progress_text(event.state, event.step, event.total)
        return progress_text("queued", ahead=queue.position, wait_s=queue.expected_wait_s)

    async def stop(self) -> None:
        self._stopping.set()
        await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            preview = self._preview if self._preview is not self._sent_preview else None
            if self._latest != self._sent or preview is not None:
                text = self._latest
                try:
                    await self._edit(text, preview)
                except Exception:
                    logger.warning("progress edit failed; the final edit will follow", exc_info=True)
                self._sent = text
                self._sent_preview = preview or self._sent_preview
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            except TimeoutError:
                pass


class RenderFailedError(Exception):
    """The job ended without an image; the message says why."""


def failure_reason(record: JobRecord) -> str:
    if record.status == "canceled":
        return "The render was canceled."
    if record.error_code == "deadline":
        return (
            "The image could not be finished within the 15 minutes Discord allows a command "
            "(the queue is long). Try again in a few minutes."
        )
    if record.error_code == "content_policy_violation":
        return "🔞 The safety checker flagged this image, so it is not shown. Try another prompt or seed."
    return record.error or "The render failed."


class DiscordDelivery:
    """The job runner's delivery for ``source == "discord"`` jobs."""

    def __init__(self, jobs: JobStore, settings: AppSettings) -> None:
        self._jobs = jobs
        self._settings = settings

    async def __call__(self, record: JobRecord, execute: Execute) -> None:
        target = DiscordTarget.model_validate(record.reply_to) if record.reply_to else None
        if target is None:
            logger.error("discord job %s has no message to edit", record.id)
            await execute(None)
            return
        job = record.image_specs()[0]
        # A monotonic deadline for the edits: the wall clock may jump, the token's life does not.
        edit_deadline = time.monotonic() + (target.token_expires_at - time.time()) - EDIT_SLACK_S
        async with DiscordWebhookClient(
            self._settings.discord_api_base_url,
            target.application_id,
            retry_initial_s=self._settings.discord_retry_initial_s,
        ) as webhook:

            async def show(text: str, preview: Preview | None) -> None:
                if preview is None:
                    await webhook.edit_original(target.token, {"content": text}, deadline=edit_deadline)
                    return
                # Listing only the new file in ``attachments`` drops the previous preview from the
                # message; the final edit (the image, or the failure) drops the last one likewise.
                filename = f"preview-{job.seed}-step{preview.step}.jpg"
                attachment = Attachment(filename, preview.jpeg, "image/jpeg")
                await webhook.edit_original(
                    target.token,
                    preview_message(job, text, attachment.filename),
                    attachment,
                    deadline=edit_deadline,
                )

            if time.monotonic() >= edit_deadline:
                # Nobody can see this job any more: the runner fails it on its deadline, unrendered.
                final = await execute(None)
                logger.warning("discord job %s: token expired, %s without rendering", record.id, final.status)
                return
            publisher = ProgressPublisher(show, self._settings.discord_progress_interval_s)
            try:
                final = await execute(publisher)
            finally:
                await publisher.stop()  # also on cancellation: no progress edit after the final one
            try:
                if final.status != "succeeded":
                    raise RenderFailedError(failure_reason(final))
                store = self._jobs.images
                remaining = edit_deadline - time.monotonic()
                png = await asyncio.wait_for(
                    asyncio.to_thread(store.get_image, final.image_ids[0]), remaining
                )
                if png is None:
                    raise RenderFailedError("The image was rendered but could not be read back from storage.")
                attachment, note = fit_attachment(png, target.attachment_size_limit, f"imagine-{job.seed}")
                link = (
                    store.image_url(final.image_ids[0], record.base_url)
                    if record.base_url or store.kind == "s3"
                    else None
                )
                await webhook.edit_original(
                    target.token,
                    finished_message(
                        job,
                        attachment.filename,
                        final.predict_time_s or 0.0,
                        note,
                        link,
                        target.source_image_url,
                    ),
                    attachment,
                    deadline=edit_deadline,
                )
            except Exception as error:
                logger.warning("discord job %s not delivered: %r", record.id, error)
                if isinstance(error, DiscordAPIError):
                    service_metrics.discord_edit_failed()
                    failure_alerts(self._settings).discord_undeliverable(record.id, str(error))
                reason = (
                    str(error)
                    if isinstance(error, RenderFailedError | AttachmentTooLargeError)
                    else "Something went wrong while delivering the image. Try again."
                )
                try:
                    await webhook.edit_original(
                        target.token,
                        failed_message(job, reason, target.source_image_url),
                        deadline=edit_deadline,
                    )
                except Exception:
                    logger.exception("could not tell Discord that job %s failed", record.id)
                    service_metrics.discord_edit_failed()
                    failure_alerts(self._settings).discord_undeliverable(record.id, reason)
