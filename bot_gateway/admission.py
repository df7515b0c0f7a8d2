"""Who may start a render, before Discord gets its deferred answer.

Refusals are cheap, immediate and ephemeral (only the invoking user sees them): a guild that is not
on the allow-list, a banned word, a user who already has the maximum number of renders running,
a user or guild over its limits (``discord_user_limits``, ``discord_guild_limits``: the same
images per minute, concurrent images and daily budget as API keys), or a queue so long the image
could not arrive within the interaction token's 15 minutes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.core.errors import RateLimitedError
from serve_app.core.images import ImageSpec
from serve_app.core.load import LoadTracker, work_units
from serve_app.core.quotas import Admission, QuotaBook, utc_day
from serve_app.jobs.usage import UsageBook


class DiscordQuotas:
    """Per-user and per-guild limits, checked together: a request takes from both or from neither.

    Counted in this ingress replica's memory, like the concurrency above: the answer to Discord
    must come within 3 s, so no store is read on the way. A user's daily count is refreshed from
    the usage records (``serve_app/jobs/usage.py``) in the background instead, when first seen each
    day and every minute after, so it survives restarts and sees other replicas' finished images
    (a guild's daily count is this replica's: usage is recorded per user).
    """

    def __init__(self, settings: AppSettings, usage: UsageBook | None = None) -> None:
        self._settings = settings
        self._book = QuotaBook(concurrency_retry_after_s=settings.retry_after_s)
        self._usage = usage
        self._seeding: set[asyncio.Task[None]] = set()

    def _seed_daily(self, user_id: str) -> None:
        caller = discord_caller(user_id)
        if self._usage is None or self._settings.discord_user_limits.daily_images is None:
            return
        if not self._book.needs_daily_seed(caller) or any(t.get_name() == caller for t in self._seeding):
            return
        task = asyncio.get_running_loop().create_task(self._read_daily(caller), name=caller)
        self._seeding.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._seeding.discard)

    async def _read_daily(self, caller: str) -> None:
        assert self._usage is not None
        try:
            stored = await self._usage.images_on(caller, utc_day(time.time()))
        except Exception:  # the store is down: this replica's count stands
            return
        self._book.seed_daily(caller, stored)

    def admit(self, user_id: str, guild_id: str | None, images: int) -> Admission:
        """Take ``images`` from the user's and the guild's limits, or raise ``RateLimitedError``."""
        self._seed_daily(user_id)
        limits = [(discord_caller(user_id), self._settings.discord_user_limits)]
        if guild_id is not None:
            limits.append((f"discord-guild-{guild_id}", self._settings.discord_guild_limits))
        limits = [(name, caller_limits) for name, caller_limits in limits if not caller_limits.unlimited]
        try:
            return self._book.admit(limits, images)
        except RateLimitedError as error:
            # Told to the person: "you" and "this server", never our internal caller names.
            message = error.message.replace(f"discord-guild-{guild_id}", "this server")
            message = message.replace(discord_caller(user_id), "you")
            message = message[0].upper() + message[1:]
            raise RateLimitedError(message, retry_after_s=error.retry_after_s) from None

    def release(self, admission: Admission) -> None:
        self._book.release(admission)

    def refund(self, admission: Admission) -> None:
        self._book.refund(admission)

    def stamp(self, jobs: list[dict[str, Any]], user_id: str) -> None:
        """Name the user on a job record's images: the model replica's fair queue shares across
        users (``discord_weight``, ``discord_priority``), and usage is recorded per user."""
        for job in jobs:
            job.update(
                caller=discord_caller(user_id),
                caller_weight=self._settings.discord_weight,
                caller_priority=self._settings.discord_priority,
            )


def discord_caller(user_id: str) -> str:
    return f"discord-{user_id}"


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
