"""Replicate's async API over our jobs: the ``/v1/predictions`` routes.

Their bodies and JSON shape are in ``protocol``, the webhook in ``webhooks``; running the job is
the job runner's (serve_app/jobs/runner.py), storing it the job store's (serve_app/jobs/records.py).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from serve_app.api.callers import Callers, request_caller
from serve_app.api.predictions.headers import cancel_after_s, prefer_wait_s
from serve_app.api.predictions.inputs import prediction_image_jobs
from serve_app.api.predictions.protocol import PredictionRequest, prediction_view
from serve_app.config.settings import AppSettings
from serve_app.core.errors import NotFoundError
from serve_app.core.model_choice import resolve_model
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.core.webhooks import validate_webhook
from serve_app.jobs.records import TERMINAL, JobRecord, new_record
from serve_app.jobs.runner import JobRunner

# How often a ``Prefer: wait`` request looks at the job record besides waiting on its run: a job
# run by another replica (adopted) finishes there.
WAIT_POLL_S = 0.5


def create_prediction_router(
    runner: JobRunner, settings: AppSettings, dependencies: list[Depends], callers: Callers | None = None
) -> APIRouter:
    router = APIRouter(dependencies=dependencies)
    jobs = runner.jobs
    timers: set[asyncio.Task[None]] = set()  # Cancel-After timers (the loop holds tasks weakly)

    @router.post("/v1/predictions", status_code=201)
    async def create_prediction(
        body: PredictionRequest,
        request: Request,
        prefer: Annotated[str | None, Header()] = None,
        cancel_after: Annotated[str | None, Header(alias="Cancel-After")] = None,
    ) -> JSONResponse:
        wait_s = prefer_wait_s(prefer, settings.prefer_wait_max_s)
        cancel_s = cancel_after_s(cancel_after)
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
        # The caller's limits, last (after every check of the input, so a bad request costs
        # nothing) and before anything is stored or queued: over a limit is a 429.
        caller = request_caller(request)
        admission = None
        if image_specs is None:  # text-to-image: the specs (seeds resolved) built here, to stamp them
            image_specs = build_image_specs(params, body.input.n, settings)
        if caller is not None and callers is not None:
            admission = await callers.admit(caller, len(image_specs))
            image_specs = caller.stamp(image_specs)
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
        if body.webhook_events_filter is not None:
            # Kept in the record (which keeps fields it does not declare), so whoever delivers the
            # job's webhooks, after an adoption too, sends the events asked for.
            record.webhook_events_filter = list(dict.fromkeys(body.webhook_events_filter))
        if cancel_s is not None:
            record.cancel_after_s = cancel_s
        try:
            await jobs.accept(record)  # accepted (201) only once it is stored
        except BaseException:
            if admission is not None and callers is not None:
                callers.quotas.refund(admission)
            raise
        task = runner.start(record)
        if admission is not None and callers is not None:
            task.add_done_callback(lambda _: callers.quotas.release(admission))
        if cancel_s is not None:
            timer = asyncio.create_task(_cancel_after(record.id, cancel_s, task))
            timers.add(timer)
            timer.add_done_callback(timers.discard)
        headers: dict[str, str] = {}
        if wait_s is not None:
            record = await _wait_for(record, task, wait_s)
            headers["Preference-Applied"] = f"wait={wait_s:g}"
        view = prediction_view(record, jobs.images, base)
        return JSONResponse(view, status_code=201, headers={"Location": view["urls"]["get"], **headers})

    async def _wait_for(record: JobRecord, task: asyncio.Task[None], wait_s: float) -> JobRecord:
        """The record once terminal, or as it stands when ``wait_s`` has passed (Prefer: wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return (await jobs.load(record.id)) or record
            await asyncio.wait({task}, timeout=min(remaining, WAIT_POLL_S))
            current = await jobs.load(record.id)
            if current is not None and current.status in TERMINAL:
                return current

    async def _cancel_after(prediction_id: str, seconds: float, task: asyncio.Task[None]) -> None:
        """Cancel-After: a prediction not finished ``seconds`` after it was created is canceled."""
        await asyncio.wait({task}, timeout=seconds)
        if not task.done():
            await runner.cancel(prediction_id)

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
