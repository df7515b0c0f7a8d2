"""A closed-loop load generator: ``concurrency`` clients, each sending its next request as soon as
the previous one returns, for a fixed time. Closed-loop measures what a service sustains at a
given number of callers in flight (images/s and latency together), which is how image services
are used: a bot or an app waits for each image.
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

    @property
    def images_per_s(self) -> float:
        return self.images / self.duration_s if self.duration_s else 0.0

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
            "images": self.images,
            "images_per_s": round(self.images_per_s, 3),
            "p50_s": _round(self.percentile(50)),
            "p95_s": _round(self.percentile(95)),
            "p99_s": _round(self.percentile(99)),
            "mean_s": _round(statistics.fmean(self.latencies_s) if self.latencies_s else None),
            "errors": self.errors,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def closed_loop(
    send: Callable[[], Awaitable[int]],
    concurrency: int,
    duration_s: float,
    label: str,
    warmup_s: float = 0.0,
) -> LoadResult:
    """``send`` returns how many images it got (0 on error) or raises; latency is measured here."""
    result = LoadResult(concurrency=concurrency, duration_s=duration_s)
    started = time.monotonic()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s
    bar = tqdm(total=round(duration_s), desc=label, unit="s", leave=False)

    async def client() -> None:
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            try:
                images = await send()
                error = None
            except Exception as exc:
                images, error = 0, type(exc).__name__
            finished = time.monotonic()
            # Steady-state throughput: completions inside the window, however early they started;
            # latency only from requests sent inside it (the first, cold one is warm-up).
            if measure_from <= finished <= stop_at:
                if error is None and images:
                    if sent >= measure_from:
                        result.latencies_s.append(finished - sent)
                    result.images += images
                else:
                    key = error or "no image"
                    result.errors[key] = result.errors.get(key, 0) + 1

    async def tick() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(1)
            bar.n = max(0, min(round(duration_s), round(time.monotonic() - measure_from)))
            bar.refresh()

    await asyncio.gather(tick(), *(client() for _ in range(concurrency)))
    bar.close()
    return result
