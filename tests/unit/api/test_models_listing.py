"""/v1/models from what the ingress knows: the catalogue and the last replica report per model."""

from __future__ import annotations

from support import image_result as result

from serve_app.api.openai.models import models_listing
from serve_app.config.settings import AppSettings
from serve_app.engine.client import ReplicaReports


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


def test_the_safety_checker_is_what_the_replica_runs_never_only_the_setting() -> None:
    """The tiny model has no checker: with the setting on, /v1/models must not claim one."""
    settings = AppSettings(model="some/model", model_name="sd", safety_checker=True)
    reports = ReplicaReports()
    (cold,) = models_listing(settings, reports)["data"]
    assert cold["safety_checker"] is None  # not known before a replica reports
    assert cold["configured"]["safety_checker"] is True
    reports.observe(result(1, replica={"model": "sd", "safety_checker": False}))
    (warm,) = models_listing(settings, reports)["data"]
    assert warm["safety_checker"] is False and warm["replica"]["safety_checker"] is False
    reports.observe(result(2, replica={"model": "sd", "safety_checker": True}))
    assert models_listing(settings, reports)["data"][0]["safety_checker"] is True
    # Off in the settings is off, whatever a replica last said.
    off = settings.model_copy(update={"safety_checker": False})
    assert models_listing(off, reports)["data"][0]["safety_checker"] is False
