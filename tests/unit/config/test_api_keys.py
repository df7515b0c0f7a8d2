"""API keys with names and limits: every accepted form, names that never reveal a key, matching."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.config.api_keys import ApiKeySpec, default_name, match_key, parse_key_specs
from serve_app.config.credentials import merge_credentials
from serve_app.config.settings import AppSettings


def test_bare_keys_get_names_made_from_a_hash_never_the_key() -> None:
    (spec,) = parse_key_specs("sk-secret-value")
    assert spec.name == default_name("sk-secret-value") and spec.name.startswith("key-")
    assert "sk-secret" not in spec.name and "sk-secret" not in repr(spec)
    assert spec.unlimited


def test_the_environment_takes_a_comma_list_or_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDIFFUSION_API_KEYS", "k1, k2")
    assert [s.key for s in parse_key_specs(AppSettings().api_keys)] == ["k1", "k2"]
    monkeypatch.setenv(
        "RAYDIFFUSION_API_KEYS", '[{"name": "alice", "key": "k1", "images_per_minute": 30}, "k2"]'
    )
    alice, bare = parse_key_specs(AppSettings().api_keys)
    assert (alice.name, alice.images_per_minute) == ("alice", 30)
    assert bare.key == "k2"


@pytest.mark.parametrize(
    "keys",
    [
        [{"name": "a b", "key": "k"}],  # a name must be a plain token (metric tags, store keys)
        [{"name": "discord-1", "key": "k"}],  # reserved for Discord users
        [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}],  # names are unique
        [{"name": "a", "key": "k", "images_per_minute": 0}],
        [{"name": "a", "key": "k", "colour": "blue"}],  # a typo fails the deploy
    ],
)
def test_a_bad_key_list_fails_the_deploy(keys: list) -> None:
    with pytest.raises(ValidationError):
        AppSettings(api_keys=keys)


def test_match_key_finds_the_spec_and_nothing_else() -> None:
    specs = parse_key_specs([{"name": "a", "key": "k-a"}, {"name": "b", "key": "k-b", "admin": True}])
    assert match_key("k-b", specs) == specs[1]
    assert match_key("k-", specs) is None and match_key("", specs) is None


def test_the_secrets_keys_win_and_keep_their_names_and_limits() -> None:
    settings = AppSettings(api_keys=["env-key"])
    secret = {"RAYDIFFUSION_API_KEYS": '[{"name": "ops", "key": "s1", "admin": true, "daily_images": 5}]'}
    merged = merge_credentials(secret, settings)
    assert merged.api_keys == ("s1",)
    (spec,) = merged.key_specs
    assert isinstance(spec, ApiKeySpec) and spec.admin and spec.daily_images == 5
    # A malformed list in the secret is ignored, never half-read: the settings' keys stay.
    broken = merge_credentials({"RAYDIFFUSION_API_KEYS": '[{"name": "x"}]'}, settings)
    assert broken.api_keys == ("env-key",)


def test_webhook_secret_from_settings_or_secret_and_checked() -> None:
    good = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert merge_credentials({}, AppSettings(webhook_secret=good)).webhook_secret == good
    other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    configured = AppSettings(webhook_secret=good)
    assert merge_credentials({"WEBHOOK_SECRET": other}, configured).webhook_secret == other
    # An unusable one in the secret is ignored (logged, never shown), the settings' one is used.
    assert merge_credentials({"WEBHOOK_SECRET": "nope"}, configured).webhook_secret == good
    with pytest.raises(ValidationError):
        AppSettings(webhook_secret="not-whsec")
    assert "whsec" not in repr(AppSettings(webhook_secret=good))
