"""Replicate's prediction bodies: what ``POST /v1/predictions`` takes and the JSON a prediction is
shown as (in answers and in webhooks).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from serve_app.api.predictions.inputs import ImageInputFields
from serve_app.core.params import GenerationParams
from serve_app.jobs.preview_board import Preview
from serve_app.jobs.records import TERMINAL, JobRecord
from serve_app.storage import ImageStore

WebhookEvent = Literal["start", "output", "logs", "completed"]
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("output", "completed")


class PredictionInput(GenerationParams, ImageInputFields):
    """Text-to-image parameters, plus a picture to start from (img2img, inpainting, upscale)."""

    n: int = Field(default=1, ge=1, le=64)


class PredictionRequest(BaseModel):
    """Replicate's ``POST /v1/predictions`` body."""

    model_config = ConfigDict(extra="forbid")

    input: PredictionInput
    webhook: HttpUrl | None = None
    # Which webhooks to send (Replicate's names). Default: when there is output or the prediction
    # finished (one webhook here: our output arrives with success). "logs" is accepted; we have none.
    webhook_events_filter: list[WebhookEvent] | None = Field(default=None, max_length=4)


def prediction_view(
    record: JobRecord,
    store: ImageStore,
    base_url: str,
    previews: dict[int, Preview] | None = None,
) -> dict[str, Any]:
    """The public shape (Replicate's), with image URLs made at read time (presigned ones expire).

    ``previews``: the live previews this replica holds for the job (by image index), shown only
    while it runs; ``output`` stays the finished images alone, as Replicate clients expect.
    """
    base = base_url.rstrip("/")
    # Images the safety checker flagged are never handed out (their places say so in the flags).
    flags = record.nsfw_content_detected or [False] * len(record.image_ids)
    output = (
        [store.image_url(i, base) for i, flagged in zip(record.image_ids, flags, strict=True) if not flagged]
        if record.status == "succeeded"
        else None
    )
    metrics: dict[str, float] = {}
    if record.queue_time_s is not None:
        metrics["queue_time"] = record.queue_time_s
    if record.predict_time_s is not None:
        metrics["predict_time"] = record.predict_time_s
    return {
        "id": record.id,
        "status": record.status,
        "input": record.input,
        # Replicate's field: the model that renders it (the catalogue's default when input names none).
        "model": record.jobs[0].get("model") if record.jobs else None,
        "output": output,
        "error": record.error,
        "progress": progress_view(record) if record.status != "starting" else None,
        # Our addition to Replicate's shape: {position, expected_wait_s} while waiting for the model.
        "queue": record.queue.model_dump() if record.queue and record.status not in TERMINAL else None,
        # Our addition: per image (as ``seeds``), a JPEG data URL of its latest step, or null.
        "previews": _preview_urls(record, previews),
        "metrics": metrics,
        "seeds": [job["seed"] for job in record.jobs],
        "nsfw_content_detected": record.nsfw_content_detected,
        "attempts": record.attempts,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "completed_at": _iso(record.completed_at),
        "urls": {
            "get": f"{base}/v1/predictions/{record.id}",
            "cancel": f"{base}/v1/predictions/{record.id}/cancel",
        },
    }


def progress_view(record: JobRecord) -> dict[str, Any]:
    """``{step, total, images}``: the steps of all images added up, and each image's own.

    The totals come from the job's images, not from the last heartbeat, so a job that is rendering
    never reads ``0/0`` before its first heartbeat lands; ``images`` is per image in ``seeds``
    order (``{step, total}`` each), so ``n: 2`` at 6 steps reads "image 2: step 3 of 6", not 9/12.
    """
    totals = [int(job.get("steps") or 0) for job in record.jobs]
    if record.status == "succeeded":
        done = totals
    else:
        # A record written before per-image progress existed has none: zeros, and its sum as it was.
        done = (list(record.progress.images) + [0] * len(totals))[: len(totals)]
    images = [{"step": min(step, total), "total": total} for step, total in zip(done, totals, strict=True)]
    per_image = bool(record.progress.images) or record.status == "succeeded"
    step = sum(image["step"] for image in images) if per_image else record.progress.step
    return {"step": step, "total": sum(totals) or record.progress.total, "images": images}


def _preview_urls(record: JobRecord, previews: dict[int, Preview] | None) -> list[str | None] | None:
    if not previews or record.status in TERMINAL:
        return None
    return [previews[i].data_url if i in previews else None for i in range(len(record.jobs))]


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
