"""Register the slash commands with Discord.

    python -m bot_gateway.register              # global commands (can take up to an hour to show)
    python -m bot_gateway.register --guild ID   # one server, instantly: best while testing
    python -m bot_gateway.register --config deployments/aws.yaml   # model choices from that config
    python -m bot_gateway.register --dry-run    # print the commands it would send; needs no token

A server (guild) id is a number: in Discord, User Settings -> Advanced -> Developer Mode on, then
right-click the server's icon -> Copy Server ID. Every failure (a missing variable, a bad config,
Discord unreachable or refusing) is one line on stderr and exit code 2, never a traceback.

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
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

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


class RegisterError(Exception):
    """What went wrong, in one line that says what to do."""


def guild_id(value: str) -> str:
    """argparse type: a Discord snowflake (digits), so a name or a URL fails before any request."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a server id: it is a number (Developer Mode on, then right-click the "
            "server -> Copy Server ID)"
        )
    return value


def app_settings(config: Path | None, app: str | None = None) -> AppSettings:
    """The settings the service runs with: the ``args`` of ``app`` (or the only application) in a
    Serve config file, validated as ``build_app`` validates them, except the image store (local
    here: no bucket needed to register commands)."""
    if config is None:
        return AppSettings()
    try:
        document = yaml.safe_load(config.read_text()) or {}
    except OSError as error:
        raise RegisterError(f"cannot read {config}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise RegisterError(f"{config} is not valid YAML: {str(error).splitlines()[0]}") from error
    applications = document.get("applications") or []
    chosen = [a for a in applications if app is None or a.get("name") == app]
    if len(chosen) != 1:
        names = ", ".join(str(a.get("name")) for a in applications) or "none"
        raise RegisterError(f"{config}: pick one application with --app (applications: {names})")
    # Registering needs the catalogue, not the store: validated with the local store, so the
    # store's bucket (RAYDIFFUSION_S3_BUCKET on the cluster) is not needed on this machine.
    args = {**(chosen[0].get("args") or {}), "image_store": "local"}
    try:
        return AppSettings.model_validate(args)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "args"
        raise RegisterError(f"{config}: args.{where}: {first['msg']}") from error


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
    url = commands_url(api_base, application_id, guild_id)
    try:
        response = httpx.put(
            url,
            json=command_definitions(catalogue or AppSettings().catalogue, sizes, max_steps, max_count),
            headers={"Authorization": f"Bot {bot_token}", "User-Agent": USER_AGENT},
            timeout=30,
        )
    except httpx.HTTPError as error:
        raise RegisterError(f"cannot reach Discord at {api_base} ({type(error).__name__})") from error
    if response.status_code in (401, 403):
        raise RegisterError(
            f"Discord refused the bot token ({response.status_code}): check DISCORD_BOT_TOKEN "
            "(Developer Portal -> Bot -> Reset Token) and that the bot was invited to that server"
        )
    if response.status_code >= 300:
        raise RegisterError(f"Discord refused the commands ({response.status_code}): {response.text[:300]}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except RegisterError as error:
        print(f"bot_gateway.register: {error}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot_gateway.register",
        description="Register raydiffusion's slash commands (/imagine, /settings) with Discord.",
    )
    parser.add_argument(
        "--guild",
        type=guild_id,
        help="register in this server only (instant) instead of globally; its numeric id "
        "(Developer Mode, then right-click the server -> Copy Server ID)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the commands it would send (JSON) and the URL, send nothing; needs no token",
    )
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
    sizes = tuple(size.strip() for size in args.sizes.split(",") if size.strip())
    if args.dry_run:
        application = os.environ.get("DISCORD_APPLICATION_ID") or "APPLICATION_ID"
        url = commands_url(os.environ.get("DISCORD_API_BASE_URL", DEFAULT_API), application, args.guild)
        print(f"PUT {url}")
        print(json.dumps(command_definitions(catalogue, sizes, args.max_steps, max_grid(settings)), indent=2))
        return 0
    values = {name: os.environ.get(name) for name in ("DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN")}
    secret_id = os.environ.get("SECRETS_MANAGER_SECRET_ID")
    if secret_id and not all(values.values()):
        try:
            secret = read_secret(secret_id)
        except (BotoCoreError, ClientError) as error:
            raise RegisterError(
                f"cannot read the secret {secret_id} ({type(error).__name__}: {error}); "
                "set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN instead, or fix AWS access"
            ) from error
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
        sizes,
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
