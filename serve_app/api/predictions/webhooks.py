"""A prediction's webhooks: the job runner's delivery for ``source == "api"`` jobs.

The job runs; the events the caller asked for (``webhook_events_filter``, Replicate's names) are
POSTed to its webhook (public addresses only, bounded retries: serve_app/core/webhooks.py), each
signed as Standard Webhooks says when a signing secret is configured (``webhook_secret``, or the
Secrets Manager secret's ``WEBHOOK_SECRET``), and the attempts recorded on the job.

- ``start``: once, as the run begins (the prediction as it then stands);
- ``output`` and ``completed``: once, when it reaches its terminal state (our output appears all at
  once with success, so an ``output`` event is the success itself; a failed or canceled prediction
  is sent only when ``completed`` is asked for). Without a filter: ``output`` and ``completed``,
  Replicate's default. ``logs`` is accepted and never sent (there are no logs).

Each message's ``webhook-id`` is made from the prediction id and the event, so every retry, and a
second delivery by a replica that adopted the job, carries the same id: a receiver that
deduplicates by it sees each event once.
"""

from __future__ import annotations

import asyncio

from serve_app.api.predictions.protocol import DEFAULT_WEBHOOK_EVENTS, prediction_view
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.core.webhooks import deliver_webhook
from serve_app.jobs.records import TERMINAL, JobRecord, JobStore
from serve_app.jobs.runner import Execute
from serve_app.ops import metrics as service_metrics


def webhook_events(record: JobRecord) -> set[str]:
    """The events the caller asked for (kept in the record's extra fields), or Replicate's default."""
    asked = (record.model_extra or {}).get("webhook_events_filter")
    return set(asked) if isinstance(asked, list) else set(DEFAULT_WEBHOOK_EVENTS)


def message_id(record: JobRecord, event: str) -> str:
    return f"msg_{record.id}_{event}"


class WebhookDelivery:
    """API jobs: run, then POST the events asked for to the caller's webhook (if any)."""

    def __init__(
        self, jobs: JobStore, settings: AppSettings, credentials: CredentialSource | None = None
    ) -> None:
        self._jobs = jobs
        self._settings = settings
        self._credentials = credentials

    async def __call__(self, record: JobRecord, execute: Execute) -> None:
        events = webhook_events(record)
        start = None
        if record.webhook and "start" in events and record.status not in TERMINAL:
            # Beside the run, not before it: a slow receiver must not hold up the render.
            start = asyncio.create_task(self._send(record, "start"))
        final = await execute(None)
        if start is not None:
            await start  # "start" reaches the receiver before "completed", retries included
        if not final.webhook:
            return
        if "completed" not in events and not ("output" in events and final.status == "succeeded"):
            return
        final.webhook_attempts = await self._send(final, "completed")
        if not final.webhook_attempts:
            service_metrics.webhook_failed()
        await self._jobs.save(final)

    async def _send(self, record: JobRecord, event: str) -> int:
        assert record.webhook is not None
        secret = None
        if self._credentials is not None:
            secret = (await self._credentials.current()).webhook_secret
        else:
            secret = self._settings.webhook_secret
        return await deliver_webhook(
            record.webhook,
            prediction_view(record, self._jobs.images, record.base_url),
            self._settings.webhook_max_attempts,
            self._settings.webhook_retry_initial_s,
            allowed_hosts=self._settings.webhook_allowed_hosts,
            message_id=message_id(record, event),
            secret=secret,
        )
