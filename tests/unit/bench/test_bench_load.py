"""The benchmark's load generator: which requests count, and Little's-law throughput."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.load import LoadResult, closed_loop


def test_throughput_is_callers_over_mean_latency() -> None:
    result = LoadResult(concurrency=4, duration_s=10.0, latencies_s=[2.0, 2.0, 4.0, 4.0], images=4)
    assert result.images_per_s == pytest.approx(4 / 3.0)
    result.errors["HTTPError"] = 4  # half the requests failed: half the images per request
    assert result.images_per_s == pytest.approx(0.5 * 4 / 3.0)
    assert LoadResult(concurrency=4, duration_s=10.0).images_per_s == 0.0


def test_closed_loop_counts_requests_sent_in_the_window_including_those_it_drains() -> None:
    sends: list[float] = []

    async def send() -> int:
        sends.append(time.monotonic())
        await asyncio.sleep(0.3)
        return 1

    # Each caller sends at about 0, 0.3, 0.6 and 0.9 s: two in the warm-up (< 0.45 s), two in the
    # window (0.45-1.05 s), the last finishing at about 1.2 s, after the window closed.
    started = time.monotonic()
    result = asyncio.run(closed_loop(send, concurrency=3, duration_s=0.6, label="t", warmup_s=0.45))
    in_window = [t for t in sends if t >= started + 0.45]
    assert len(sends) == 12
    # Every request sent in the window is counted once it finishes, even after the window closed.
    assert result.requests == result.images == len(in_window) == 6
    assert all(latency >= 0.3 for latency in result.latencies_s)
    assert result.images_per_s == pytest.approx(3 / (sum(result.latencies_s) / len(result.latencies_s)))
