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
from typing import Any

from pydantic import BaseModel, Field

from bot_gateway.attachments import AttachmentTooLargeError, fit_attachment
from bot_gateway.grids import compose_grid, compose_preview_grid
from bot_gateway.messages import (
    failed_message,
    finished_message,
    grid_message,
    preview_message,
    progress_text,
)
from bot_gateway.webhook_client import Attachment, DiscordAPIError, DiscordWebhookClient
from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageSpec, ProgressEvent
from serve_app.jobs.preview_board import Preview
from serve_app.jobs.queue_position import QueueInfo
from serve_app.jobs.records import JobRecord, JobStore
from serve_app.jobs.runner import Execute
from serve_app.ops import metrics as service_metrics
from serve_app.ops.alerts import failure_alerts
from serve_app.storage import ImageStore

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
    # The picture the job started from (a Discord CDN URL, or our stored image's URL), shown in
    # the message so that its buttons can start from it again.
    source_image_url: str | None = None
    # Who asked: the message's Delete button names them (they, or a moderator, may delete it).
    requester_id: str | None = None


class ProgressPublisher:
    """Edits the message with the latest state, at most once per ``interval_s``.

    Discord rate-limits message edits; progress events arrive every denoising step. Only the latest
    state is kept and sent; ``stop()`` waits for an edit in flight so it cannot land after the
    final one. A live preview (when the model makes them) rides on the next edit after it arrived,
    so previews cost no edits of their own; an edit with no new preview leaves the last one shown.
    """

    def __init__(
        self,
        edit: Callable[[str, Preview | None], Awaitable[None]],
        interval_s: float,
        grid_count: int = 1,
    ) -> None:
        self._edit = edit
        self._interval_s = interval_s
        self._state = ProgressEvent(state="queued")
        self._queue: QueueInfo | None = None
        self._latest = progress_text("queued")
        self._sent: str | None = None
        self._preview: Preview | None = None
        self._sent_preview: Preview | None = None
        self._grid_previews: dict[int, Preview] | None = None
        self._grid_count = grid_count
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def update(self, event: ProgressEvent) -> None:
        self._state = event
        if event.preview is not None:
            self._preview = Preview(event.step, event.preview)
        self._latest = self._text()

    def previewed(self, latest: dict[int, Preview]) -> None:
        """A grid's previews: composed into one picture at the next edit (off the event loop)."""
        self._grid_previews = latest

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
            if self._grid_previews is not None:
                latest, self._grid_previews = self._grid_previews, None
                try:
                    jpeg = await asyncio.to_thread(
                        compose_preview_grid, {i: p.jpeg for i, p in latest.items()}, self._grid_count
                    )
                    self._preview = Preview(max(p.step for p in latest.values()), jpeg)
                except Exception:
                    logger.warning("preview grid not composed", exc_info=True)
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
        jobs = record.image_specs()
        job = jobs[0]
        count = len(jobs)
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
            publisher = ProgressPublisher(show, self._settings.discord_progress_interval_s, count)
            try:
                final = await execute(publisher)
            finally:
                await publisher.stop()  # also on cancellation: no progress edit after the final one
            try:
                if final.status != "succeeded":
                    raise RenderFailedError(failure_reason(final))
                remaining = edit_deadline - time.monotonic()
                message, attachment = await asyncio.wait_for(
                    self._final_message(final, jobs, target), remaining
                )
                await webhook.edit_original(target.token, message, attachment, deadline=edit_deadline)
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
                        failed_message(job, reason, target.source_image_url, count if count > 1 else None),
                        deadline=edit_deadline,
                    )
                except Exception:
                    logger.exception("could not tell Discord that job %s failed", record.id)
                    service_metrics.discord_edit_failed()
                    failure_alerts(self._settings).discord_undeliverable(record.id, reason)

    async def _final_message(
        self, final: JobRecord, jobs: list[ImageSpec], target: DiscordTarget
    ) -> tuple[dict[str, Any], Attachment]:
        """The finished message: the image with its buttons, or for several images their grid."""
        store = self._jobs.images
        pngs = await asyncio.gather(*(asyncio.to_thread(store.get_image, i) for i in final.image_ids))
        if not pngs or any(png is None for png in pngs):
            raise RenderFailedError("The image was rendered but could not be read back from storage.")
        job, limit, render_s = jobs[0], target.attachment_size_limit, final.predict_time_s or 0.0
        if len(jobs) == 1:
            attachment, note = await asyncio.to_thread(fit_attachment, pngs[0], limit, f"imagine-{job.seed}")
            link = stored_link(store, final.image_ids[0], final.base_url)
            message = finished_message(
                job,
                attachment.filename,
                render_s,
                note,
                link,
                target.source_image_url,
                final.image_ids[0],
                target.requester_id,
                count=1,
            )
            return message, attachment
        grid = await asyncio.to_thread(compose_grid, [png for png in pngs if png is not None])
        attachment, note = await asyncio.to_thread(fit_attachment, grid, limit, f"grid-{job.seed}")
        flagged = sum(final.nsfw_content_detected)
        if flagged:
            flags = f"🔞 {flagged} of {len(jobs)} flagged by the safety checker (blacked out)."
            note = f"{flags} {note}".strip()
        message = grid_message(
            jobs,
            final.image_ids,
            attachment.filename,
            render_s,
            note,
            target.source_image_url,
            target.requester_id,
        )
        return message, attachment


def stored_link(store: ImageStore, image_id: str, base_url: str | None) -> str | None:
    """The stored full-size file's URL, when there is one a user can open."""
    return store.image_url(image_id, base_url or "") if base_url or store.kind == "s3" else None


async def deliver_stored_image(
    settings: AppSettings,
    target: DiscordTarget,
    job: ImageSpec,
    png: bytes,
    image_id: str,
    link: str | None,
) -> None:
    """U1-U4: the stored image, as it is, in the clicked button's deferred message (never rendered).

    The PNG was read before Discord got its answer (so a missing one was an ephemeral refusal);
    this edit is all that is left, retried like every edit until the token would expire, and a
    failure is edited in rather than leaving the message "thinking".
    """
    edit_deadline = time.monotonic() + (target.token_expires_at - time.time()) - EDIT_SLACK_S
    async with DiscordWebhookClient(
        settings.discord_api_base_url, target.application_id, retry_initial_s=settings.discord_retry_initial_s
    ) as webhook:
        try:
            attachment, note = await asyncio.to_thread(
                fit_attachment, png, target.attachment_size_limit, f"imagine-{job.seed}"
            )
            message = finished_message(
                job,
                attachment.filename,
                0.0,
                note,
                link,
                target.source_image_url,
                image_id,
                target.requester_id,
            )
            # A picked image was not rendered now: no render time to show.
            message["embeds"][0]["fields"] = [
                f for f in message["embeds"][0]["fields"] if f["name"] != "Render time"
            ]
            await webhook.edit_original(target.token, message, attachment, deadline=edit_deadline)
        except Exception as error:
            logger.warning("picked image %s not delivered: %r", image_id, error)
            service_metrics.discord_edit_failed()
            reason = "The image could not be sent."
            if isinstance(error, AttachmentTooLargeError):
                reason = str(error)
            try:
                await webhook.edit_original(
                    target.token, failed_message(job, reason, target.source_image_url), deadline=edit_deadline
                )
            except Exception:
                logger.exception("could not tell Discord that image %s was not sent", image_id)


async def delete_message(
    settings: AppSettings, application_id: str, token: str, token_expires_at: float
) -> None:
    """Delete: the message the clicked button is on, through the click's own token (no bot token)."""
    deadline = time.monotonic() + (token_expires_at - time.time()) - EDIT_SLACK_S
    async with DiscordWebhookClient(
        settings.discord_api_base_url, application_id, retry_initial_s=settings.discord_retry_initial_s
    ) as webhook:
        try:
            await webhook.delete_original(token, deadline=deadline)
        except Exception as error:
            logger.warning("message not deleted: %r", error)
            service_metrics.discord_edit_failed()
