"""LoRA adapters on a loaded model: loaded once per replica, switched per batch group.

diffusers (through PEFT) keeps every adapter loaded into a pipeline beside the base weights;
``set_adapters`` chooses which ones act, and with what weight, for the next call. So a group of jobs
asking for ``ink:0.8`` and the next group asking for none cost a weight switch, never a reload of the
base checkpoint. The img2img and inpainting pipelines share the UNet and text encoder with the
text-to-image one (``from_pipe``), so the adapters set here act on them too.
"""

from __future__ import annotations

import logging
import math
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


# The one adapter name a hot-swapping pipeline holds: every LoRA's weights are copied into it.
HOTSWAP_SLOT = "hotswap"


class LoraAdapters:
    """The adapters loaded into one pipeline, and which set is active.

    With ``hotswap_rank`` (a compiled model), there is one adapter slot instead: diffusers' LoRA
    hot-swap copies each LoRA's weights into it in place (``enable_lora_hotswap`` pads every
    adapter to that rank and keeps the scales as tensors), so the compiled graph sees the same
    modules and shapes whichever LoRA acts; switching PEFT adapters would change the module
    structure the graph was traced with (a recompile, or an eager call). One LoRA per call then.
    """

    def __init__(
        self,
        pipe: Any,
        specs: dict[str, LoraSpec],
        cache_dir: str,
        endpoint_url: str | None,
        hotswap_rank: int = 0,
    ) -> None:
        self._pipe = pipe
        self._specs = specs
        self._cache_dir = cache_dir
        self._endpoint_url = endpoint_url
        self.loaded: list[str] = []
        self._active: LoraSet | None = None  # None: unknown, set before the first call
        self.hotswap_rank = hotswap_rank if specs else 0
        self._slot: str | None = None  # the LoRA whose weights the hot-swap slot holds

    def prepare_hotswap(self) -> None:
        """Before the model is compiled: the slot, holding the first LoRA at weight 0 (no effect)."""
        if not self.hotswap_rank:
            return
        self._pipe.enable_lora_hotswap(target_rank=self.hotswap_rank)
        self._fill_slot(next(iter(self._specs)), hotswap=False)
        self._set_slot_weight(0.0)
        self._active = ()

    def _fill_slot(self, name: str, hotswap: bool) -> None:
        location, kwargs = lora_location(self._specs[name], self._cache_dir, self._endpoint_url)
        self._pipe.load_lora_weights(location, adapter_name=HOTSWAP_SLOT, hotswap=hotswap, **kwargs)
        if not hotswap:  # a swap reuses the slot, which exists whatever the file held
            self._check_fits(name, HOTSWAP_SLOT)
        self._slot = name
        if name not in self.loaded:
            self.loaded.append(name)
        logger.info("LoRA %s in the hot-swap slot", name)

    def activate(self, loras: LoraSet) -> None:
        """Make exactly ``loras`` act on the next call (in the pipeline thread, between calls)."""
        if loras == self._active:
            return
        if self.hotswap_rank:
            self._activate_hotswapped(loras)
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

    def _activate_hotswapped(self, loras: LoraSet) -> None:
        if len(loras) > 1:
            raise ValueError(
                f"this compiled replica hot-swaps LoRAs (speed.lora_hotswap_rank): one LoRA per image, "
                f"not {len(loras)}"
            )
        if loras:
            name, weight = loras[0]
            if name != self._slot:
                self._fill_slot(name, hotswap=True)
            self._set_slot_weight(weight)
        else:
            # Weight 0 rather than disable_lora(): the same modules, so the same compiled graph.
            self._set_slot_weight(0.0)
        self._active = loras

    def _set_slot_weight(self, weight: float) -> None:
        """The slot's weight, written into tensors in place: a new graph for no weight.

        ``set_adapters`` stores each layer's scale as a Python float, and dynamo specialises on a
        float attribute: every new weight would compile (or run eagerly) again. A 0-dim tensor is a
        graph input instead, so its value changes freely. PEFT's scale is weight x alpha / r
        (alpha / sqrt(r) with rsLoRA).
        """
        import torch

        for layer in self._slot_layers():
            rank = layer.r[HOTSWAP_SLOT]
            base = layer.lora_alpha[HOTSWAP_SLOT] / (
                math.sqrt(rank) if layer.use_rslora.get(HOTSWAP_SLOT, False) else rank
            )
            current = layer.scaling[HOTSWAP_SLOT]
            if isinstance(current, torch.Tensor):
                current.fill_(weight * base)
            else:
                device = next(layer.parameters()).device
                layer.scaling[HOTSWAP_SLOT] = torch.tensor(weight * base, dtype=torch.float32, device=device)

    def _slot_layers(self) -> list[Any]:
        """PEFT's LoRA layers holding the slot, in every component a LoRA can touch."""
        layers = []
        for attribute in ("unet", "transformer", "text_encoder", "text_encoder_2"):
            component = getattr(self._pipe, attribute, None)
            component = getattr(component, "_orig_mod", component)  # a compiled model's own module
            if component is None or not hasattr(component, "modules"):
                continue
            for module in component.modules():
                scaling = getattr(module, "scaling", None)
                if isinstance(scaling, dict) and HOTSWAP_SLOT in scaling:
                    layers.append(module)
        return layers

    def _load(self, name: str) -> None:
        spec = self._specs[name]
        location, kwargs = lora_location(spec, self._cache_dir, self._endpoint_url)
        self._pipe.load_lora_weights(location, adapter_name=name, **kwargs)
        self._check_fits(name, name)
        self.loaded.append(name)
        logger.info("loaded LoRA %s from %s", name, spec.source)

    def _check_fits(self, name: str, adapter: str) -> None:
        """A LoRA made for another architecture (an SD 1.5 file listed under an SD 3.5 entry) has
        no key diffusers' loader of this pipeline reads: it only logs a warning and registers
        nothing, and ``set_adapters`` later fails with "not in the list of present adapters".
        Say what happened instead (the catalogue can only check the family it is listed under)."""
        present = getattr(self._pipe, "get_list_adapters", None)
        if present is None or any(adapter in names for names in present().values()):
            return
        raise ValueError(
            f"LoRA {name!r} ({self._specs[name].source}) holds no weights {type(self._pipe).__name__} "
            f"can load: it was made for another architecture than this model's"
        )
