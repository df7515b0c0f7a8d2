"""A1111's checkpoints and LoRAs over the model catalogue, and the checkpoint A1111 callers get.

A1111 names a checkpoint by its title (``v1-5.safetensors [6ce0161689]``), its file name or its
stem; clients compare what ``/sdapi/v1/sd-models`` lists with what they send, often after
lower-casing it (``webuiapi.util_set_model``). So a name matches a catalogue entry by its name, its
source, or the source's last path part, without the ``[hash]`` suffix, the extension or case.

Selecting a checkpoint with ``POST /sdapi/v1/options`` is, in A1111, a server-wide switch that
survives restarts (A1111 writes it to its ``config.json``). Here the choice is kept in the store
under ``a1111/options.json``, so every ingress replica, and one restarted later, renders A1111
requests without ``override_settings`` with it; other API callers keep the catalogue's default.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import PurePath
from typing import Any

from serve_app.config.catalogue import ModelCatalogue, ModelEntry
from serve_app.core.errors import InvalidRequestError, StorageUnavailableError
from serve_app.storage import ImageStore

logger = logging.getLogger("ray.serve")

OPTIONS_KEY = "a1111/options.json"
# A store that does not answer must not hold A1111 requests up: the last value read is used.
STORE_TIMEOUT_S = 1.0


def _bare(name: str) -> str:
    """'v1-5.safetensors [6ce0161689]' -> 'v1-5': how titles compare to what we serve."""
    name = name.strip().split(" [", 1)[0]
    for extension in (".safetensors", ".ckpt"):
        name = name.removesuffix(extension)
    return name.lower()


def _names(entry: ModelEntry) -> set[str]:
    return {_bare(name) for name in (entry.name, entry.model, PurePath(entry.model).name) if name}


def find_checkpoint(name: object, catalogue: ModelCatalogue, param: str) -> str | None:
    """The catalogue entry an A1111 checkpoint name means (None: not named), or a 400 listing them."""
    if name in (None, ""):
        return None
    if isinstance(name, str):
        wanted = _bare(name)
        for entry in catalogue.entries.values():
            if wanted in _names(entry):
                return entry.name
    raise InvalidRequestError(
        f"Checkpoint {name!r} is not served here; checkpoints: {', '.join(catalogue.names)} "
        "(see /sdapi/v1/sd-models).",
        param=param,
        code="model_not_found",
    )


def sd_models(catalogue: ModelCatalogue) -> list[dict[str, Any]]:
    """A1111's ``SDModelItem`` per entry; no hashes (A1111 too lists ``null`` until it hashed a file)."""
    return [
        {
            "title": entry.name,
            "model_name": PurePath(entry.name).name,
            "hash": None,
            "sha256": None,
            "filename": entry.model,
            "config": None,
        }
        for entry in catalogue.entries.values()
    ]


def lora_items(catalogue: ModelCatalogue) -> list[dict[str, Any]]:
    """A1111's built-in Lora extension's ``/sdapi/v1/loras``: ``{name, alias, path, metadata}``."""
    return [
        {"name": name, "alias": name, "path": lora.spec.source, "metadata": {}}
        for name, lora in catalogue.loras.items()
    ]


class CurrentCheckpoint:
    """The checkpoint A1111 requests get when they name none: the stored choice, else the default."""

    def __init__(self, store: ImageStore, catalogue: ModelCatalogue) -> None:
        self._store = store
        self._catalogue = catalogue
        self._last: str | None = None

    async def get(self) -> str:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                saved = await asyncio.to_thread(self._store.get_json, OPTIONS_KEY)
            self._last = (saved or {}).get("sd_model_checkpoint")
        except Exception as error:  # a store outage must not fail renders that do not need it
            logger.warning("A1111 options unreadable (%s); using the last value read", type(error).__name__)
        if self._last not in self._catalogue.entries:
            # Never set, or a model the catalogue no longer has: the catalogue's default.
            return self._catalogue.default.name
        return str(self._last)

    async def set(self, name: str) -> None:
        """Stored before the answer: a 200 means every replica now renders with ``name``."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S * 3):
                await asyncio.to_thread(self._store.put_json, OPTIONS_KEY, {"sd_model_checkpoint": name})
        except TimeoutError:
            raise StorageUnavailableError(
                "The checkpoint choice could not be stored (storage is not answering); retry shortly.",
                retry_after_s=5,
            ) from None
        self._last = name
