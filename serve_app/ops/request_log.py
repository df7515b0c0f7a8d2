"""One JSON line per finished synchronous request (OpenAI, /imagine, A1111): Ray's log files and
CloudWatch Logs can then be queried by field. Stored jobs write theirs in serve_app/jobs/log.py.

Fields are picked one by one, never a whole request: prompts are the users' words, not operational
data, and stay out.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from serve_app.core.images import ImageResult, ImageSpec

# Ray Serve writes the "ray.serve" logger of a replica to its log file (logs/serve/ in the session).
logger = logging.getLogger("ray.serve")

REQUEST_EVENT = "request_finished"


def image_fields(jobs: list[ImageSpec], results: list[ImageResult], model: str | None) -> dict[str, Any]:
    """What every line says about the images: which model drew them, their shapes, seeds and times.

    ``model`` stands in for jobs recorded before the catalogue (they name none).
    """
    first = jobs[0] if jobs else None
    return {
        "model": (first.model or model) if first else model,
        "loras": [f"{name}:{weight:g}" for name, weight in first.loras] if first else [],
        "kind": first.kind if first else None,
        "images": len(jobs),
        "sizes": sorted({f"{job.width}x{job.height}" for job in jobs}),
        "steps": first.steps if first else None,
        "seeds": [job.seed for job in jobs],
        "queue_s": round(max(r.queue_s for r in results), 3) if results else None,
        "render_s": round(max(r.render_s for r in results), 3) if results else None,
        "batch_sizes": [r.batch_size for r in results],
    }


def finished_request_entry(
    jobs: list[ImageSpec],
    results: list[ImageResult],
    outcome: str,
    source: str = "sync",
    request_id: str | None = None,
) -> dict[str, Any]:
    """A synchronous request (OpenAI, /imagine, A1111): no record, so its own id (A1111: its task id)."""
    replica_model = results[0].replica.get("model") if results and results[0].replica else None
    return {
        "event": REQUEST_EVENT,
        "id": request_id or f"req_{secrets.token_hex(8)}",
        "source": source,
        "outcome": outcome,
        **image_fields(jobs, results, replica_model),
    }


def log_finished_request(
    jobs: list[ImageSpec],
    results: list[ImageResult],
    outcome: str,
    source: str = "sync",
    request_id: str | None = None,
) -> None:
    entry = finished_request_entry(jobs, results, outcome, source, request_id)
    logger.info(json.dumps(entry, separators=(",", ":"), sort_keys=True))
