"""The HTTP API: OpenAI-compatible images, a plain PNG endpoint, async predictions, a gallery.

Built as a plain FastAPI app from a ``ModelClient`` and the settings, so it reads top to bottom:
validate (400 naming the field) -> turn the request into one job per image -> send the jobs to the
batched model deployment -> store and encode the answer. The Serve ingress only hosts this app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Protocol, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from serve_app.api.a1111.router import create_a1111_router
from serve_app.api.callers import Callers, MeteredClient, key_caller, keyless_caller, set_caller
from serve_app.api.errors import install_error_handlers
from serve_app.api.openai.edits import create_image_edit_router, openai_images_response
from serve_app.api.openai.models import models_listing
from serve_app.api.openai.protocol import ImageGenerationRequest, ImageGenerationResponse
from serve_app.api.origin import OriginGuard
from serve_app.api.playground.router import create_playground_router
from serve_app.api.predictions.router import create_prediction_router
from serve_app.api.predictions.webhooks import WebhookDelivery
from serve_app.api.readiness import Readiness
from serve_app.api.usage_router import create_usage_router
from serve_app.config.api_keys import match_key
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.core.content_policy import raise_if_all_flagged
from serve_app.core.errors import AuthenticationError, NotFoundError, ServiceUnavailableError
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.engine.client import ModelClient
from serve_app.jobs.adoption import JobAdopter
from serve_app.jobs.records import JobStore
from serve_app.jobs.runner import Delivery, JobRunner
from serve_app.jobs.usage import UsageBook
from serve_app.storage import IMAGE_ID, create_store


class ClientSurface(Protocol):
    """A client of the job runner with an HTTP endpoint of its own (Discord: bot_gateway/surface.py).

    Wired in serve_app/app.py, so this module never imports one: its router is mounted beside the
    API's, and its jobs (``JobRecord.source``) are delivered by its ``delivery``.
    """

    source: str

    def delivery(self, jobs: JobStore, settings: AppSettings) -> Delivery: ...

    def router(
        self, settings: AppSettings, runner: JobRunner, credentials: CredentialSource
    ) -> APIRouter: ...


def api_key_guard(credentials: CredentialSource, retry_after_s: int = 5) -> Any:
    """A dependency that requires ``Authorization: Bearer KEY`` when API keys are configured.

    Fails closed: keys configured to come from a secret that cannot be read yet (or that holds
    none) refuse every protected route with a 503, never let it through unchecked.
    """

    async def require_api_key(request: Request) -> None:
        current = await credentials.current()
        if current.api_keys_unavailable:
            raise ServiceUnavailableError(
                "API keys are not available yet (the secret could not be read); retry later.",
                code="credentials_unavailable",
                retry_after_s=retry_after_s,
            )
        if not current.api_keys:
            set_caller(request, keyless_caller(request))  # an open service: callers by address
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Compared with every key in constant time (api_keys.match_key): no early exit.
        spec = match_key(token.strip(), current.key_specs)
        if scheme.lower() != "bearer" or spec is None:
            raise AuthenticationError(
                "Missing or invalid API key: send 'Authorization: Bearer <key>'."
            )
        # The key's name (never the key) names the caller: limits, fair share, usage, metrics.
        set_caller(request, key_caller(spec))

    return require_api_key


def create_http_app(
    client: ModelClient, settings: AppSettings, surfaces: Sequence[ClientSurface] = ()
) -> FastAPI:
    store = create_store(settings)
    jobs = JobStore(store)
    readiness = Readiness(*client.deployment)
    # Every image goes through the caller's limits, name and usage (serve_app/api/callers.py).
    callers = Callers(UsageBook(store), settings.retry_after_s)
    client = cast(ModelClient, MeteredClient(client, callers))
    credentials = CredentialSource(settings)
    runner = JobRunner(
        client,
        jobs,
        settings,
        deliveries={
            "api": WebhookDelivery(jobs, settings, credentials),
            **{surface.source: surface.delivery(jobs, settings) for surface in surfaces},
        },
    )
    adopter = JobAdopter(runner, jobs, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Adopt jobs whose ingress died (and keep doing so): nothing accepted is left running forever.
        sweeper = asyncio.create_task(adopter.sweep_forever())
        yield
        sweeper.cancel()
        await runner.shutdown()  # jobs left unfinished are adopted by another (or the next) replica

    app = FastAPI(
        title="raydiffusion",
        summary="Stable Diffusion on Ray Serve: OpenAI-compatible images, PNGs, jobs and Discord.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app, settings.retry_after_s)
    if settings.origin_header:  # on AWS: only what came through CloudFront (serve_app/api/origin.py)
        app.add_middleware(
            OriginGuard,
            credentials=credentials,
            header=settings.origin_header,
            retry_after_s=settings.retry_after_s,
        )
    protected = APIRouter(dependencies=[Depends(api_key_guard(credentials, settings.retry_after_s))])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        # Answered by the ingress alone: a health probe must not wake a model scaled to zero.
        # Liveness: what a load balancer should probe (see serve_app/api/readiness.py for why).
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 200 when a model replica can take work, else 503 saying why (scaled to zero, ...)."""
        code, body = await readiness.answer()
        return JSONResponse(body, status_code=code)

    @protected.post("/v1/images/generations", response_model=ImageGenerationResponse)
    async def create_images(body: ImageGenerationRequest, request: Request) -> ImageGenerationResponse:
        jobs = build_image_specs(body, body.n, settings)
        results = await client.generate(jobs)
        return await asyncio.to_thread(
            openai_images_response,
            results,
            jobs,
            body.prompt,
            body.response_format,
            store,
            settings,
            settings.base_url_for(str(request.base_url)),
        )

    @protected.get(
        "/imagine",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "The PNG image."}},
    )
    async def imagine(params: Annotated[GenerationParams, Query()]) -> Response:
        """One PNG straight back, for curl and browsers; the seed comes back in ``X-Seed``."""
        (result,) = await client.generate(build_image_specs(params, 1, settings))
        raise_if_all_flagged([result])
        return Response(
            content=result.png,
            media_type="image/png",
            headers={
                "X-Seed": str(result.seed),
                "X-Render-Seconds": f"{result.render_s:.3f}",
                "X-Batch-Size": str(result.batch_size),
            },
        )

    @app.get(
        "/images/{image_id}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def stored_image(image_id: str) -> Response:
        """Stored images by their unguessable id (like a presigned URL, no API key needed)."""
        png = await asyncio.to_thread(store.get_image, image_id) if IMAGE_ID.fullmatch(image_id) else None
        if png is None:
            raise NotFoundError("No such image.", param="image_id")
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "public, max-age=31536000, immutable"}
        )

    @protected.get("/v1/images")
    async def gallery(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=64, pattern=r"^img_[0-9a-f]+$")] = None,
    ) -> dict[str, Any]:
        """Recent images, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        records, next_cursor = await asyncio.to_thread(store.list_images, limit, cursor)
        base = settings.base_url_for(str(request.base_url))
        return {
            "object": "list",
            "data": [{**record, "url": store.image_url(record["id"], base)} for record in records],
            "next_cursor": next_cursor,
            "has_more": next_cursor is not None,
        }

    @protected.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """The configured model and the last replica description seen; never calls a replica."""
        return models_listing(settings, client.replicas)

    app.include_router(protected)
    app.include_router(create_image_edit_router(client, store, settings, protected.dependencies))
    app.include_router(create_a1111_router(client, settings, protected.dependencies, store))
    app.include_router(create_prediction_router(runner, settings, protected.dependencies, callers))
    app.include_router(create_usage_router(callers.usage, protected.dependencies))
    for surface in surfaces:
        app.include_router(surface.router(settings, runner, credentials))
    # The browser page needs no key to load: its API calls carry the key the user gives it.
    app.include_router(create_playground_router())
    return app
