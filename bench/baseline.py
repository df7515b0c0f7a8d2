"""The peer most users start from: Ray Serve's own Stable Diffusion example, on our tiny model.

Kept faithful to that example's pattern: a FastAPI ingress calling a model deployment through a
handle, one image per call, a synchronous ``generate`` (so Serve runs up to
``max_ongoing_requests`` = 5 pipeline calls at once in threads), no batching, PNG encoded in the
ingress. Only the model (our tiny one, on CPU), the step count (same as ours) and the torch thread
count (same as ours, set in the calling thread) differ, so the comparison is like for like.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

app = FastAPI()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class APIIngress:
    def __init__(self, diffusion_model_handle: DeploymentHandle) -> None:
        self.handle = diffusion_model_handle

    @app.get("/imagine", responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    async def generate(self, prompt: str, img_size: int = 64) -> Response:
        assert len(prompt), "prompt parameter cannot be empty"
        image = await self.handle.generate.remote(prompt, img_size=img_size)
        file_stream = BytesIO()
        image.save(file_stream, "PNG")
        return Response(content=file_stream.getvalue(), media_type="image/png")


@serve.deployment(num_replicas=1)
class StableDiffusionExample:
    def __init__(self, model_dir: str, steps: int, threads: int) -> None:
        import torch
        from diffusers import StableDiffusionPipeline

        torch.set_num_threads(threads)
        self.pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps = steps
        self.threads = threads

    def generate(self, prompt: str, img_size: int = 64) -> Any:
        import torch

        assert len(prompt), "prompt parameter cannot be empty"
        # Like for like: Serve runs this sync method in a pool thread, where OpenMP starts with
        # Ray's OMP_NUM_THREADS; raydiffusion sets the count in its render thread the same way.
        torch.set_num_threads(self.threads)
        return self.pipe(prompt, height=img_size, width=img_size, num_inference_steps=self.steps).images[0]


def baseline_app(model_dir: str, steps: int, threads: int) -> Any:
    model = StableDiffusionExample.options(ray_actor_options={"num_cpus": threads}).bind(
        model_dir, steps, threads
    )
    return APIIngress.bind(model)
