"""Alert when Serve replaces a model replica, whether or not a request was running on it.

A replica that dies under a request is seen by that request (``ModelClient.on_replica_lost``). One
that fails its health checks, or crashes between requests, is seen by nobody but Serve's
controller, which stops it and starts another. So the ingress watches the controller's own view of
the model deployment (``get_serve_instance_details``: what the dashboard and ``serve status``
show) every ``replica_watch_interval_s``. A replica that was RUNNING and is now gone or no longer
running was replaced, unless the deployment's target shrank by as many (a scale-down, scale to
zero included) or its config changed (a redeploy). Replacements go out as ``replica_replaced``
failure alerts, under their rate limit.

Every ingress replica watches, but only the one whose replica id sorts first among the running
ones alerts, so one replacement is one alert however many ingress replicas there are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serve_app.ops.alerts import FailureAlerts

logger = logging.getLogger("ray.serve")

RUNNING = "RUNNING"

ServeDetails = dict[str, Any]  # ray.serve.schema.ServeInstanceDetails as the controller serialises it


@dataclass(frozen=True)
class DeploymentView:
    running: frozenset[str]  # replica ids
    target: int
    config: str  # the deployment's config, serialised: a change means a redeploy
    status: str
    message: str = ""

    @classmethod
    def of(cls, details: ServeDetails, app: str, deployment: str) -> DeploymentView | None:
        entry = details.get("applications", {}).get(app, {}).get("deployments", {}).get(deployment)
        if entry is None:
            return None
        replicas = entry.get("replicas", [])
        return cls(
            running=frozenset(r["replica_id"] for r in replicas if r.get("state") == RUNNING),
            target=int(entry.get("target_num_replicas") or 0),
            config=json.dumps(entry.get("deployment_config", {}), sort_keys=True, default=str),
            status=str(entry.get("status", "")),
            message=str(entry.get("message", "")),
        )


def replaced(before: DeploymentView, after: DeploymentView) -> list[str]:
    """Replicas that stopped running between two looks and were not scaled away or redeployed."""
    if before.config != after.config:
        return []
    lost = sorted(before.running - after.running)
    if len(lost) <= max(0, before.target - after.target):
        return []
    return lost


def alerting_replica(details: ServeDetails, app: str, deployment: str, own_id: str | None) -> bool:
    """True for the one ingress replica that alerts: the first running one by id (or when unknown)."""
    view = DeploymentView.of(details, app, deployment)
    if own_id is None or view is None or not view.running:
        return True
    return min(view.running) == own_id


def serve_details() -> ServeDetails:
    """The controller's details of every application (blocking: call it in a thread).

    Through Serve's controller client, as the dashboard's ``/api/serve/applications/`` is; no public
    Python call returns replica ids (``serve.status()`` counts replicas per state only).
    """
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("no Serve controller")
    return client.get_serve_details()


class ReplicaWatch:
    def __init__(
        self,
        app: str,
        deployment: str,
        alerts: FailureAlerts,
        interval_s: float,
        read: Callable[[], ServeDetails] = serve_details,
    ) -> None:
        self._app = app
        self._deployment = deployment
        self._alerts = alerts
        self._interval_s = interval_s
        self._read = read
        self._before: DeploymentView | None = None
        self._own: tuple[str, str, str] | None = _own_replica()

    def look(self, details: ServeDetails) -> list[str]:
        """Compare with the previous look; alert and return the replicas replaced in between."""
        after = DeploymentView.of(details, self._app, self._deployment)
        before, self._before = self._before, after
        if after is not None and (before is None or before.running != after.running):
            logger.info("replica watch: %s replicas running: %s", self._deployment, sorted(after.running))
        if before is None or after is None:
            return []
        lost = replaced(before, after)
        if not lost:
            return []
        own_app, own_deployment, own_id = self._own or ("", "", None)
        if alerting_replica(details, own_app, own_deployment, own_id):
            self._alerts.replica_replaced(self._deployment, lost, after.status, after.message)
        return lost

    async def run_forever(self) -> None:
        while True:
            try:
                self.look(await asyncio.to_thread(self._read))
            except Exception as error:  # the controller restarting: look again next time
                logger.warning("replica watch: could not read Serve's state (%r)", error)
            await asyncio.sleep(self._interval_s)


def _own_replica() -> tuple[str, str, str] | None:
    """(app, deployment, replica id) of the replica running this, None outside a replica."""
    from ray import serve

    try:
        context = serve.get_replica_context()
    except Exception:
        return None
    return context.app_name, context.deployment, context.replica_id.unique_id
