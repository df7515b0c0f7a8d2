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


def test_keys_from_a_secret_fail_closed_until_read_and_when_absent() -> None:
    """A secret configured but unread, or holding no key, never means "no key needed"."""
    settings = AppSettings(secrets_manager_secret_id="raydiffusion/x")
    unread = merge_credentials({}, settings, secret_loaded=False)
    assert unread.api_keys_unavailable and unread.api_keys == ()
    # The environment's keys do not stand in for an unread secret either (they may be revoked ones).
    with_env = AppSettings(secrets_manager_secret_id="raydiffusion/x", api_keys=["env"])
    assert merge_credentials({}, with_env, secret_loaded=False).api_keys_unavailable
    keyless = merge_credentials({"DISCORD_PUBLIC_KEY": "pk"}, settings)
    assert keyless.api_keys_unavailable and keyless.api_keys == ()
    assert merge_credentials({}, with_env).api_keys == ("env",)  # read, and the settings fill the gap
    read = merge_credentials({"RAYDIFFUSION_API_KEYS": "s1"}, settings)
    assert read.api_keys == ("s1",) and not read.api_keys_unavailable
    # Without a secret, no keys configured is the operator's choice (an open local service).
    assert not merge_credentials({}, AppSettings()).api_keys_unavailable
