"""A Discord user's ``/imagine`` defaults (``/settings``), kept in the image store.

The store (a local folder or S3) is what survives restarts and is shared by every ingress
replica, so a default set through one replica applies on all of them and after a redeploy. The
key is built from the user's numeric id only (a Discord snowflake): nothing a user types becomes
part of a path. Every read and write is bounded, since both happen before the answer that
Discord expects within 3 seconds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from serve_app.core.params import GenerationParams
from serve_app.storage import ImageStore

USER_ID = re.compile(r"[0-9]{1,20}\Z")  # with fullmatch: "$" would let "1\n" through


class UserDefaults(BaseModel):
    """What ``/imagine`` uses when its own options leave a value out."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    size: str | None = None
    steps: int | None = Field(default=None, ge=1)
    negative_prompt: str | None = None
    updated_at: float | None = None

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in ("model", "size", "steps", "negative_prompt"))


def with_defaults(
    params: GenerationParams,
    defaults: UserDefaults,
    has_image: bool,
    takes_negative_prompt: Callable[[str | None], bool],
) -> GenerationParams:
    """``params`` with the user's defaults where the command left values out (given options win).

    A picture to start from keeps its own shape unless the command names a size, so a default
    size applies to text-to-image only. A saved negative prompt applies only to a model that takes
    one as usual (``takes_negative_prompt(model)``): FLUX.2 takes none and FLUX.1 only with true CFG,
    so a default the user set for SD would otherwise refuse every FLUX command for a field the
    command never named. One the command names is still checked, and refused, as typed.
    """
    update: dict[str, object] = {}
    if params.model is None and defaults.model:
        update["model"] = defaults.model
    if params.size is None and defaults.size and not has_image:
        update["size"] = defaults.size
    if params.steps is None and defaults.steps:
        update["steps"] = defaults.steps
    model = defaults.model if params.model is None and defaults.model else params.model
    if not params.negative_prompt and defaults.negative_prompt and takes_negative_prompt(model):
        update["negative_prompt"] = defaults.negative_prompt
    return params.model_copy(update=update)


class UnknownUserError(ValueError):
    """Not a Discord user id: nothing is read or stored for it."""


def settings_key(user_id: str) -> str:
    if not USER_ID.fullmatch(user_id):
        raise UnknownUserError(f"not a Discord user id: {user_id[:40]!r}")
    return f"discord-users/{user_id}/settings.json"


class UserSettingsStore:
    def __init__(self, store: ImageStore) -> None:
        self._store = store

    async def load(self, user_id: str, timeout_s: float) -> UserDefaults:
        """The user's defaults (empty when they set none); raises on a store failure or timeout."""
        key = settings_key(user_id)
        async with asyncio.timeout(timeout_s):
            saved = await asyncio.to_thread(self._store.get_json, key)
        return UserDefaults.model_validate(saved or {})

    async def save(self, user_id: str, defaults: UserDefaults, timeout_s: float) -> None:
        key = settings_key(user_id)
        if defaults.empty:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._store.delete, key)
            return
        value = defaults.model_copy(update={"updated_at": time.time()}).model_dump(exclude_none=True)
        async with asyncio.timeout(timeout_s):
            await asyncio.to_thread(self._store.put_json, key, value)
