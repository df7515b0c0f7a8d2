"""Register the slash commands with Discord.

    python -m bot_gateway.register              # global commands (can take up to an hour to show)
    python -m bot_gateway.register --guild ID   # one server, instantly: best while testing
    python -m bot_gateway.register --config deployments/aws.yaml   # model choices from that config

Reads DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN from the environment, or from the JSON secret
named by SECRETS_MANAGER_SECRET_ID (and DISCORD_API_BASE_URL, default Discord's v10 API). The bot
token is needed only here, never by the running service. PUT replaces the whole command list, so
running it twice is harmless.

The ``model`` and ``lora`` choices come from the model catalogue of the config file the service
runs (``--config``: its application's ``args``, read as the service reads them, environment
included); without one, from the environment alone (one model: no ``model`` option). Register
again after changing the catalogue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from bot_gateway.commands import DEFAULT_SIZE_CHOICES, imagine_command, max_grid
from bot_gateway.settings_command import settings_command
from bot_gateway.webhook_client import USER_AGENT
from serve_app.config.catalogue import ModelCatalogue
from serve_app.config.credentials import read_secret
from serve_app.config.settings import AppSettings

DEFAULT_API = "https://discord.com/api/v10"


def commands_url(api_base: str, application_id: str, guild_id: str | None) -> str:
    base = f"{api_base.rstrip('/')}/applications/{application_id}"
    return f"{base}/guilds/{guild_id}/commands" if guild_id else f"{base}/commands"


def app_settings(config: Path | None, app: str | None = None) -> AppSettings:
    """The settings the service runs with: the ``args`` of ``app`` (or the only application) in a
    Serve config file, validated as ``build_app`` validates them."""
    if config is None:
        return AppSettings()
    document = yaml.safe_load(config.read_text()) or {}
    applications = document.get("applications") or []
    chosen = [a for a in applications if app is None or a.get("name") == app]
    if len(chosen) != 1:
        names = ", ".join(str(a.get("name")) for a in applications) or "none"
        raise SystemExit(f"{config}: pick one application with --app (applications: {names})")
    return AppSettings.model_validate(chosen[0].get("args") or {})


def command_definitions(
    catalogue: ModelCatalogue,
    sizes: tuple[str, ...] = DEFAULT_SIZE_CHOICES,
    max_steps: int = 100,
    max_count: int = 4,
) -> list[dict[str, Any]]:
    return [
        imagine_command(sizes, max_steps, catalogue, max_count),
        settings_command(catalogue, sizes, max_steps),
    ]


def register(
    application_id: str,
    bot_token: str,
    guild_id: str | None = None,
    api_base: str = DEFAULT_API,
    sizes: tuple[str, ...] = DEFAULT_SIZE_CHOICES,
    max_steps: int = 100,
    catalogue: ModelCatalogue | None = None,
    max_count: int = 4,
) -> list[dict]:
    response = httpx.put(
        commands_url(api_base, application_id, guild_id),
        json=command_definitions(catalogue or AppSettings().catalogue, sizes, max_steps, max_count),
        headers={"Authorization": f"Bot {bot_token}", "User-Agent": USER_AGENT},
        timeout=30,
    )
    if response.status_code >= 300:
        raise SystemExit(f"Discord refused the commands ({response.status_code}): {response.text}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Register raydiffusion's slash commands.")
    parser.add_argument("--guild", help="register in this guild only (instant) instead of globally")
    parser.add_argument(
        "--sizes",
        default=",".join(DEFAULT_SIZE_CHOICES),
        help="comma-separated size choices offered by /imagine (default: %(default)s)",
    )
    parser.add_argument("--max-steps", type=int, default=100, help="upper bound of the steps option")
    parser.add_argument(
        "--config", type=Path, help="the Serve config file the service runs (model and LoRA choices)"
    )
    parser.add_argument("--app", help="the application in --config, when it has several")
    args = parser.parse_args(argv)
    settings = app_settings(args.config, args.app)
    catalogue = settings.catalogue
    if len(catalogue.entries) > 25 or len(catalogue.loras) > 25:
        print("more than 25 models or LoRAs: those options autocomplete instead of listing choices")
    values = {name: os.environ.get(name) for name in ("DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN")}
    secret_id = os.environ.get("SECRETS_MANAGER_SECRET_ID")
    if secret_id and not all(values.values()):
        secret = read_secret(secret_id)
        values = {name: value or secret.get(name) for name, value in values.items()}
    missing = [name for name, value in values.items() if not value]
    if missing:
        print(
            f"set {' and '.join(missing)} first (environment or SECRETS_MANAGER_SECRET_ID)", file=sys.stderr
        )
        return 2
    registered = register(
        str(values["DISCORD_APPLICATION_ID"]),
        str(values["DISCORD_BOT_TOKEN"]),
        args.guild,
        os.environ.get("DISCORD_API_BASE_URL", DEFAULT_API),
        tuple(size.strip() for size in args.sizes.split(",") if size.strip()),
        args.max_steps,
        catalogue,
        max_grid(settings),
    )
    where = f"guild {args.guild}" if args.guild else "all guilds (global)"
    for command in registered:
        options = ", ".join(option["name"] for option in command.get("options", []))
        print(f"registered /{command['name']} ({options}) for {where}")
    print(json.dumps(registered, indent=2) if os.environ.get("VERBOSE") else "", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
