"""Settings: sizes, consistent bounds, environment fallbacks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.config.settings import AppSettings
from serve_app.config.sizes import parse_size


def test_size_parsing() -> None:
    assert parse_size("512x768") == (512, 768)
    assert parse_size(" 64 X 64 ") == (64, 64)
    for bad in ("512", "axb", "512x", "-64x64", "64x64x64"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_settings_reject_inconsistent_bounds() -> None:
    with pytest.raises(ValidationError, match="default_size"):
        AppSettings(default_size="2048x2048")
    with pytest.raises(ValidationError, match="min_size"):
        AppSettings(min_size=512, max_size=256)
    with pytest.raises(ValidationError, match="scheduler"):
        AppSettings(default_scheduler="nope")
    with pytest.raises(ValidationError, match="unknown_field"):
        AppSettings.model_validate({"unknown_field": 1})


def test_settings_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Key values long and distinctive enough that no other field (a random temp dir name, say)
    # can contain them by chance: the repr check below must only fail if a key really leaks.
    first, second = "sk-repr-canary-0123456789", "sk-repr-canary-9876543210"
    monkeypatch.setenv("RAYDIFFUSION_API_KEYS", f"{first}, {second},")
    monkeypatch.setenv("RAYDIFFUSION_DEFAULT_STEPS", "12")
    settings = AppSettings()
    assert settings.api_keys == [first, second]
    assert settings.default_steps == 12
    assert AppSettings(default_steps=5).default_steps == 5  # args win over the environment
    assert "sk-repr-canary" not in repr(settings)  # keys never end up in logs via repr


def test_job_leases_and_sweeps_are_bounded_against_each_other() -> None:
    """A lease must leave its runner room to renew it; an orphan is found within one lease."""
    with pytest.raises(ValidationError, match="prediction_sweep_interval_s"):
        AppSettings(prediction_stale_s=10, prediction_sweep_interval_s=30)
    with pytest.raises(ValidationError, match="prediction_stale_s"):
        AppSettings(prediction_stale_s=0.5, prediction_sweep_interval_s=0.1)
    assert AppSettings(prediction_stale_s=3, prediction_sweep_interval_s=1).prediction_stale_s == 3
