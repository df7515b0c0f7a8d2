"""One checkpoint loaded on a model replica: its pipelines, schedulers, speed recipes and LoRAs.

A replica holds up to ``max_num_models_per_replica`` of these (Ray Serve's multiplexing keeps them
in an LRU cache: serve_app/engine/deployment.py). Serve unloads the least recently used one by calling
its ``__del__`` before loading another; that must never pull weights out from under a pipeline call
still running on them, so ``__del__`` waits until the model is idle and only then drops every
reference to its weights (and, on CUDA, hands the freed memory back for the next model).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from serve_app.config.settings import AppSettings
from serve_app.engine.model.loading import RuntimePlan, SchedulerCache, load_pipeline, plan_runtime
from serve_app.engine.model.loras import LoraAdapters
from serve_app.engine.model.task_pipelines import TaskPipelines
from serve_app.engine.previews import PreviewDecoder
from serve_app.engine.speed_recipes import apply_recipes

logger = logging.getLogger("ray.serve")


class AdapterLoadError(RuntimeError):
    """A LoRA failed to load: the request fails, the replica stays healthy."""


class LoadedModel:
    def __init__(
        self,
        name: str,
        settings: AppSettings,
        bucket_count: int,
        on_release: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        """Load ``name`` (blocking: call it in the replica's pipeline thread).

        ``settings`` is the app's settings as this entry sees them (``AppSettings.for_model``).
        """
        started = time.perf_counter()
        self.name = name
        self.settings = settings
        self.plan: RuntimePlan = plan_runtime(settings)
        self.pipe: Any = load_pipeline(settings, self.plan)
        catalogue = settings.catalogue
        self.adapters = LoraAdapters(
            self.pipe,
            {lora: catalogue.loras[lora].spec for lora in catalogue.loras_for(name)},
            settings.model_cache_dir,
            settings.s3_endpoint_url,
            hotswap_rank=settings.speed.lora_hotswap_rank if self.plan.compile else 0,
        )
        # The hot-swap slot must exist before compile traces the UNet (diffusers' hot-swap order).
        self.adapters.prepare_hotswap()
        self.recipes = apply_recipes(self.pipe, self.plan, settings.speed, bucket_count)
        self.previews = PreviewDecoder.for_model(settings, self.pipe, self.plan.device, self.plan.dtype)
        self.schedulers = SchedulerCache(self.pipe)
        # img2img, inpainting and upscale run on pipelines sharing these weights (from_pipe).
        self.tasks = TaskPipelines.load(self.pipe, settings, self.plan)
        self.load_s = time.perf_counter() - started
        self.loaded_at = time.time()
        self.warmed: set[tuple[int, int, int]] = set()
        self.warmup_s = 0.0
        self._fp32_vae: Any = None
        self._on_release = on_release
        self._in_use = 0
        self._idle = threading.Condition()
        self._released = False
        logger.info("model %s ready in %.1fs: %s", name, self.load_s, self.plan)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[LoadedModel]:
        """Held for the length of a pipeline call: eviction waits for it."""
        with self._idle:
            if self._released:
                raise RuntimeError(f"model {self.name!r} was unloaded")
            self._in_use += 1
        try:
            yield self
        finally:
            with self._idle:
                self._in_use -= 1
                self._idle.notify_all()

    def __del__(self) -> None:
        """Serve's multiplexing calls this (in a worker thread) when it evicts the model."""
        idle = getattr(self, "_idle", None)
        if idle is None or self._released:  # a failed load, or already released
            return
        with idle:
            idle.wait_for(lambda: self._in_use == 0)
            self._released = True
        self.pipe = self.tasks = self.schedulers = self.adapters = self.previews = self._fp32_vae = None
        if self._on_release is not None:
            self._on_release(self)
        gc.collect()
        if self.plan.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        logger.info("model %s unloaded", self.name)

    @property
    def safety_checker(self) -> Any | None:
        """The checker the finish stage runs on the device (None: the model ships none, or it is off)."""
        return getattr(self.pipe, "safety_checker", None)

    @property
    def feature_extractor(self) -> Any | None:
        """Only its crop size, mean and std are used: the preprocessing runs on the device."""
        return getattr(self.pipe, "feature_extractor", None)

    def finish_vae(self) -> Any:
        """The VAE the finish stage decodes with.

        An fp16 VAE marked ``force_upcast`` (SDXL's own overflows in fp16) decodes through an fp32
        copy kept beside it, instead of diffusers' upcasting the shared VAE in place on every call,
        which a denoise running at the same time (img2img's VAE encode) must never see. bf16 needs
        neither (serve_app/engine/model/loading.py drops the upcast for it).
        """
        import torch

        vae = self.pipe.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            if self._fp32_vae is None:
                self._fp32_vae = copy.deepcopy(vae).to(torch.float32)
                # A compiled `decode` is an instance attribute bound to the fp16 original; the copy
                # must decode with its own fp32 weights (eagerly: no warm-up traced it).
                self._fp32_vae.__dict__.pop("decode", None)
            return self._fp32_vae
        return vae

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "source": self.settings.model,
            **self.plan.as_dict(),
            "load_seconds": round(self.load_s, 3),
            "recipes": self.recipes,
            "previews": self.previews.describe() if self.previews else None,
            "loras_loaded": list(self.adapters.loaded) if self.adapters else [],
            "lora_hotswap_rank": self.adapters.hotswap_rank if self.adapters else 0,
            "safety_checker": getattr(self.pipe, "safety_checker", None) is not None,
            **(self.tasks.describe() if self.tasks else {}),
        }
