"""Replicate's async API over our jobs: the ``/v1/predictions`` routes.

Their bodies and JSON shape are in ``protocol``, the webhook in ``webhooks``; running the job is
the job runner's (serve_app/jobs/runner.py), storing it the job store's (serve_app/jobs/records.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from serve_app.api.predictions.inputs import prediction_image_jobs
from serve_app.api.predictions.protocol import PredictionRequest, prediction_view
from serve_app.config.settings import AppSettings
from serve_app.core.errors import NotFoundError
from serve_app.core.model_choice import resolve_model
from serve_app.core.params import GenerationParams
from serve_app.core.webhooks import validate_webhook
from serve_app.jobs.records import new_record
from serve_app.jobs.runner import JobRunner


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
