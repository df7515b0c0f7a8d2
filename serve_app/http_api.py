"""The HTTP API: OpenAI-compatible image generation, a plain PNG endpoint, health and models.

Built as a plain FastAPI app from a ``ModelClient`` and the settings, so it reads top to bottom:
validate (400 naming the field) -> turn the request into one job per image -> send the jobs to the
batched model deployment -> encode the answer. The Serve ingress deployment only wraps this app.
"""

from __future__ import annotations

import base64
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from bot_gateway.router import create_discord_router
from serve_app.errors import AuthenticationError, InvalidRequestError, install_error_handlers
from serve_app.model_client import ModelClient
from serve_app.schemas import (
    GenerationParams,
    ImageData,
    ImageGenerationRequest,
    ImageGenerationResponse,
    build_jobs,
)
from serve_app.settings import AppSettings


def api_key_guard(settings: AppSettings) -> Any:
    """A dependency that requires ``Authorization: Bearer KEY`` when API keys are configured."""
    keys = [key.encode() for key in settings.api_keys]

    async def require_api_key(request: Request) -> None:
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        # Compare against every key in constant time: no early exit that leaks which key matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise AuthenticationError(
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def create_http_app(client: ModelClient, settings: AppSettings) -> FastAPI:
    app = FastAPI(
        title="raydiffusion",
        summary="Stable Diffusion on Ray Serve: OpenAI-compatible images, PNGs and Discord.",
        version="0.1.0",
    )
    install_error_handlers(app)
    protected = APIRouter(dependencies=[Depends(api_key_guard(settings))])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        # Answered by the ingress alone: a health probe must not wake a model scaled to zero.
        return {"status": "ok"}

    @protected.post("/v1/images/generations", response_model=ImageGenerationResponse)
    async def create_images(body: ImageGenerationRequest) -> ImageGenerationResponse:
        if body.response_format == "url":
            raise InvalidRequestError(
                "response_format 'url' needs an image store, which is not configured; use 'b64_json'.",
                param="response_format",
            )
        jobs = build_jobs(body, body.n, settings)
        results = await client.generate(jobs)
        return ImageGenerationResponse(
            created=int(time.time()),
            data=[
                ImageData(
                    b64_json=base64.b64encode(result.png).decode("ascii"),
                    revised_prompt=body.prompt,
                    seed=result.seed,
                )
                for result in results
            ],
        )

    @protected.get(
        "/imagine",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "The PNG image."}},
    )
    async def imagine(params: Annotated[GenerationParams, Query()]) -> Response:
        """One PNG straight back, for curl and browsers; the seed comes back in ``X-Seed``."""
        (result,) = await client.generate(build_jobs(params, 1, settings))
        return Response(
            content=result.png,
            media_type="image/png",
            headers={
                "X-Seed": str(result.seed),
                "X-Render-Seconds": f"{result.render_s:.3f}",
                "X-Batch-Size": str(result.batch_size),
            },
        )

    @protected.get("/v1/models")
    async def list_models() -> JSONResponse:
        info = await client.describe()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": settings.served_model_name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "raydiffusion",
                        **info,
                    }
                ],
            }
        )

    app.include_router(protected)
    # Discord authenticates with its own signatures, not API keys.
    app.include_router(create_discord_router(settings, client))
    return app
