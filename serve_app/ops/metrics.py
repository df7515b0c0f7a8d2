"""The service's own Prometheus metrics, recorded with ``ray.serve.metrics``.

Ray exports them from every node's metrics agent (as ``ray_raydiffusion_...``) next to Ray's and
Serve's built-ins, with Serve's deployment, replica and application tags added, so one Prometheus
scrape of the cluster sees batching, queueing and failures. Serve metrics must be created inside
the replica (or actor) process that records them, so the objects are built on first use in each
process; outside a Ray worker (pure unit tests, CLI tools) recording is skipped, there being no
agent to export to.
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ray.serve.metrics import Counter, Gauge, Histogram

logger = logging.getLogger("ray.serve")

PREFIX = "raydiffusion_"

RejectReason = Literal["overload", "bad_input", "auth", "admission", "rate_limit"]

# Seconds: from a 4-step thumbnail on a GPU (tens of ms) to a CPU render of a large batch (minutes).
SECONDS_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]
BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
# Discord wants the interaction answered within 3 s.
ACK_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5]

# Every metric this module defines, by its name without Ray's ``ray_`` export prefix. The dashboard
# and alert rules test checks their queries against this.
METRIC_NAMES = (
    "raydiffusion_images_total",
    "raydiffusion_batch_size",
    "raydiffusion_queue_wait_seconds",
    "raydiffusion_render_seconds",
    "raydiffusion_render_seconds_per_image",
    "raydiffusion_queue_depth",
    "raydiffusion_jobs_total",
    "raydiffusion_discord_ack_seconds",
    "raydiffusion_discord_edit_failures_total",
    "raydiffusion_webhook_failures_total",
    "raydiffusion_rejected_total",
    "raydiffusion_alerts_total",
    "raydiffusion_usage_images_total",
    "raydiffusion_usage_gpu_seconds_total",
)


@dataclass
class _Metrics:
    images: Counter
    batch_size: Histogram
    queue_wait: Histogram
    render_batch: Histogram
    render_image: Histogram
    queue_depth: Gauge
    jobs: Counter
    discord_ack: Histogram
    discord_edit_failures: Counter
    webhook_failures: Counter
    rejected: Counter
    alerts: Counter
    usage_images: Counter
    usage_gpu_s: Counter


@functools.cache
def _metrics() -> _Metrics:
    from ray.serve.metrics import Counter, Gauge, Histogram

    def counter(name: str, description: str, tags: tuple[str, ...] = ()) -> Counter:
        return Counter(PREFIX + name, description=description, tag_keys=tags)

    return _Metrics(
        images=counter("images_total", "Images that left the model's queue.", ("model", "kind", "outcome")),
        batch_size=Histogram(
            PREFIX + "batch_size", description="Images per pipeline call.", boundaries=BATCH_BOUNDARIES
        ),
        queue_wait=Histogram(
            PREFIX + "queue_wait_seconds",
            description="Seconds an image waited in the model replica before its render began.",
            boundaries=SECONDS_BOUNDARIES,
        ),
        render_batch=Histogram(
            PREFIX + "render_seconds",
            description="Seconds one pipeline call (a batch) took.",
            boundaries=SECONDS_BOUNDARIES,
        ),
        render_image=Histogram(
            PREFIX + "render_seconds_per_image",
            description="Seconds of a pipeline call per image it rendered.",
            boundaries=SECONDS_BOUNDARIES,
        ),
        queue_depth=Gauge(PREFIX + "queue_depth", description="Images waiting in this model replica."),
        jobs=counter("jobs_total", "Predictions and Discord jobs that finished.", ("source", "outcome")),
        discord_ack=Histogram(
            PREFIX + "discord_ack_seconds",
            description="Seconds from receiving a Discord interaction to answering it.",
            boundaries=ACK_BOUNDARIES,
        ),
        discord_edit_failures=counter(
            "discord_edit_failures_total", "Discord message edits that failed for good."
        ),
        webhook_failures=counter("webhook_failures_total", "Job webhooks not delivered after retries."),
        rejected=counter("rejected_total", "Requests refused before any work.", ("reason",)),
        alerts=counter("alerts_total", "Failure alerts, sent or suppressed.", ("kind", "outcome")),
        # ``caller`` is an API key's name (never the key), "discord" or "keyless" (serve_app/jobs/usage.py).
        usage_images=counter("usage_images_total", "Images rendered, by caller.", ("caller",)),
        usage_gpu_s=counter(
            "usage_gpu_seconds_total",
            "GPU-seconds of the batch share of rendered images, by caller.",
            ("caller",),
        ),
    )


def _recorder() -> _Metrics | None:
    # Never the first to import ray: importing it reconfigures the "ray" loggers, which a process
    # without Ray (a unit test reading its logs) must not see happen.
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return _metrics()
    except Exception:  # a metrics failure must never fail a request
        logger.exception("could not create the service metrics")
        return None


def images_done(model: str, kind: str, outcome: str, count: int = 1) -> None:
    metrics = _recorder()
    if metrics is not None and count > 0:
        metrics.images.inc(count, tags={"model": model, "kind": kind, "outcome": outcome})


def batch_rendered(size: int, render_s: float, queue_waits: list[float]) -> None:
    metrics = _recorder()
    if metrics is None:
        return
    metrics.batch_size.observe(size)
    metrics.render_batch.observe(render_s)
    for _ in range(size):
        metrics.render_image.observe(render_s / max(1, size))
    for wait in queue_waits:
        metrics.queue_wait.observe(max(0.0, wait))


def queue_depth(waiting: int) -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.queue_depth.set(waiting)


def job_finished(source: str, outcome: str) -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.jobs.inc(tags={"source": source, "outcome": outcome})


def rejected(reason: RejectReason) -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.rejected.inc(tags={"reason": reason})


def discord_acked(seconds: float) -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.discord_ack.observe(seconds)


def discord_edit_failed() -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.discord_edit_failures.inc()


def webhook_failed() -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.webhook_failures.inc()


def alert(kind: str, outcome: str) -> None:
    metrics = _recorder()
    if metrics is not None:
        metrics.alerts.inc(tags={"kind": kind, "outcome": outcome})


def usage(caller: str, images: int, gpu_s: float) -> None:
    metrics = _recorder()
    if metrics is not None and images > 0:
        metrics.usage_images.inc(images, tags={"caller": caller})
        metrics.usage_gpu_s.inc(gpu_s, tags={"caller": caller})
