"""Credentials: a secret's values win, the settings fill the gaps."""

from __future__ import annotations

from serve_app.config.credentials import merge_credentials
from serve_app.config.settings import AppSettings


def test_secret_values_win_and_settings_fill_the_gaps() -> None:
    settings = AppSettings(api_keys=["env"], discord_public_key="env-pk", discord_application_id="env-app")
    both = merge_credentials({"RAYDIFFUSION_API_KEYS": "s1, s2", "DISCORD_PUBLIC_KEY": "secret-pk"}, settings)
    assert both.api_keys == ("s1", "s2")
    assert both.discord_public_key == "secret-pk" and both.discord_application_id == "env-app"
    assert merge_credentials({}, settings).api_keys == ("env",)
    assert merge_credentials({"API_KEYS": ["a"]}, settings).api_keys == ("a",)
