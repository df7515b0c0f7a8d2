"""The ingress's view of the model deployment: send jobs, get images, get errors as types.

Every caller (OpenAI route, PNG route, the Discord bot) goes through here so overload, timeouts and
replica failures turn into the same errors everywhere: ``OverloadedError`` (503 + Retry-After) when
the model's bounded queue is full, ``GenerationTimeoutError`` (504) past the request deadline,
``GenerationFailedError`` when an accepted job dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from serve_app.core.errors import GenerationFailedError, GenerationTimeoutError, OverloadedError
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent
from serve_app.core.load import LoadTracker, work_units
from serve_app.ops.request_log import log_finished_request

logger = logging.getLogger("ray.serve")


class ReplicaReports:
    """The latest replica description this ingress received per model, and when."""

    def __init__(self) -> None:
        self.by_model: dict[str, tuple[dict[str, Any], float]] = {}

    def observe(self, result: ImageResult) -> None:
        if result.replica is not None:
            self.by_model[str(result.replica.get("model"))] = (result.replica, time.time())

    @property
    def info(self) -> dict[str, Any] | None:
        """The most recent report, whichever model it was about."""
        latest = max(self.by_model.values(), key=lambda item: item[1], default=None)
        return None if latest is None else latest[0]


class ModelClient:
    def __init__(
        self,
        handle: DeploymentHandle,
        timeout_s: float,
        retry_after_s: int,
        on_replica_lost: Callable[[str], None] | None = None,
        by_model: dict[str, DeploymentHandle] | None = None,
    ) -> None:
        self._handle = handle
        # Models served by another GPU class's deployment (serve_app/app.py), by name; the rest
        # go to ``handle``.
        self._by_model = dict(by_model or {})
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        # Told when a model replica died under a request (crash, OOM kill, spot reclaim): Serve
        # replaces it, and an operator should hear of it (failure alerts).
        self._on_replica_lost = on_replica_lost
        self.load = LoadTracker()
        self.replicas = ReplicaReports()

    @property
    def deployment(self) -> tuple[str, str]:
        """(application, deployment) of the model: what readiness asks Serve's controller about."""
        return self._handle.app_name, self._handle.deployment_name

    async def generate(self, jobs: list[ImageSpec]) -> list[ImageResult]:
        """All images or an error: on any failure the other jobs of the request are cancelled.

        A replica that dies mid-render (crash, spot reclaim, OOM kill) costs the caller nothing
        but time: the request is sent once more, to a live replica, within the same deadline.
        """
        responses: list[DeploymentResponse] = []
        self.load.started(len(jobs))
        try:
            async with asyncio.timeout(self._timeout_s):
                for attempt in (1, 2):
                    # remote() itself raises BackPressureError when the model's queue is full, for
                    # image k of n after images 0..k-1 were sent: collect them one by one, so the
                    # handler below cancels those (no render left running for a caller given a 503).
                    responses = []
                    for job in jobs:
                        responses.append(self._for(job).generate.remote(job))
                    try:
                        results = list(await asyncio.gather(*(_awaitable(r) for r in responses)))
                        break
                    except (RayActorError, ActorUnavailableError) as error:
                        for response in responses:
                            _cancel_quietly(response)
                        self._replica_lost(error)
                        if attempt == 2:
                            raise
                        logger.warning(
                            "model replica died mid-request (%s); retrying once", type(error).__name__
                        )
        except BaseException as error:
            for response in responses:
                _cancel_quietly(response)
            translated = self._translate(error)
            outcome = getattr(translated, "code", None) or "canceled"
            log_finished_request(jobs, [], str(outcome))
            if translated is error:
                raise
            raise translated from error
        finally:
            self.load.finished(len(jobs))
        for result in results:
            self.replicas.observe(result)
            self.load.observe(result.render_s, result.batch_size, _units(result))
        log_finished_request(jobs, results, "succeeded")
        return results

    async def generate_stream(self, job: ImageSpec) -> AsyncIterator[ProgressEvent | ImageResult]:
        """Progress events, then the ImageResult; errors translated like ``generate``'s."""
        stream = None
        self.load.started()
        try:
            async with asyncio.timeout(self._timeout_s):
                stream = self._for(job).options(stream=True).generate_stream.remote(job)
                async for event in stream:
                    if isinstance(event, ImageResult):
                        self.replicas.observe(event)
                        self.load.observe(event.render_s, event.batch_size, _units(event))
                    yield event
        except BaseException as error:
            if stream is not None:
                _cancel_quietly(stream)
            if isinstance(error, RayActorError | ActorUnavailableError):
                self._replica_lost(error)
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error
        finally:
            self.load.finished()

    def _for(self, job: ImageSpec) -> DeploymentHandle:
        """Ray Serve multiplexing: the router prefers a replica that already holds the job's model."""
        if not job.model:
            return self._handle
        return self._by_model.get(job.model, self._handle).options(multiplexed_model_id=job.model)

    def _replica_lost(self, error: BaseException) -> None:
        if self._on_replica_lost is not None:
            try:
                self._on_replica_lost(f"{type(error).__name__}: {str(error)[:300]}")
            except Exception:  # an alert must never fail the request
                logger.exception("replica-lost callback failed")

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, BackPressureError):
            return OverloadedError(self._retry_after_s)
        if isinstance(error, TimeoutError):
            return GenerationTimeoutError(f"The image was not ready within {self._timeout_s:g} seconds.")
        if isinstance(error, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
            return error
        logger.error("generation failed: %r", error)
        return GenerationFailedError(f"Image generation failed: {type(error).__name__}.")


def _units(result: ImageResult) -> float:
    return work_units(result.steps, result.width, result.height)


async def _awaitable(response: DeploymentResponse) -> ImageResult:
    return await response


def _cancel_quietly(response: DeploymentResponse | DeploymentResponseGenerator) -> None:
    """Cancel a response that may already have failed: cancel() re-raises its stored error."""
    try:
        response.cancel()
    except Exception:  # the error that made us cancel is already being reported
        logger.debug("cancel of a failed response raised", exc_info=True)
