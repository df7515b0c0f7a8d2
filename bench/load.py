"""A closed-loop load generator: ``concurrency`` clients, each sending its next request as soon as
the previous one returns, for a fixed time. Closed-loop measures what a service sustains at a
given number of callers in flight (images/s and latency together), which is how image services
are used: a bot or an app waits for each image.

Throughput comes from Little's law, not from counting completions in the window: a batched
service returns images in bursts (8 every few seconds here), so a fixed window catches one burst
more or less depending on where its edges fall, which is worth 10-15% at 25 s. With no think time
and ``N`` callers always in flight, throughput = N / mean latency exactly, over every request sent
inside the window; those still in flight when it closes are allowed to finish (the drain) so that
slow requests are not cut off and the mean is not biased low.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    images: int = 0
    completed_in_window: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + sum(self.errors.values())

    @property
    def images_per_s(self) -> float:
        """Little's law for a closed loop: callers in flight / mean latency, times images per request."""
        if not self.latencies_s:
            return 0.0
        images_per_request = self.images / self.requests
        return self.concurrency * images_per_request / statistics.fmean(self.latencies_s)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "images": self.images,
            "images_per_s": round(self.images_per_s, 3),
            "completed_in_window_per_s": round(self.completed_in_window / self.duration_s, 3),
            "p50_s": _round(self.percentile(50)),
            "p95_s": _round(self.percentile(95)),
            "p99_s": _round(self.percentile(99)),
            "mean_s": _round(statistics.fmean(self.latencies_s) if self.latencies_s else None),
            "errors": self.errors,
            "latencies_s": [round(x, 4) for x in sorted(self.latencies_s)],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def closed_loop(
    send: Callable[[], Awaitable[int]],
    concurrency: int,
    duration_s: float,
    label: str,
    warmup_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> LoadResult:
    """``send`` returns how many images it got (0 on error) or raises; latency is measured here.

    Requests sent during the warm-up are not counted (the first ones meet a cold replica and an
    empty pipeline); every request sent inside the window is, once it finishes. ``clock``: what
    "now" is (a test drives its own, so which request falls in which window is not a race).
    """
    result = LoadResult(concurrency=concurrency, duration_s=duration_s)
    started = clock()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s
    bar = tqdm(total=round(duration_s), desc=label, unit="s", leave=False)

    async def client() -> None:
        while clock() < stop_at:
            sent = clock()
            try:
                images = await send()
                error = None
            except Exception as exc:
                images, error = 0, type(exc).__name__
            finished = clock()
            if measure_from <= finished <= stop_at and error is None:
                result.completed_in_window += images
            if sent < measure_from:
                continue
            if error is None and images:
                result.latencies_s.append(finished - sent)
                result.images += images
            else:
                key = error or "no image"
                result.errors[key] = result.errors.get(key, 0) + 1

    async def tick() -> None:
        while clock() < stop_at:
            await asyncio.sleep(1)
            bar.n = max(0, min(round(duration_s), round(clock() - measure_from)))
            bar.refresh()

    ticker = asyncio.ensure_future(tick())
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        ticker.cancel()  # the bar is cosmetic: the run ends with its last caller, not a tick later
        bar.close()
    return result
