"""Discord as the service sees it: one more client of the job runner, plugged in by serve_app/app.py.

The API layer and the job runner never import this package: the ingress is built with a list of
surfaces like this one, each giving the runner a ``Delivery`` for its jobs' ``source`` and the
HTTP app a router for its own endpoint. A plain class (no state) so that Serve can pickle it into
the ingress's constructor arguments.
"""

from __future__ import annotations

from fastapi import APIRouter

from bot_gateway.delivery import DiscordDelivery
from bot_gateway.router import create_discord_router
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.jobs.records import JobStore
from serve_app.jobs.runner import Delivery, JobRunner


class DiscordSurface:
    """``/discord/interactions`` and the delivery that edits each job's Discord message."""

    source = "discord"

    def delivery(self, jobs: JobStore, settings: AppSettings) -> Delivery:
        return DiscordDelivery(jobs, settings)

    def router(self, settings: AppSettings, runner: JobRunner, credentials: CredentialSource) -> APIRouter:
        # Discord authenticates with its own signatures, not API keys.
        return create_discord_router(settings, runner, credentials)
