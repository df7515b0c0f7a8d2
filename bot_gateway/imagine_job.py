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
from serve_app.errors import APIError, OverloadedError
from serve_app.generation import ImageJob, ImageResult, ProgressEvent
from serve_app.model_client import ModelClient

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


def failure_reason(error: BaseException) -> str:
    if isinstance(error, OverloadedError):
        return "The image service is at capacity right now. Try again in a minute."
    if isinstance(error, AttachmentTooLargeError):
        return "The image is too large to upload to this server."
    if isinstance(error, APIError):
        return error.message
    return "Something went wrong while rendering. Try again."


async def run_imagine(
    interaction: Interaction,
    job: ImageJob,
    client: ModelClient,
    webhook: DiscordWebhookClient,
    progress_interval_s: float,
    received_at: float,
) -> None:
    deadline = received_at + TOKEN_LIFETIME_S - DEADLINE_MARGIN_S
    token = interaction.token

    async def show(text: str) -> None:
        await webhook.edit_original(token, {"content": text}, deadline=deadline)

    publisher = ProgressPublisher(show, progress_interval_s)
    try:
        result: ImageResult | None = None
        async for event in client.generate_stream(job):
            if isinstance(event, ProgressEvent):
                publisher.update(event)
            else:
                result = event
        if result is None:
            raise RuntimeError("the model stream ended without an image")
        attachment, note = fit_attachment(
            result.png, interaction.attachment_size_limit, f"imagine-{result.seed}"
        )
        await publisher.stop()
        await webhook.edit_original(
            token,
            finished_message(job, attachment.filename, result.render_s, note),
            attachment,
            deadline=deadline,
        )
    except Exception as error:
        logger.warning("imagine %s failed: %r", interaction.id, error)
        await publisher.stop()
        try:
            await webhook.edit_original(token, failed_message(job, failure_reason(error)), deadline=deadline)
        except Exception:
            logger.exception("could not tell Discord that interaction %s failed", interaction.id)
    finally:
        await publisher.stop()  # idempotent; covers cancellation
