"""The HTTP ingress deployment: the FastAPI app from ``http_api``, hosted by Serve.

It does no heavy work (validation, base64, waiting on the model), so it reserves no CPU and accepts
many requests at once; its queue is bounded so a flood turns into 503 + Retry-After at the proxy
instead of unbounded memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import FastAPI
from ray import serve
from ray.serve import Deployment
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from serve_app.api.http_app import ClientSurface, create_http_app
from serve_app.config.settings import AppSettings
from serve_app.engine.client import ModelClient
from serve_app.ops.alerts import failure_alerts
from serve_app.ops.replica_watch import ReplicaWatch


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=200,
    max_queued_requests=1000,
)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        model: DeploymentHandle,
        settings: AppSettings,
        surfaces: Sequence[ClientSurface] = (),
        class_models: dict[str, DeploymentHandle] | None = None,
    ) -> None:
        self._settings = settings
        self._surfaces = tuple(surfaces)
        self._client = ModelClient(
            model,
            settings.request_timeout_s,
            settings.retry_after_s,
            on_replica_lost=failure_alerts(settings).replica_lost,
            # GPU classes other than the default model's: each its own deployment.
            by_model={
                name: handle
                for gpu_class, handle in (class_models or {}).items()
                for name in settings.catalogue.models_of_class(gpu_class)
            },
        )
        # Replicas replaced between requests (failed health checks, crashes) are seen only in
        # Serve's controller: watched from here while alerts are configured.
        self._replica_watch: asyncio.Task[None] | None = None
        if failure_alerts(settings).enabled:
            watch = ReplicaWatch(
                model.app_name,
                model.deployment_name,
                failure_alerts(settings),
                settings.replica_watch_interval_s,
            )
            # Serve runs the ingress's constructor on the replica's event loop (its wrapper is async).
            self._replica_watch = asyncio.get_running_loop().create_task(watch.run_forever())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_http_app(self._client, self._settings, self._surfaces)


def ingress_deployment(settings: AppSettings) -> Deployment:
    """The ingress with the proxy's own 503 (its queue full) saying the same ``Retry-After`` as the
    app's 503s: one setting, ``retry_after_s``, for every way of being told to come back."""
    return Ingress.options(
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s)
    )
