"""The benchmark's load generator: which requests count, and Little's-law throughput."""

from __future__ import annotations

import asyncio

import pytest

from bench.load import LoadResult, closed_loop


def test_throughput_is_callers_over_mean_latency() -> None:
    result = LoadResult(concurrency=4, duration_s=10.0, latencies_s=[2.0, 2.0, 4.0, 4.0], images=4)
    assert result.images_per_s == pytest.approx(4 / 3.0)
    result.errors["HTTPError"] = 4  # half the requests failed: half the images per request
    assert result.images_per_s == pytest.approx(0.5 * 4 / 3.0)
    assert LoadResult(concurrency=4, duration_s=10.0).images_per_s == 0.0


def test_closed_loop_counts_requests_sent_in_the_window_including_those_it_drains() -> None:
    """The test drives the clock and finishes the requests itself: no window depends on how fast
    this machine runs. Three callers send at 0, 0.3, 0.6 and 0.9 (each request takes 0.3): two
    rounds in the warm-up (< 0.45), two in the window (0.45-1.05), the last finishing at 1.2,
    after the window closed."""
    now = [0.0]
    sends: list[float] = []
    waiting: list[asyncio.Future[int]] = []
    all_waiting = asyncio.Event()

    async def send() -> int:
        sends.append(now[0])
        finished = asyncio.get_running_loop().create_future()
        waiting.append(finished)
        if len(waiting) == 3:
            all_waiting.set()
        return await finished

    async def scenario() -> LoadResult:
        run = asyncio.ensure_future(
            closed_loop(send, concurrency=3, duration_s=0.6, label="t", warmup_s=0.45, clock=lambda: now[0])
        )
        for finish_at in (0.3, 0.6, 0.9, 1.2):
            await asyncio.wait_for(all_waiting.wait(), 10)  # every caller has a request out
            all_waiting.clear()
            now[0] = finish_at
            finishing = waiting[:]
            waiting.clear()
            for request in finishing:
                request.set_result(1)
        return await asyncio.wait_for(run, 10)

    result = asyncio.run(scenario())
    assert sends == [0.0] * 3 + [0.3] * 3 + [0.6] * 3 + [0.9] * 3
    in_window = [t for t in sends if t >= 0.45]
    # Every request sent in the window is counted once it finishes, even after the window closed.
    assert result.requests == result.images == len(in_window) == 6
    assert result.latencies_s == pytest.approx([0.3] * 6)
    assert result.completed_in_window == 6  # finished at 0.6 and 0.9 (those of 1.2 are past it)
    assert result.images_per_s == pytest.approx(3 / 0.3)
