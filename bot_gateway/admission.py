"""Who may start a render, before Discord gets its deferred answer.

Refusals are cheap, immediate and ephemeral (only the invoking user sees them): a guild that is not
on the allow-list, a banned word, a user who already has the maximum number of renders running,
or a queue so long the image could not arrive within the interaction token's 15 minutes.
"""

from __future__ import annotations

import re
from collections import Counter

from serve_app.core.images import ImageSpec
from serve_app.core.load import LoadTracker, work_units


class JobsPerUser:
    """Images rendering per Discord user, on this ingress replica.

    Counted in images, not commands: a grid of four costs the queue four renders, so it takes four
    of the user's slots, and a user cannot take four times the queue by asking for grids.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: Counter[str] = Counter()

    @property
    def limit(self) -> int:
        return self._limit

    def try_acquire(self, user_id: str, images: int = 1) -> bool:
        if self._running[user_id] + images > self._limit:
            return False
        self._running[user_id] += images
        return True

    def release(self, user_id: str, images: int = 1) -> None:
        self._running[user_id] -= images
        if self._running[user_id] <= 0:
            del self._running[user_id]

    def running(self, user_id: str) -> int:
        return self._running[user_id]


def banned_word_in(texts: list[str], banned_words: list[str]) -> str | None:
    """The first banned word found as a whole word (case-insensitive), or None."""
    for word in banned_words:
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        if any(pattern.search(text) for text in texts):
            return word
    return None


def guild_allowed(guild_id: str | None, allowed_guilds: list[str]) -> bool:
    return not allowed_guilds or (guild_id is not None and guild_id in allowed_guilds)


def expected_wait_s(load: LoadTracker, job: ImageSpec, cold_start_s: float, count: int = 1) -> float:
    """Seconds until ``count`` images like ``job`` would be ready if they were admitted now.

    The work already in flight on this ingress, plus the job's own, at the measured speed, as if
    one replica served it all (more replicas only make the real wait shorter). Before anything
    was measured the model may well be scaled to zero: a replica must start and load the weights
    first, so the estimate is the configured cold start, never 0.
    """
    own = work_units(job.steps, job.width, job.height)
    if load.seconds_per_unit is None:
        return cold_start_s
    queued = load.in_flight * (load.units_per_image or own)
    return (queued + own * count) * load.seconds_per_unit
