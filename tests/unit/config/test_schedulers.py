"""Sampler names as users type them, onto one canonical name."""

from __future__ import annotations

import pytest

from serve_app.config.schedulers import UnknownSchedulerError, canonical_scheduler_name


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("DDIM", "ddim"),
        ("Euler a", "euler_a"),
        ("euler_ancestral", "euler_a"),
        ("Euler", "euler"),
        ("DPM++ 2M", "dpmpp_2m"),
        ("DPM++ 2M Karras", "dpmpp_2m_karras"),
        ("dpmpp-2m", "dpmpp_2m"),
        ("PNDM", "pndm"),
        (" lms ", "lms"),
    ],
)
def test_scheduler_names_users_type(name: str, canonical: str) -> None:
    assert canonical_scheduler_name(name) == canonical


def test_unknown_scheduler_lists_choices() -> None:
    with pytest.raises(UnknownSchedulerError, match="euler_a"):
        canonical_scheduler_name("warp drive")
