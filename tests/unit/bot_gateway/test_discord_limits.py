"""Discord users and guilds get the same kinds of limits as API keys, and their own fair share."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot_gateway.admission import DiscordQuotas
from serve_app.config.settings import AppSettings
from serve_app.core.errors import RateLimitedError
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.jobs.usage import UsageBook
from serve_app.storage.local import LocalImageStore


def quotas(**settings: object) -> DiscordQuotas:
    return DiscordQuotas(AppSettings(**settings))


def test_a_user_over_images_per_minute_is_refused_with_a_wait() -> None:
    limits = quotas(discord_user_limits={"images_per_minute": 4})
    limits.admit("111", "900", 4)
    with pytest.raises(RateLimitedError) as refused:
        limits.admit("111", "900", 1)
    assert 1 <= (refused.value.retry_after_s or 0) <= 60
    message = refused.value.message
    assert "you may have 4 images per minute" in message and "discord-" not in message
    limits.admit("222", "900", 4)  # another user of the same guild is not held back


def test_a_guild_limit_holds_back_all_its_users_and_takes_nothing_from_a_refused_one() -> None:
    limits = quotas(discord_guild_limits={"concurrent_images": 4}, discord_user_limits={"daily_images": 4})
    held = limits.admit("111", "900", 4)
    with pytest.raises(RateLimitedError):
        limits.admit("222", "900", 1)
    limits.release(held)
    limits.admit("222", "900", 4)  # 222's daily budget was not charged by the refusal
    limits.admit("333", None, 4)  # a DM has no guild: only the user's limits


def test_unlimited_by_default() -> None:
    limits = quotas()
    for _ in range(50):
        limits.admit("111", "900", 10)


def test_jobs_are_stamped_with_the_user_and_the_configured_share() -> None:
    jobs = [{"prompt": "a"}, {"prompt": "b"}]
    quotas(discord_weight=2.0, discord_priority=5).stamp(jobs, "111")
    shares = {(job["caller"], job["caller_weight"], job["caller_priority"]) for job in jobs}
    assert shares == {("discord-111", 2.0, 5)}


def test_a_users_daily_count_is_read_back_from_the_usage_records(tmp_path: Path) -> None:
    """Images the user rendered before a restart (or on another replica) count against the budget."""
    store = LocalImageStore(str(tmp_path))
    usage = UsageBook(store)
    image = ImageResult(b"png", 1, 64, 64, 2, 0.0, 1.0, 1)

    async def scenario() -> None:
        job = ImageSpec("p", 64, 64, 2, 7.5, "ddim", 1, caller="discord-111")
        usage.record([job] * 3, [image] * 3, "job")
        await usage.flush()
        limits = DiscordQuotas(AppSettings(discord_user_limits={"daily_images": 4}), usage)
        limits.admit("111", None, 1)  # starts reading the records in the background
        await asyncio.gather(*limits._seeding)
        with pytest.raises(RateLimitedError, match="per UTC day"):
            limits.admit("111", None, 1)

    asyncio.run(scenario())
