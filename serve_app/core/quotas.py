"""Per-caller limits, checked before anything is queued: images per minute, concurrent images,
and a daily image budget (an API key's, a Discord user's or a whole guild's).

An admission either takes every image of a request or none of them (``RateLimitedError``, which
the API answers as 429 with ``Retry-After``): a request is never half queued. ``Retry-After`` is
when the same request would pass: the moment enough of the last minute's images age out, the next
UTC midnight for the daily budget, and the configured back-off for concurrency (images finish
when they finish).

Counts live in the ingress replica's memory (a limit check must not wait on a store). The daily
budget is seeded from the usage records in the store (``serve_app/jobs/usage.py``) when a caller
is first seen each day and refreshed from them every ``DAILY_REFRESH_S``, so it survives restarts
and, with several ingress replicas, each replica also sees what the others finished. Minute and
concurrency limits are per ingress replica (one by default).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from serve_app.config.api_keys import CallerLimits
from serve_app.core.errors import RateLimitedError

WINDOW_S = 60.0
DAILY_REFRESH_S = 60.0


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def seconds_to_next_utc_day(at: float) -> float:
    return 86400.0 - (at % 86400.0)


@dataclass
class _Caller:
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (accepted at, images)
    in_flight: int = 0
    day: str = ""
    day_used: int = 0
    day_seeded_at: float | None = None  # when the store's count was last folded in


@dataclass(frozen=True)
class Admission:
    """What one accepted request holds: released (concurrency) when the request finishes."""

    callers: tuple[str, ...]
    images: int


class QuotaBook:
    def __init__(self, concurrency_retry_after_s: int = 5) -> None:
        self._callers: dict[str, _Caller] = {}
        self._concurrency_retry_after_s = concurrency_retry_after_s

    def _state(self, caller: str, now: float) -> _Caller:
        state = self._callers.setdefault(caller, _Caller())
        while state.recent and state.recent[0][0] <= now - WINDOW_S:
            state.recent.popleft()
        day = utc_day(now)
        if state.day != day:
            state.day, state.day_used, state.day_seeded_at = day, 0, None
        return state

    def needs_daily_seed(self, caller: str, now: float | None = None) -> bool:
        """True when the store's count for today should be (re)read before admitting ``caller``."""
        now = time.time() if now is None else now
        state = self._state(caller, now)
        return state.day_seeded_at is None or now - state.day_seeded_at >= DAILY_REFRESH_S

    def seed_daily(self, caller: str, stored_images: int, now: float | None = None) -> None:
        """Fold in the images the store says ``caller`` used today (on every replica, finished ones).

        The first read of the day adds to what this replica accepted before it landed (a read that
        does not hold up the request, Discord's); later reads keep the larger of the two counts:
        this replica's holds what it accepted that is not finished yet, the store's what the other
        replicas (and earlier processes) finished.
        """
        now = time.time() if now is None else now
        state = self._state(caller, now)
        if state.day_seeded_at is None:
            state.day_used += stored_images
        else:
            state.day_used = max(state.day_used, stored_images)
        state.day_seeded_at = now

    def admit(
        self, limits: Sequence[tuple[str, CallerLimits]], images: int, now: float | None = None
    ) -> Admission:
        """Take ``images`` from every (caller, limits) pair, or raise ``RateLimitedError`` and take none."""
        now = time.time() if now is None else now
        for caller, caller_limits in limits:
            self._check(caller, caller_limits, images, now)
        for caller, _ in limits:
            state = self._state(caller, now)
            state.recent.append((now, images))
            state.in_flight += images
            state.day_used += images
        return Admission(tuple(caller for caller, _ in limits), images)

    def release(self, admission: Admission) -> None:
        for caller in admission.callers:
            state = self._callers.get(caller)
            if state is not None:
                state.in_flight = max(0, state.in_flight - admission.images)

    def refund(self, admission: Admission, now: float | None = None) -> None:
        """Nothing of the request ran (refused further on, by a full queue or a bad input): give
        back its minute and daily counts too, not only its concurrency."""
        now = time.time() if now is None else now
        self.release(admission)
        for caller in admission.callers:
            state = self._state(caller, now)
            state.day_used = max(0, state.day_used - admission.images)
            for index in range(len(state.recent) - 1, -1, -1):
                if state.recent[index][1] == admission.images:
                    del state.recent[index]
                    break

    def in_flight(self, caller: str) -> int:
        state = self._callers.get(caller)
        return 0 if state is None else state.in_flight

    def _check(self, caller: str, limits: CallerLimits, images: int, now: float) -> None:
        state = self._state(caller, now)
        per_minute = limits.images_per_minute
        if per_minute is not None:
            if images > per_minute:
                raise RateLimitedError(
                    f"This request asks for {images} images; {caller} may have at most {per_minute} "
                    "per minute: ask for fewer.",
                    retry_after_s=int(WINDOW_S),
                )
            used = sum(count for _, count in state.recent)
            if used + images > per_minute:
                # The earliest moment enough of the window's images have aged out.
                excess = used + images - per_minute
                freed = 0
                wait = WINDOW_S
                for accepted_at, count in state.recent:
                    freed += count
                    if freed >= excess:
                        wait = accepted_at + WINDOW_S - now
                        break
                raise RateLimitedError(
                    f"Rate limit reached: {caller} may have {per_minute} images per minute "
                    f"({used} in the last minute).",
                    retry_after_s=max(1, math.ceil(wait)),
                )
        concurrent = limits.concurrent_images
        if concurrent is not None and state.in_flight + images > concurrent:
            if images > concurrent:
                message = (
                    f"This request asks for {images} images; {caller} may have at most {concurrent} "
                    "in progress at once: ask for fewer."
                )
            else:
                message = (
                    f"Concurrency limit reached: {caller} may have {concurrent} images in progress "
                    f"({state.in_flight} now)."
                )
            raise RateLimitedError(message, retry_after_s=self._concurrency_retry_after_s)
        daily = limits.daily_images
        if daily is not None and state.day_used + images > daily:
            raise RateLimitedError(
                f"Daily budget reached: {caller} may have {daily} images per UTC day "
                f"({state.day_used} used today).",
                retry_after_s=max(1, math.ceil(seconds_to_next_utc_day(now))),
            )
