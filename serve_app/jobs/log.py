"""One JSON line per finished stored job: Ray's log files and CloudWatch Logs can then be queried
by field (synchronous requests write theirs through serve_app/ops/request_log.py).

Fields are picked one by one, never the whole record: a record holds the caller's webhook URL
(which may carry a secret) and the Discord interaction token, and neither may reach a log. Prompts
are left out too: they are the users' words, not operational data.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from serve_app.core.images import ImageResult
from serve_app.jobs.records import JobRecord
from serve_app.ops.request_log import image_fields

# Ray Serve writes the "ray.serve" logger of a replica to its log file (logs/serve/ in the session).
logger = logging.getLogger("ray.serve")

EVENT = "job_finished"


def finished_job_entry(
    record: JobRecord, results: list[ImageResult], model: str
) -> dict[str, Any]:
    return {
        "event": EVENT,
        "id": record.id,
        "source": record.source,
        "outcome": record.status,
        "error_code": record.error_code,
        **image_fields(record.image_specs(), results, model),
        "predict_time_s": record.predict_time_s,
        "attempts": record.attempts,
        "overload_waits": record.overload_waits,
    }


def log_finished_job(record: JobRecord, results: list[ImageResult], model: str) -> None:
    entry = finished_job_entry(record, results, model)
    logger.info(json.dumps(entry, separators=(",", ":"), sort_keys=True))
