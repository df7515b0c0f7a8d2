"""Telling a replaced model replica from a scale-down or a redeploy, in the controller's details."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.ops.alerts import FailureAlerts
from serve_app.ops.replica_watch import DeploymentView, ReplicaWatch, alerting_replica, replaced


def details(replicas: dict[str, str], target: int, config: dict[str, Any] | None = None) -> dict:
    """The shape of ServeInstanceDetails as the controller serialises it (the parts read here)."""
    return {
        "applications": {
            "app": {
                "deployments": {
                    "DiffusionModel": {
                        "status": "HEALTHY",
                        "message": "",
                        "target_num_replicas": target,
                        "deployment_config": config or {"max_ongoing_requests": 16},
                        "replicas": [{"replica_id": rid, "state": state} for rid, state in replicas.items()],
                    },
                    "Ingress": {
                        "status": "HEALTHY",
                        "target_num_replicas": 2,
                        "replicas": [
                            {"replica_id": "ing-b", "state": "RUNNING"},
                            {"replica_id": "ing-a", "state": "RUNNING"},
                        ],
                    },
                }
            }
        }
    }


def view(replicas: dict[str, str], target: int, config: dict[str, Any] | None = None) -> DeploymentView:
    found = DeploymentView.of(details(replicas, target, config), "app", "DiffusionModel")
    assert found is not None
    return found


def test_a_running_replica_gone_at_the_same_target_was_replaced() -> None:
    before = view({"r1": "RUNNING", "r2": "RUNNING"}, target=2)
    assert replaced(before, view({"r1": "RUNNING", "r2": "STOPPING", "r3": "STARTING"}, 2)) == ["r2"]
    assert replaced(before, view({"r1": "RUNNING", "r3": "RUNNING"}, 2)) == ["r2"]  # already replaced
    assert replaced(before, view({"r1": "RUNNING", "r2": "RUNNING"}, 2)) == []


def test_a_scale_down_or_a_redeploy_is_not_a_replacement() -> None:
    before = view({"r1": "RUNNING", "r2": "RUNNING"}, target=2)
    assert replaced(before, view({"r1": "RUNNING", "r2": "STOPPING"}, 1)) == []  # downscale
    assert replaced(before, view({}, 0)) == []  # scaled to zero
    # Two gone while the target fell by one: one of them was not a scale-down.
    assert replaced(before, view({"r3": "STARTING"}, 1)) == ["r1", "r2"]
    redeployed = view({"r3": "RUNNING", "r4": "RUNNING"}, 2, {"max_ongoing_requests": 8})
    assert replaced(before, redeployed) == []


def test_only_the_first_running_ingress_replica_alerts() -> None:
    seen = details({"r1": "RUNNING"}, 1)
    assert alerting_replica(seen, "app", "Ingress", "ing-a")
    assert not alerting_replica(seen, "app", "Ingress", "ing-b")
    assert alerting_replica(seen, "app", "Ingress", None)  # not in a replica: nobody else would


class Recorded(FailureAlerts):
    def __init__(self) -> None:
        super().__init__(AppSettings(alert_webhook_url="https://alerts.example.com/hook"))
        self.sent: list[tuple[str, dict]] = []
        self.on_publish: Callable[[], None] = lambda: None

    def publish(self, kind: str, subject: str, detail: dict[str, Any]) -> None:
        """Recorded instead of sent: what the watch decided to alert is under test here."""
        self.sent.append((kind, detail))
        self.on_publish()


def test_the_watch_alerts_once_per_replacement_it_sees() -> None:
    alerts = Recorded()
    watch = ReplicaWatch("app", "DiffusionModel", alerts, interval_s=1)
    assert watch.look(details({"r1": "STARTING"}, 1)) == []  # first look: nothing to compare
    assert watch.look(details({"r1": "RUNNING"}, 1)) == []
    assert watch.look(details({"r1": "STOPPING", "r2": "STARTING"}, 1)) == ["r1"]
    assert watch.look(details({"r2": "RUNNING"}, 1)) == []  # the same replacement, seen again
    assert [(kind, detail["replicas"]) for kind, detail in alerts.sent] == [("replica_replaced", ["r1"])]


def test_the_watch_keeps_watching_when_the_controller_cannot_be_read() -> None:
    answers = iter([details({"r1": "RUNNING"}, 1), None, details({"r2": "RUNNING"}, 1)])

    def read() -> dict:
        answer = next(answers, details({"r2": "RUNNING"}, 1))
        if answer is None:
            raise ConnectionError("controller restarting")
        return answer

    alerts = Recorded()

    async def run() -> None:
        alerted = asyncio.Event()
        alerts.on_publish = alerted.set
        task = asyncio.create_task(ReplicaWatch("app", "DiffusionModel", alerts, 0.01, read).run_forever())
        await asyncio.wait_for(alerted.wait(), 10)  # the look after the failed read
        task.cancel()

    asyncio.run(run())
    assert [detail["replicas"] for _, detail in alerts.sent] == [["r1"]]
