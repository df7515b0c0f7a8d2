"""Shapes a compiled replica serves without ever compiling again, and how a batch is cut to fit them.

``torch.compile`` builds one graph per input shape: every new (batch size, height, width) costs a
compile of tens of seconds on a GPU, in the middle of someone's request, and with
``fullgraph=True`` the eighth one is a hard error. So a compiled replica warms up every
(size bucket x batch bucket) before it reports ready, and while serving only ever calls the UNet
with those shapes: a group is cut into calls no larger than the largest bucket (and the pixel
budget), each padded up to the next bucket with throw-away images whose results are dropped. A
size outside the buckets runs eagerly (no new graph) or is refused, by setting.

The pixel budget applies to every replica, compiled or not: the largest batch that fits a GPU
depends on the size (8 x 512x512 fits where 8 x 1024x1024 does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError


@dataclass(frozen=True)
class ShapePolicy:
    compiled: bool
    sizes: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]
    outside: str  # "eager" | "refuse"
    max_batch_pixels: int = 0

    def in_buckets(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes

    def pixel_limit(self, width: int, height: int) -> int:
        """Most images of this size one call may hold under the pixel budget (never below 1)."""
        if not self.max_batch_pixels:
            return 1 << 30
        return max(1, self.max_batch_pixels // (width * height))

    def batches_for(self, width: int, height: int) -> tuple[int, ...]:
        """Batch buckets warmed up for a size: those within the pixel budget (the first always)."""
        limit = self.pixel_limit(width, height)
        fitting = tuple(b for b in self.batches if b <= limit)
        return fitting or self.batches[:1]


@dataclass(frozen=True)
class PipelineCall:
    """One pipeline call: the group's jobs it renders, padded to ``batch`` when compiled."""

    indices: list[int]
    batch: int
    compiled: bool

    @property
    def padding(self) -> int:
        return self.batch - len(self.indices)


def shape_policy(settings: AppSettings, compiled: bool, max_batch_pixels: int = 0) -> ShapePolicy:
    speed = settings.speed
    sizes = tuple(speed.size_bucket_dimensions) or (settings.default_dimensions,)
    return ShapePolicy(
        compiled=compiled,
        sizes=sizes,
        batches=tuple(speed.batch_buckets),
        outside=speed.outside_buckets,
        max_batch_pixels=max_batch_pixels,
    )


def warmup_shapes(policy: ShapePolicy) -> list[tuple[int, int, int]]:
    """(width, height, batch) for every shape a compiled replica must have compiled before ready."""
    if not policy.compiled:
        return []
    return [(w, h, b) for (w, h) in policy.sizes for b in policy.batches_for(w, h)]


def plan_calls(count: int, width: int, height: int, policy: ShapePolicy) -> list[PipelineCall]:
    """Cut a group of ``count`` same-shape jobs into pipeline calls (see the module docstring)."""
    compiled = policy.compiled and policy.in_buckets(width, height)
    if policy.compiled and not compiled and policy.outside == "refuse":
        raise OutsideBucketsError(width, height, policy.sizes)
    limit = policy.pixel_limit(width, height)
    if compiled:
        buckets = policy.batches_for(width, height)
        limit = buckets[-1]
    calls = []
    for start in range(0, count, limit):
        indices = list(range(start, min(count, start + limit)))
        batch = len(indices)
        if compiled:
            batch = next(b for b in buckets if b >= len(indices))
        calls.append(PipelineCall(indices, batch, compiled))
    return calls


class OutsideBucketsError(ValueError):
    def __init__(self, width: int, height: int, sizes: tuple[tuple[int, int], ...]) -> None:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes)
        super().__init__(f"size {width}x{height} is not served by this model; sizes: {listed}")


def check_size_served(width: int, height: int, settings: AppSettings) -> None:
    """Refuse at the edge (400 naming ``size``) what a compiled replica would refuse anyway."""
    if not settings.compile or settings.speed.outside_buckets != "refuse":
        return
    policy = shape_policy(settings, compiled=True)
    if not policy.in_buckets(width, height):
        raise InvalidRequestError(str(OutsideBucketsError(width, height, policy.sizes)), param="size")


def dynamo_counters() -> dict[str, int]:
    """Graphs dynamo compiled so far in this process, and frames it failed or fell back on."""
    from torch._dynamo.utils import counters

    stats = counters.get("stats", {})
    frames = counters.get("frames", {})
    return {
        "unique_graphs": int(stats.get("unique_graphs", 0)),
        "frames_total": int(frames.get("total", 0)),
        "frames_ok": int(frames.get("ok", 0)),
        "recompiles": int(sum(counters.get("recompiles", {}).values())),
    }


def pad_jobs(jobs: list[Any], batch: int) -> list[Any]:
    """Fill a call up to ``batch`` with copies of its last job (their images are dropped)."""
    return jobs + [jobs[-1]] * (batch - len(jobs))
