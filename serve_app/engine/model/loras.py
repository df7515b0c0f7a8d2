"""LoRA adapters on a loaded model: loaded once per replica, switched per batch group.

diffusers (through PEFT) keeps every adapter loaded into a pipeline beside the base weights;
``set_adapters`` chooses which ones act, and with what weight, for the next call. So a group of jobs
asking for ``ink:0.8`` and the next group asking for none cost a weight switch, never a reload of the
base checkpoint. The img2img and inpainting pipelines share the UNet and text encoder with the
text-to-image one (``from_pipe``), so the adapters set here act on them too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from serve_app.config.catalogue import LoraSet, LoraSpec
from serve_app.engine.model.s3_sync import sync_s3_object

logger = logging.getLogger("ray.serve")


def lora_location(spec: LoraSpec, cache_dir: str, endpoint_url: str | None) -> tuple[str, dict[str, Any]]:
    """Where ``load_lora_weights`` finds the adapter, and the keyword arguments that say which file."""
    source = spec.source
    if source.startswith("s3://"):
        source = str(sync_s3_object(source, Path(cache_dir) / "loras", endpoint_url))
    path = Path(source).expanduser()
    if path.is_file():
        return str(path.parent), {"weight_name": path.name, "local_files_only": True}
    if path.is_dir():
        kwargs: dict[str, Any] = {"local_files_only": True}
        if spec.weight_name:
            kwargs["weight_name"] = spec.weight_name
        return str(path), kwargs
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"LoRA {spec.name!r}: {source!r} does not exist")
    # A hub repo id.
    return source, {"weight_name": spec.weight_name} if spec.weight_name else {}


class LoraAdapters:
    """The adapters loaded into one pipeline, and which set is active."""

    def __init__(
        self, pipe: Any, specs: dict[str, LoraSpec], cache_dir: str, endpoint_url: str | None
    ) -> None:
        self._pipe = pipe
        self._specs = specs
        self._cache_dir = cache_dir
        self._endpoint_url = endpoint_url
        self.loaded: list[str] = []
        self._active: LoraSet | None = None  # None: unknown, set before the first call

    def activate(self, loras: LoraSet) -> None:
        """Make exactly ``loras`` act on the next call (in the pipeline thread, between calls)."""
        if loras == self._active:
            return
        for name, _ in loras:
            if name not in self.loaded:
                self._load(name)
        if loras:
            self._pipe.enable_lora()  # after a disable_lora(), set_adapters alone leaves them off
            self._pipe.set_adapters([name for name, _ in loras], adapter_weights=[w for _, w in loras])
        elif self.loaded:
            self._pipe.disable_lora()
        self._active = loras

    def _load(self, name: str) -> None:
        spec = self._specs[name]
        location, kwargs = lora_location(spec, self._cache_dir, self._endpoint_url)
        self._pipe.load_lora_weights(location, adapter_name=name, **kwargs)
        self.loaded.append(name)
        logger.info("loaded LoRA %s from %s", name, spec.source)
