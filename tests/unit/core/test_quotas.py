"""Per-caller limits: images per minute, concurrent images, a daily budget; all or nothing."""

from __future__ import annotations

import pytest

from serve_app.config.api_keys import CallerLimits
from serve_app.core.errors import RateLimitedError
from serve_app.core.quotas import QuotaBook

NOON = 1_764_849_600.0  # 2025-12-04T12:00:00Z


def test_images_per_minute_refuses_with_the_wait_until_enough_images_age_out() -> None:
    book = QuotaBook()
    limits = [("alice", CallerLimits(images_per_minute=4))]
    book.admit(limits, 3, now=NOON)
    book.admit(limits, 1, now=NOON + 20)
    with pytest.raises(RateLimitedError) as refused:
        book.admit(limits, 2, now=NOON + 30)
    # Two more fit once the first request's three images leave the window, 60 s after it.
    assert refused.value.retry_after_s == 30
    assert "4 images per minute" in refused.value.message
    book.admit(limits, 2, now=NOON + 60.5)  # and then they do


def test_a_request_larger_than_the_limit_itself_says_to_ask_for_fewer() -> None:
    with pytest.raises(RateLimitedError, match="ask for fewer"):
        QuotaBook().admit([("alice", CallerLimits(images_per_minute=4))], 5, now=NOON)


def test_concurrency_is_released_when_the_request_finishes() -> None:
    book = QuotaBook(concurrency_retry_after_s=7)
    limits = [("alice", CallerLimits(concurrent_images=4))]
    held = book.admit(limits, 4, now=NOON)
    with pytest.raises(RateLimitedError) as refused:
        book.admit(limits, 1, now=NOON)
    assert refused.value.retry_after_s == 7
    book.release(held)
    assert book.in_flight("alice") == 0
    book.admit(limits, 4, now=NOON)


def test_daily_budget_resets_at_utc_midnight_and_says_so() -> None:
    book = QuotaBook()
    limits = [("alice", CallerLimits(daily_images=10))]
    book.release(book.admit(limits, 10, now=NOON))
    with pytest.raises(RateLimitedError) as refused:
        book.admit(limits, 1, now=NOON + 1)
    assert refused.value.retry_after_s == 12 * 3600 - 1
    book.admit(limits, 10, now=NOON + 12 * 3600)  # the next UTC day


def test_the_daily_count_takes_the_stores_figure_when_it_is_larger() -> None:
    """Other replicas (and earlier processes) finished images this replica never saw."""
    book = QuotaBook()
    limits = [("alice", CallerLimits(daily_images=10))]
    assert book.needs_daily_seed("alice", now=NOON)
    book.seed_daily("alice", 8, now=NOON)
    assert not book.needs_daily_seed("alice", now=NOON + 1)
    with pytest.raises(RateLimitedError):
        book.admit(limits, 3, now=NOON + 2)
    book.admit(limits, 2, now=NOON + 2)
    book.seed_daily("alice", 5, now=NOON + 61)  # a smaller figure never lowers what this replica saw
    with pytest.raises(RateLimitedError):
        book.admit(limits, 1, now=NOON + 62)


def test_every_limit_is_checked_before_any_is_taken() -> None:
    """A Discord user within their limits in a guild over its limit: nothing is counted for either."""
    book = QuotaBook()
    user = ("discord-1", CallerLimits(images_per_minute=10))
    guild = ("guild-9", CallerLimits(images_per_minute=2))
    book.admit([guild], 2, now=NOON)
    with pytest.raises(RateLimitedError):
        book.admit([user, guild], 1, now=NOON)
    book.admit([user], 10, now=NOON)  # the user's minute is still whole


def test_a_refund_gives_back_minute_daily_and_concurrency() -> None:
    book = QuotaBook()
    limits = [("alice", CallerLimits(images_per_minute=4, daily_images=4, concurrent_images=4))]
    book.refund(book.admit(limits, 4, now=NOON), now=NOON)
    book.admit(limits, 4, now=NOON)


def test_unlimited_callers_are_never_refused() -> None:
    book = QuotaBook()
    for _ in range(100):
        book.admit([("bob", CallerLimits())], 64, now=NOON)
