"""Who used what: one usage record per finished request or job, summed by caller and day.

Each record says who asked (an API key's name, ``discord-<user id>``, ``ip-<address>`` without
keys, ``anonymous``), how many images were rendered, their pixels x steps, and the GPU-seconds of
their batch share (a pipeline call's time divided among the images it rendered, so a caller pays
for its images, not for the batch it joined).

Records are written to the image store like job records, one object per request (or per image
of a stored job) under ``usage/<UTC day>/``, never a shared counter: several ingress replicas
write at once and an object store has no atomic increment, so a read-modify-write total would
lose updates; one object each cannot. The object's name carries the caller and the image count
(``<ms>-<id>-n<images>-<caller>.json``; one folder per day, as the local store lists one level),
so a caller's images of a day (the daily budget, serve_app/core/quotas.py) are counted from a
listing without reading the objects.
``GET /v1/usage`` reads the records of the days asked for.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from serve_app.core.images import ImageResult, ImageSpec
from serve_app.core.quotas import utc_day
from serve_app.ops import metrics as service_metrics
from serve_app.storage import ImageStore

logger = logging.getLogger("ray.serve")

PREFIX = "usage/"
ANONYMOUS = "anonymous"
MAX_DAYS = 93  # one query reads at most about a quarter of records
_NAME = re.compile(r"/[0-9]{13}-[A-Za-z0-9_]+-n([0-9]+)-(.+)\.json$")
_CALLER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


class UsageEntry(BaseModel):
    id: str
    caller: str
    source: str  # "sync" (answered in the request), "api" (a prediction), "discord", ...
    at: float
    day: str
    images: int
    pixel_steps: int
    gpu_s: float


def caller_of(jobs: Sequence[ImageSpec]) -> str:
    caller = jobs[0].caller if jobs else ""
    return caller if _CALLER.match(caller or "") else ANONYMOUS


def metric_caller(caller: str) -> str:
    """The caller as a metric tag: an API key's name as is; Discord users and keyless clients in
    one tag each (a tag per user id or address would be a time series per person)."""
    if caller.startswith("discord-"):
        return "discord"
    if caller.startswith("ip-"):
        return "keyless"
    return caller


def usage_entry(
    jobs: Sequence[ImageSpec], results: Sequence[ImageResult], source: str, job_id: str | None = None
) -> UsageEntry:
    now = time.time()
    return UsageEntry(
        id=job_id or f"req_{secrets.token_hex(8)}",
        caller=caller_of(jobs),
        source=source,
        at=now,
        day=utc_day(now),
        images=len(results),
        pixel_steps=sum(r.width * r.height * r.steps for r in results),
        gpu_s=round(sum(r.render_s / max(1, r.batch_size) for r in results), 6),
    )


def usage_key(entry: UsageEntry) -> str:
    return f"{PREFIX}{entry.day}/{int(entry.at * 1000):013d}-{entry.id}-n{entry.images}-{entry.caller}.json"


def days_between(start: str, end: str) -> list[str]:
    first, last = datetime.date.fromisoformat(start), datetime.date.fromisoformat(end)
    if last < first:
        raise ValueError("'end' is before 'start'")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"at most {MAX_DAYS} days per query")
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range(count)]


def summarise(entries: Sequence[UsageEntry]) -> list[dict[str, Any]]:
    """Totals per (caller, day), sorted by day then caller."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        row = totals.setdefault(
            (entry.day, entry.caller),
            {"caller": entry.caller, "day": entry.day, "requests": 0, "images": 0, "pixel_steps": 0}
            | {"gpu_s": 0.0},
        )
        row["requests"] += 1
        row["images"] += entry.images
        row["pixel_steps"] += entry.pixel_steps
        row["gpu_s"] += entry.gpu_s
    rows = [totals[key] for key in sorted(totals)]
    for row in rows:
        row["gpu_s"] = round(row["gpu_s"], 3)
    return rows


class UsageBook:
    """Usage records over an ``ImageStore`` (synchronous: every call here runs it in a thread)."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._writes: set[asyncio.Task[None]] = set()

    def record(
        self,
        jobs: Sequence[ImageSpec],
        results: Sequence[ImageResult],
        source: str,
        job_id: str | None = None,
    ) -> None:
        """Count rendered images now (metrics) and store the record in the background: a caller
        never waits on the store for its own accounting."""
        if not results:
            return
        entry = usage_entry(jobs, results, source, job_id)
        service_metrics.usage(metric_caller(entry.caller), entry.images, entry.gpu_s)
        task = asyncio.get_running_loop().create_task(self._write(entry))
        self._writes.add(task)  # the event loop keeps only weak references to tasks
        task.add_done_callback(self._writes.discard)

    async def _write(self, entry: UsageEntry) -> None:
        try:
            await asyncio.to_thread(self._store.put_json, usage_key(entry), entry.model_dump())
        except Exception as error:  # accounting must never fail the request it accounts for
            logger.warning(
                "usage record %s not stored (%s)", entry.id, type(error).__name__
            )

    async def flush(self) -> None:
        """Wait for the records being written (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def images_on(self, caller: str, day: str) -> int:
        """Images ``caller`` rendered on ``day``, from the keys alone (the daily budget's seed)."""
        keys = await asyncio.to_thread(self._store.list_keys, f"{PREFIX}{day}/")
        return sum(
            int(match.group(1)) for key in keys if (match := _NAME.search(key)) and match.group(2) == caller
        )

    async def summary(self, start: str, end: str, caller: str | None = None) -> list[dict[str, Any]]:
        entries: list[UsageEntry] = []
        for day in days_between(start, end):
            keys = await asyncio.to_thread(self._store.list_keys, f"{PREFIX}{day}/")
            for key in keys:
                match = _NAME.search(key)
                if match is None or (caller is not None and match.group(2) != caller):
                    continue
                data = await asyncio.to_thread(self._store.get_json, key)
                if data:
                    entries.append(UsageEntry.model_validate(data))
        return summarise(entries)
