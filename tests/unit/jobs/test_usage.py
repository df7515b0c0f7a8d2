"""Usage records: one per request or image, summed by caller and day; counted from keys alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.core.images import ImageResult, ImageSpec
from serve_app.jobs.usage import UsageBook, days_between, metric_caller, usage_entry, usage_key
from serve_app.storage.local import LocalImageStore


def spec(caller: str, size: int = 64, steps: int = 4) -> ImageSpec:
    return ImageSpec("p", size, size, steps, 7.5, "ddim", 1, caller=caller)


def result(size: int = 64, steps: int = 4, render_s: float = 2.0, batch: int = 4) -> ImageResult:
    return ImageResult(b"png", 1, size, size, steps, 0.0, render_s, batch)


def test_an_entry_counts_pixels_times_steps_and_the_batch_share() -> None:
    entry = usage_entry([spec("alice")] * 2, [result(), result(render_s=1.0, batch=2)], "sync")
    assert entry.caller == "alice" and entry.images == 2
    assert entry.pixel_steps == 2 * 64 * 64 * 4
    assert entry.gpu_s == pytest.approx(2.0 / 4 + 1.0 / 2)
    key = usage_key(entry)
    assert key.startswith(f"usage/{entry.day}/") and key.endswith(f"-{entry.id}-n2-alice.json")


def test_callers_that_cannot_name_a_key_are_anonymous() -> None:
    assert usage_entry([spec("")], [result()], "job").caller == "anonymous"
    assert usage_entry([spec("../x")], [result()], "job").caller == "anonymous"


def test_metrics_name_keys_but_not_people() -> None:
    assert metric_caller("alice") == "alice"
    assert metric_caller("discord-1234") == "discord" and metric_caller("ip-10.0.0.1") == "keyless"


def test_days_between_is_bounded() -> None:
    assert days_between("2026-01-30", "2026-02-01") == ["2026-01-30", "2026-01-31", "2026-02-01"]
    with pytest.raises(ValueError):
        days_between("2026-02-01", "2026-01-01")
    with pytest.raises(ValueError):
        days_between("2025-01-01", "2026-01-01")


def test_the_store_sums_by_caller_and_day_and_counts_a_day_from_its_keys(tmp_path: Path) -> None:
    book = UsageBook(LocalImageStore(str(tmp_path)))

    async def scenario() -> tuple[list, int, int]:
        book.record([spec("alice")] * 3, [result()] * 3, "sync")
        book.record([spec("alice")], [result()], "job")
        book.record([spec("bob")], [result(size=128)], "sync")
        book.record([spec("bob")], [], "sync")  # nothing rendered: nothing recorded
        await book.flush()
        day = usage_entry([spec("alice")], [result()], "x").day
        rows = await book.summary(day, day)
        return rows, await book.images_on("alice", day), await book.images_on("carol", day)

    rows, alice_today, carol_today = asyncio.run(scenario())
    by_caller = {row["caller"]: row for row in rows}
    assert set(by_caller) == {"alice", "bob"}
    assert by_caller["alice"]["images"] == 4 and by_caller["alice"]["requests"] == 2
    assert by_caller["bob"]["pixel_steps"] == 128 * 128 * 4
    assert (alice_today, carol_today) == (4, 0)
