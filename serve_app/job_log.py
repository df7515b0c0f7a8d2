"""One JSON line per finished job, so Ray's log files or CloudWatch Logs can be queried by field.

Fields are picked one by one, never the whole record: a record holds the caller's webhook URL
(which may carry a secret) and the Discord interaction token, and neither may reach a log. Prompts
are left out too: they are the users' words, not operational data.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from serve_app.generation import ImageResult
from serve_app.job_records import PredictionRecord

# Ray Serve writes the "ray.serve" logger of a replica to its log file (logs/serve/ in the session).
logger = logging.getLogger("ray.serve")

EVENT = "job_finished"


def finished_job_entry(
    record: PredictionRecord, results: list[ImageResult], model: str
) -> dict[str, Any]:
    jobs = record.image_jobs()
    return {
        "event": EVENT,
        "id": record.id,
        "source": record.source,
        "model": model,
        "outcome": record.status,
        "error_code": record.error_code,
        "kind": jobs[0].kind if jobs else None,
        "images": len(jobs),
        "sizes": sorted({f"{job.width}x{job.height}" for job in jobs}),
        "steps": jobs[0].steps if jobs else None,
        "seeds": [job.seed for job in jobs],
        "queue_s": round(max((r.queue_s for r in results), default=0.0), 3) if results else None,
        "render_s": round(max((r.render_s for r in results), default=0.0), 3) if results else None,
        "batch_sizes": [r.batch_size for r in results],
        "predict_time_s": record.predict_time_s,
        "attempts": record.attempts,
        "overload_waits": record.overload_waits,
    }


def log_finished_job(record: PredictionRecord, results: list[ImageResult], model: str) -> None:
    entry = finished_job_entry(record, results, model)
    logger.info(json.dumps(entry, separators=(",", ":"), sort_keys=True))
