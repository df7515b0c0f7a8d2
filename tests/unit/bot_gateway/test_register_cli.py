"""`python -m bot_gateway.register`: --dry-run needs no token; every failure is one line, no traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from support import ROOT

from bot_gateway.register import main

LOCAL = ROOT / "deployments" / "local.yaml"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_dry_run_prints_what_it_would_send_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN", "SECRETS_MANAGER_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--dry-run", "--config", str(LOCAL), "--guild", "123456789012345678"]) == 0
    first, rest = capsys.readouterr().out.split("\n", 1)
    assert first.startswith("PUT https://discord.com/api/v10/applications/")
    assert "/guilds/123456789012345678/" in first
    commands = {command["name"]: command for command in json.loads(rest)}
    assert {"imagine", "settings"} <= set(commands)
    model = next(o for o in commands["imagine"]["options"] if o["name"] == "model")
    assert {"tiny-sd", "tiny-sd-b"} <= {choice["value"] for choice in model["choices"]}


def test_a_server_name_instead_of_its_id_is_refused_with_where_to_find_it(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--guild", "my-server", "--dry-run"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Copy Server ID" in err and "Traceback" not in err


def test_the_help_names_the_command_a_user_types(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m bot_gateway.register")


def test_a_missing_config_and_an_unreachable_discord_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in one_line(capsys.readouterr().err)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DISCORD_APPLICATION_ID", "1")
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "token")
    monkeypatch.setenv("DISCORD_API_BASE_URL", f"http://127.0.0.1:{port}/api/v10")
    assert main(["--guild", "42"]) == 2
    assert "cannot reach Discord" in one_line(capsys.readouterr().err)
