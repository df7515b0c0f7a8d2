"""A prediction's webhook: the job runner's delivery for ``source == "api"`` jobs.

The job runs first; its terminal state is then POSTed to the caller's webhook (public addresses
only, bounded retries: serve_app/core/webhooks.py) and the attempts recorded on the job.
"""

from __future__ import annotations

from serve_app.api.predictions.protocol import prediction_view
from serve_app.config.settings import AppSettings
from serve_app.core.webhooks import deliver_webhook
from serve_app.jobs.records import JobRecord, JobStore
from serve_app.jobs.runner import Execute
from serve_app.ops import metrics as service_metrics


class WebhookDelivery:
    """API jobs: run, then POST the final prediction to the caller's webhook (if any)."""

    def __init__(self, jobs: JobStore, settings: AppSettings) -> None:
        self._jobs = jobs
        self._settings = settings

    async def __call__(self, record: JobRecord, execute: Execute) -> None:
        final = await execute(None)
        if not final.webhook:
            return
        body = prediction_view(final, self._jobs.images, final.base_url)
        final.webhook_attempts = await deliver_webhook(
            final.webhook,
            body,
            self._settings.webhook_max_attempts,
            self._settings.webhook_retry_initial_s,
            allowed_hosts=self._settings.webhook_allowed_hosts,
        )
        if not final.webhook_attempts:
            service_metrics.webhook_failed()
        await self._jobs.save(final)
