"""/readyz from the model deployment's replica states: ready only when a replica runs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from serve_app.api.readiness import Readiness, readiness_answer


def test_ready_only_with_a_running_model_replica() -> None:
    code, body = readiness_answer({"RUNNING": 2}, "HEALTHY")
    assert code == 200 and body["ready"] is True and body["model_replicas"] == {"running": 2, "starting": 0}


def test_scaled_to_zero_says_the_next_request_cold_starts() -> None:
    code, body = readiness_answer({}, "HEALTHY")
    assert code == 503 and body["status"] == "scaled_to_zero" and "cold start" in body["detail"]


def test_a_starting_replica_and_an_unknown_deployment_are_not_ready() -> None:
    code, body = readiness_answer({"STARTING": 1}, "UPDATING")
    assert code == 503 and body["status"] == "starting" and body["model_replicas"]["starting"] == 1
    code, body = readiness_answer(None, None)
    assert code == 503 and body["status"] == "unknown"
    code, body = readiness_answer({}, "DEPLOY_FAILED")
    assert code == 503 and body["status"] == "unhealthy"


def test_readiness_reads_its_own_deployment_and_survives_a_silent_controller() -> None:
    def status() -> SimpleNamespace:
        model = SimpleNamespace(replica_states={"RUNNING": 1}, status="HEALTHY")
        other = SimpleNamespace(replica_states={}, status="HEALTHY")
        return SimpleNamespace(
            applications={"app": SimpleNamespace(deployments={"DiffusionModel": model, "Ingress": other})}
        )

    assert asyncio.run(Readiness("app", "DiffusionModel", status).answer())[0] == 200
    assert asyncio.run(Readiness("other-app", "DiffusionModel", status).answer())[1]["status"] == "unknown"

    def broken() -> None:
        raise ConnectionError("controller gone")

    code, body = asyncio.run(Readiness("app", "DiffusionModel", broken).answer())
    assert code == 503 and "ConnectionError" in body["detail"]


def test_other_gpu_classes_are_reported_beside_the_default_models_deployment() -> None:
    def status() -> SimpleNamespace:
        return SimpleNamespace(
            applications={
                "app": SimpleNamespace(
                    deployments={
                        "DiffusionModel": SimpleNamespace(replica_states={"RUNNING": 1}, status="HEALTHY"),
                        "DiffusionModel-l40s": SimpleNamespace(replica_states={}, status="HEALTHY"),
                    }
                )
            }
        )

    readiness = Readiness("app", "DiffusionModel", status)
    code, body = asyncio.run(readiness.answer())
    assert code == 200 and body["deployments"]["DiffusionModel-l40s"]["status"] == "scaled_to_zero"
