"""Replicate's async API over our jobs: ``/v1/predictions`` routes, their JSON shape, the webhook.

Everything Replicate-shaped lives here; running the job is ``job_runner``'s, storing it
``job_records``'.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from serve_app.api.predictions.inputs import ImageInputFields, prediction_image_jobs
from serve_app.config.settings import AppSettings
from serve_app.core.errors import NotFoundError
from serve_app.core.model_choice import resolve_model
from serve_app.core.params import GenerationParams
from serve_app.core.webhooks import deliver_webhook, validate_webhook
from serve_app.jobs.preview_board import Preview
from serve_app.jobs.records import TERMINAL, JobRecord, JobStore, new_record
from serve_app.jobs.runner import Execute, JobRunner
from serve_app.ops import metrics as service_metrics
from serve_app.storage.store import ImageStore


class PredictionInput(GenerationParams, ImageInputFields):
    """Text-to-image parameters, plus a picture to start from (img2img, inpainting, upscale)."""

    n: int = Field(default=1, ge=1, le=64)


class PredictionRequest(BaseModel):
    """Replicate's ``POST /v1/predictions`` body."""

    model_config = ConfigDict(extra="forbid")

    input: PredictionInput
    webhook: HttpUrl | None = None


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
        "progress": record.progress.model_dump() if record.status != "starting" else None,
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


def _preview_urls(record: JobRecord, previews: dict[int, Preview] | None) -> list[str | None] | None:
    if not previews or record.status in TERMINAL:
        return None
    return [previews[i].data_url if i in previews else None for i in range(len(record.jobs))]


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"


class WebhookDelivery:
    """API jobs: run, then POST the final prediction to the caller's webhook (if any)."""

    def __init__(self, jobs: JobStore, settings: AppSettings) -> None:
        self._jobs = jobs
        self._settings = settings

    async def __call__(self, record: JobRecord, execute: Execute) -> None:
        final = await execute(None)
        if not final.webhook:
            return
        body = prediction_view(final, self._jobs.images, final.base_url)
        final.webhook_attempts = await deliver_webhook(
            final.webhook,
            body,
            self._settings.webhook_max_attempts,
            self._settings.webhook_retry_initial_s,
            allowed_hosts=self._settings.webhook_allowed_hosts,
        )
        if not final.webhook_attempts:
            service_metrics.webhook_failed()
        await self._jobs.save(final)


def create_prediction_router(
    runner: JobRunner, settings: AppSettings, dependencies: list[Depends]
) -> APIRouter:
    router = APIRouter(dependencies=dependencies)
    jobs = runner.jobs

    @router.post("/v1/predictions", status_code=201)
    async def create_prediction(body: PredictionRequest, request: Request) -> JSONResponse:
        params = GenerationParams.model_validate(
            body.input.model_dump(include=set(GenerationParams.model_fields))
        )
        # Checked here to name the fields as the caller wrote them; build_image_specs resolves them again.
        resolve_model(settings.catalogue,
            params.model, params.loras, model_param="input.model", loras_param="input.loras"
        )
        if body.webhook:  # refused now (400) rather than silently never called later
            await validate_webhook(str(body.webhook), settings.webhook_allowed_hosts)
        base = settings.base_url_for(str(request.base_url))
        image_specs, image_input = await prediction_image_jobs(
            body.input, params, body.input.n, jobs.images, settings, base
        )
        record = new_record(
            params,
            body.input.n,
            settings,
            "api",
            webhook=str(body.webhook) if body.webhook else None,
            base_url=base,
            jobs=image_specs,
            extra_input=image_input,
        )
        await jobs.accept(record)  # accepted (201) only once it is stored
        runner.start(record)
        view = prediction_view(record, jobs.images, base)
        return JSONResponse(view, status_code=201, headers={"Location": view["urls"]["get"]})

    @router.get("/v1/predictions/{prediction_id}")
    async def get_prediction(prediction_id: str, request: Request) -> dict[str, Any]:
        record = await jobs.load(prediction_id)
        if record is None:
            raise _no_such_prediction()
        base = settings.base_url_for(str(request.base_url))
        return prediction_view(record, jobs.images, base, runner.previews.latest(record.id))

    @router.post("/v1/predictions/{prediction_id}/cancel")
    async def cancel_prediction(prediction_id: str, request: Request) -> dict[str, Any]:
        """Answers at once with ``canceled`` or the terminal state the job reached first."""
        record = await runner.cancel(prediction_id)
        if record is None:
            raise _no_such_prediction()
        return prediction_view(record, jobs.images, settings.base_url_for(str(request.base_url)))

    return router


def _no_such_prediction() -> NotFoundError:
    return NotFoundError("No such prediction.", param="prediction_id")
