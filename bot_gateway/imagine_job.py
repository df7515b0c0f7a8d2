"""One ``/imagine`` after Discord got its deferred answer: render, show progress, deliver or explain.

This runs as a background task on the ingress, because the interaction request itself must be
answered within Discord's 3 seconds, long before any image exists. From here on the only way to
reach the user is editing the deferred message, so every outcome ends in an edit: the image, or
a clear error. No interaction is left "thinking".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot_gateway.attachments import AttachmentTooLargeError, fit_attachment
from bot_gateway.messages import failed_message, finished_message, progress_text
from bot_gateway.protocol import Interaction
from bot_gateway.webhook_client import TOKEN_LIFETIME_S, DiscordWebhookClient
from serve_app.generation import ImageJob, ProgressEvent
from serve_app.predictions import PredictionRecord, PredictionService

logger = logging.getLogger("ray.serve")

# Leave room for the final edit itself before the token dies.
DEADLINE_MARGIN_S = 15.0


class ProgressPublisher:
    """Edits the message with the latest state, at most once per ``interval_s``.

    Discord rate-limits message edits; progress events arrive every denoising step. Only the latest
    state is kept and sent; ``stop()`` waits for an edit in flight so it cannot land after the
    final one.
    """

    def __init__(self, edit: Callable[[str], Awaitable[None]], interval_s: float) -> None:
        self._edit = edit
        self._interval_s = interval_s
        self._latest = progress_text("queued")
        self._sent: str | None = None
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def update(self, event: ProgressEvent) -> None:
        self._latest = progress_text(event.state, event.step, event.total)

    async def stop(self) -> None:
        self._stopping.set()
        await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if self._latest != self._sent:
                text = self._latest
                try:
                    await self._edit(text)
                except Exception:
                    logger.warning("progress edit failed; the final edit will follow", exc_info=True)
                self._sent = text
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            except TimeoutError:
                pass


async def run_imagine(
    interaction: Interaction,
    record: PredictionRecord,
    predictions: PredictionService,
    webhook: DiscordWebhookClient,
    progress_interval_s: float,
    received_at: float,
) -> None:
    """Render through the shared job mechanism (stored, retried), then edit the Discord message."""
    deadline = received_at + TOKEN_LIFETIME_S - DEADLINE_MARGIN_S
    token = interaction.token
    job = ImageJob(**record.jobs[0])

    async def show(text: str) -> None:
        await webhook.edit_original(token, {"content": text}, deadline=deadline)

    publisher = ProgressPublisher(show, progress_interval_s)
    try:
        final = await predictions.execute(record, observer=publisher)
        await publisher.stop()
        if final.status != "succeeded":
            raise RenderFailedError(final.error or "The render was canceled.")
        store = predictions.store
        png = await asyncio.to_thread(store.get_image, final.image_ids[0])
        if png is None:
            raise RenderFailedError("The image was rendered but could not be read back from storage.")
        attachment, note = fit_attachment(png, interaction.attachment_size_limit, f"imagine-{job.seed}")
        link = (
            store.image_url(final.image_ids[0], record.base_url)
            if record.base_url or store.kind == "s3"
            else None
        )
        await webhook.edit_original(
            token,
            finished_message(job, attachment.filename, final.predict_time_s or 0.0, note, link),
            attachment,
            deadline=deadline,
        )
    except Exception as error:
        logger.warning("imagine %s failed: %r", interaction.id, error)
        await publisher.stop()
        reason = (
            str(error)
            if isinstance(error, RenderFailedError | AttachmentTooLargeError)
            else ("Something went wrong while delivering the image. Try again.")
        )
        try:
            await webhook.edit_original(token, failed_message(job, reason), deadline=deadline)
        except Exception:
            logger.exception("could not tell Discord that interaction %s failed", interaction.id)
    finally:
        await publisher.stop()  # idempotent; covers cancellation


class RenderFailedError(Exception):
    """The job ended without an image; the message says why."""
