"""Failure alerts without Prometheus: an SNS topic and/or an alert webhook, rate limited.

A job that ends ``failed`` after its retries, a Discord message that could not be delivered, a
model replica that died under a request and one that Serve replaced at any time (``replica_watch``)
are things an operator must hear about even when nobody runs Prometheus. An outage fails everything at
once, so alerts are rate limited per process: at most ``alerts_max_per_window`` in any
``alerts_window_s``; the rest are counted (``raydiffusion_alerts_total{outcome="suppressed"}``) and
the next alert that goes out says how many were held back. Sending never blocks or fails the job:
alerts go out in background tasks, and a failed send is logged and counted, nothing more.

The webhook goes through the same SSRF guard and retries as job webhooks (``webhooks``); SNS
through boto3 (its standard ``AWS_ENDPOINT_URL`` reaches an emulator in tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.core.webhooks import deliver_webhook
from serve_app.ops import metrics as service_metrics

logger = logging.getLogger("ray.serve")

SUBJECT_LIMIT = 100  # SNS rejects longer subjects


class AlertLimiter:
    """At most ``limit`` alerts in any sliding ``window_s``; counts what it refuses."""

    def __init__(self, limit: int, window_s: float) -> None:
        self._limit = limit
        self._window_s = window_s
        self._sent: deque[float] = deque()
        self.suppressed = 0

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self._sent and now - self._sent[0] >= self._window_s:
            self._sent.popleft()
        if len(self._sent) >= self._limit:
            self.suppressed += 1
            return False
        self._sent.append(now)
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


class FailureAlerts:
    def __init__(self, settings: AppSettings) -> None:
        self._settings = settings
        self._limiter = AlertLimiter(settings.alerts_max_per_window, settings.alerts_window_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sns: Any = None

    @property
    def enabled(self) -> bool:
        return bool(self._settings.alerts_sns_topic_arn or self._settings.alert_webhook_url)

    def job_failed(self, job_id: str, source: str, error_code: str | None, error: str | None) -> None:
        self.publish(
            "job_failed",
            f"raydiffusion: {source} job {job_id} failed",
            {"id": job_id, "source": source, "error_code": error_code, "error": error},
        )

    def discord_undeliverable(self, job_id: str, reason: str) -> None:
        self.publish(
            "discord_undeliverable",
            f"raydiffusion: Discord message for job {job_id} not delivered",
            {"id": job_id, "reason": reason},
        )

    def replica_lost(self, detail: str) -> None:
        self.publish(
            "replica_lost",
            "raydiffusion: a model replica died under a request",
            {"detail": detail},
        )

    def replica_replaced(self, deployment: str, replicas: list[str], status: str, message: str) -> None:
        self.publish(
            "replica_replaced",
            f"raydiffusion: {deployment} replica replaced",
            {"deployment": deployment, "replicas": replicas, "status": status, "detail": message},
        )

    def publish(self, kind: str, subject: str, detail: dict[str, Any]) -> None:
        """Send in the background, if configured and within the rate limit."""
        if not self.enabled:
            return
        if not self._limiter.allow():
            service_metrics.alert(kind, "suppressed")
            return
        message = {
            "kind": kind,
            "at": time.time(),
            "model": self._settings.served_model_name,
            "suppressed_before": self._limiter.take_suppressed(),
            **detail,
        }
        task = asyncio.get_running_loop().create_task(self._send(kind, subject[:SUBJECT_LIMIT], message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for alerts in flight (shutdown)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, kind: str, subject: str, message: dict[str, Any]) -> None:
        settings = self._settings
        sent = True
        if settings.alerts_sns_topic_arn:
            try:
                await asyncio.to_thread(self._publish_sns, subject, message)
            except Exception as error:
                sent = False
                logger.warning("alert %s not published to SNS: %r", kind, error)
        if settings.alert_webhook_url:
            attempt = await deliver_webhook(
                settings.alert_webhook_url,
                {"subject": subject, **message},
                max_attempts=settings.webhook_max_attempts,
                initial_backoff_s=settings.webhook_retry_initial_s,
                allowed_hosts=settings.webhook_allowed_hosts,
            )
            if not attempt:
                service_metrics.webhook_failed()
            sent = sent and attempt > 0
        service_metrics.alert(kind, "sent" if sent else "failed")

    def _publish_sns(self, subject: str, message: dict[str, Any]) -> None:
        if self._sns is None:
            import boto3

            topic = str(self._settings.alerts_sns_topic_arn)
            region = topic.split(":")[3] if topic.count(":") >= 5 else None
            self._sns = boto3.client("sns", region_name=region or None)
        self._sns.publish(
            TopicArn=self._settings.alerts_sns_topic_arn,
            Subject=subject,
            Message=json.dumps(message, sort_keys=True),
        )


_shared: dict[int, FailureAlerts] = {}


def failure_alerts(settings: AppSettings) -> FailureAlerts:
    """One sender (and one rate limit) per settings object: the job runner and the bot share it."""
    alerts = _shared.get(id(settings))
    if alerts is None:
        alerts = _shared[id(settings)] = FailureAlerts(settings)
    return alerts
