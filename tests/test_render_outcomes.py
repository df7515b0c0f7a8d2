"""Pure logic behind render outcomes: progress units, replica health, flagged images, /v1/models."""

from __future__ import annotations

import pytest

from serve_app.api.openai.models import models_listing
from serve_app.api.openai.protocol import image_entries
from serve_app.config.settings import AppSettings
from serve_app.core.errors import ContentPolicyError
from serve_app.core.images import ImageResult
from serve_app.engine.client import ReplicaReports
from serve_app.engine.render_health import RenderHealth
from serve_app.engine.step_progress import requested_step


def result(seed: int, flagged: bool = False, replica: dict | None = None) -> ImageResult:
    return ImageResult(
        png=b"png-%d" % seed,
        seed=seed,
        width=64,
        height=64,
        steps=4,
        queue_s=0.0,
        render_s=0.1,
        batch_size=1,
        nsfw_content_detected=flagged,
        replica=replica,
    )


@pytest.mark.parametrize(("requested", "iterations"), [(30, 30), (30, 59), (3, 5), (1, 1), (7, 13), (10, 4)])
def test_progress_is_in_requested_steps_and_never_passes_the_total(requested: int, iterations: int) -> None:
    shown = [requested_step(i, iterations, requested) for i in range(1, iterations + 1)]
    assert all(1 <= step <= requested for step in shown), shown
    assert shown == sorted(shown), "progress never goes back"
    assert shown[-1] == requested


def test_heun_thirty_steps_end_at_thirty() -> None:
    assert requested_step(59, 59, 30) == 30
    assert requested_step(58, 59, 30) == 29
    assert requested_step(1, 59, 30) == 1


def test_consecutive_replica_failures_make_the_replica_unhealthy() -> None:
    health = RenderHealth(limit=3)
    for _ in range(2):
        health.failed(RuntimeError("CUDA error: an illegal memory access was encountered"))
    health.check()  # two is not yet three
    health.succeeded()
    for _ in range(2):
        health.failed(RuntimeError("CUDA out of memory"))
    health.check()  # the success reset the count
    health.failed(MemoryError())
    with pytest.raises(RuntimeError, match="last 3 pipeline calls failed"):
        health.check()


def test_request_errors_do_not_count_and_zero_disables() -> None:
    health = RenderHealth(limit=1)
    health.failed(ValueError("bad input"))
    health.failed(ImportError("scheduler needs torchsde"))
    health.check()
    never = RenderHealth(limit=0)
    for _ in range(10):
        never.failed(RuntimeError("boom"))
    never.check()


def b64(index: int, r: ImageResult) -> dict[str, str]:
    return {"b64_json": r.png.decode()}


def test_every_image_flagged_is_a_400_content_policy_violation() -> None:
    for results in ([result(1, True)], [result(1, True), result(2, True)]):
        with pytest.raises(ContentPolicyError) as raised:
            image_entries(results, "p", b64)
        body = raised.value.body()["error"]
        assert raised.value.status_code == 400
        assert body["code"] == "content_policy_violation" and body["type"] == "invalid_request_error"


def test_partly_flagged_keeps_places_and_never_returns_the_flagged_image() -> None:
    calls: list[int] = []

    def image_of(index: int, r: ImageResult) -> dict[str, str]:
        calls.append(index)
        return {"b64_json": r.png.decode()}

    data = image_entries([result(1), result(2, True), result(3)], "p", image_of)
    assert [d.seed for d in data] == [1, 2, 3]
    assert calls == [0, 2]
    assert data[0].b64_json == "png-1" and data[0].error is None
    assert data[1].b64_json is None and data[1].url is None
    assert data[1].error["code"] == "content_policy_violation"
    assert set(data[1].error) == {"message", "type", "param", "code"}


def test_models_listing_reports_the_last_replica_seen_with_its_age() -> None:
    settings = AppSettings(model="some/model", model_name="sd", safety_checker=False)
    reports = ReplicaReports()
    (cold,) = models_listing(settings, reports)["data"]
    assert cold["id"] == "sd" and cold["replica"] is None and cold["safety_checker"] is False
    reports.observe(result(1))  # a result without a description changes nothing
    assert models_listing(settings, reports)["data"][0]["replica"] is None
    reports.observe(result(2, replica={"model": "sd", "device": "cuda", "max_batch_size": 8}))
    received_at = reports.by_model["sd"][1]
    (warm,) = models_listing(settings, reports, now=received_at + 42)["data"]
    assert warm["replica"]["device"] == "cuda" and warm["replica"]["age_s"] == 42.0
    # Per model: a report about another catalogue entry is not this one's.
    reports.observe(result(3, replica={"model": "other", "device": "cpu"}))
    assert models_listing(settings, reports, now=received_at + 42)["data"][0]["replica"]["device"] == "cuda"


def test_models_listing_says_which_strengths_image_inputs_use() -> None:
    """The browser page's Vary sends ``variation_strength`` from here, as the service's own do."""
    settings = AppSettings(model="some/model", variation_strength=0.55, upscale_strength=0.25)
    (model,) = models_listing(settings, ReplicaReports())["data"]
    assert model["image_inputs"] == {
        "default_strength": 0.75,
        "variation_strength": 0.55,
        "upscale_strength": 0.25,
        "max_input_bytes": settings.max_input_bytes,
        "max_input_pixels": settings.max_input_pixels,
    }


def test_a_prediction_never_hands_out_a_flagged_image(tmp_path) -> None:
    from serve_app.api.predictions.router import prediction_view
    from serve_app.jobs.records import JobRecord
    from serve_app.storage.store import LocalImageStore

    record = JobRecord(
        id="pred_abc",
        status="succeeded",
        input={"prompt": "p", "n": 3},
        jobs=[{"seed": s} for s in (1, 2, 3)],
        image_ids=["img_1", "img_2", "img_3"],
        nsfw_content_detected=[False, True, False],
        created_at=0.0,
    )
    view = prediction_view(record, LocalImageStore(tmp_path), "http://host")
    assert view["output"] == ["http://host/images/img_1.png", "http://host/images/img_3.png"]
    assert view["nsfw_content_detected"] == [False, True, False]
