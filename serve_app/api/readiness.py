"""``GET /readyz``: can a model replica take work now, or is the model scaled to zero?

``/healthz`` is liveness: the ingress answers, so requests are accepted and queued. It says
nothing about the model: at zero model replicas (or while one loads) the first image waits for a
cold start. ``/readyz`` answers that question from Serve's controller (``serve.status()``), never
from a model replica, so asking it cannot wake a model scaled to zero.

Which to point a load balancer at: ``/healthz``. A balancer that sent no traffic while the model is
scaled to zero would keep it at zero forever (only requests scale it up), so readiness is for
people, deploy scripts and dashboards that want to know whether the next image starts at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray import serve

# How long one controller answer is reused: a probe every second must not cost a controller
# round trip each (serve.status() gathers every application's details).
CACHE_S = 2.0
# serve.status() blocks on the controller; a controller that does not answer is "unknown", fast.
STATUS_TIMEOUT_S = 3.0

STARTING_STATES = ("STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION")


def readiness_answer(
    replica_states: Mapping[str, int] | None, deployment_status: str | None
) -> tuple[int, dict]:
    """The HTTP status and body for the model deployment's replica states (``{"RUNNING": 1}``).

    200 only when a replica is running; 503 otherwise, saying whether one is starting, the model is
    scaled to zero (the next request starts one), or Serve does not know the deployment.
    """
    if replica_states is None:
        return 503, {
            "status": "unknown",
            "ready": False,
            "model_replicas": {"running": 0, "starting": 0},
            "detail": "Serve does not report the model deployment (not deployed yet, or deleted).",
        }
    states = {str(getattr(key, "value", key)): count for key, count in replica_states.items()}
    running = states.get("RUNNING", 0)
    starting = sum(states.get(state, 0) for state in STARTING_STATES)
    replicas = {"running": running, "starting": starting}
    if running > 0:
        return 200, {
            "status": "ready",
            "ready": True,
            "model_replicas": replicas,
            "detail": f"{running} model replica(s) running: an image starts without a cold start.",
        }
    if starting > 0 or deployment_status in ("UPDATING", "UPSCALING"):
        return 503, {
            "status": "starting",
            "ready": False,
            "model_replicas": replicas,
            "detail": "A model replica is starting (loading the model); requests wait for it.",
        }
    if deployment_status in ("UNHEALTHY", "DEPLOY_FAILED"):
        return 503, {
            "status": "unhealthy",
            "ready": False,
            "model_replicas": replicas,
            "detail": f"The model deployment is {deployment_status}: see `serve status`.",
        }
    return 503, {
        "status": "scaled_to_zero",
        "ready": False,
        "model_replicas": replicas,
        "detail": "No model replica is running (scaled to zero): the next request starts one and "
        "waits for it (a cold start).",
    }


class Readiness:
    """The model deployment's readiness, read from Serve's controller and kept for ``CACHE_S``.

    The answer is the default model's deployment; with models on other GPU classes (one model
    deployment per class, named ``<deployment>-<class>`` by ``serve_app/app.py``), each of those is
    reported under ``deployments`` too, so a person sees which class is scaled to zero.
    """

    def __init__(
        self,
        app_name: str,
        deployment_name: str,
        status: Callable[[], Any] = serve.status,
    ) -> None:
        self._app = app_name
        self._deployment = deployment_name
        self._status = status
        self._cached: tuple[float, tuple[int, dict]] | None = None

    async def answer(self) -> tuple[int, dict]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_S:
            return self._cached[1]
        try:
            status = await asyncio.wait_for(asyncio.to_thread(self._status), STATUS_TIMEOUT_S)
        except Exception as error:
            answer = 503, {
                "status": "unknown",
                "ready": False,
                "model_replicas": None,
                "detail": f"Serve's controller did not answer ({type(error).__name__}).",
            }
        else:
            application = status.applications.get(self._app)

            def of(name: str) -> tuple[int, dict]:
                deployment = application.deployments.get(name) if application else None
                return readiness_answer(
                    deployment.replica_states if deployment else None,
                    str(getattr(deployment.status, "value", deployment.status)) if deployment else None,
                )

            answer = of(self._deployment)
            others = sorted(
                name for name in (application.deployments if application else {})
                if name.startswith(f"{self._deployment}-")
            )
            if others:
                answer = answer[0], {
                    **answer[1],
                    "deployments": {name: of(name)[1] for name in [self._deployment, *others]},
                }
        self._cached = (now, answer)
        return answer
