"""AUTOMATIC1111's request and response bodies, field for field, with A1111's defaults.

A1111 builds its API models from its processing classes (``modules/api/models.py`` over
``StableDiffusionProcessingTxt2Img`` / ``...Img2Img``), and real clients send the whole model back,
every field present. So every A1111 field is declared here with A1111's default: the ones we use are
typed and bounded (a bad value is a 400 naming the field), the ones we do not use are ``Any`` and
never rejected, and fields A1111 itself does not know are ignored. ``parameters`` in an answer is
``model_dump()`` of these: the request as A1111 echoes it, defaults filled in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.core.images import MAX_SEED

PROMPT_LIMIT = 100_000


class ProcessingRequest(BaseModel):
    """Fields shared by txt2img and img2img (A1111's ``StableDiffusionProcessing``)."""

    model_config = ConfigDict(extra="ignore")

    # --- used ------------------------------------------------------------------------------------
    prompt: str | None = Field(default="", max_length=PROMPT_LIMIT)
    negative_prompt: str | None = Field(default="", max_length=PROMPT_LIMIT)
    seed: int | None = Field(default=-1, ge=-1, le=MAX_SEED)
    subseed: int | None = Field(default=-1, ge=-1, le=MAX_SEED)
    sampler_name: str | None = Field(default=None, max_length=100)
    sampler_index: str | None = Field(default="Euler", max_length=100)
    scheduler: str | None = Field(default=None, max_length=100)
    batch_size: int | None = Field(default=1, ge=1, le=64)
    n_iter: int | None = Field(default=1, ge=1, le=64)
    steps: int | None = Field(default=50, ge=1, le=1000)
    cfg_scale: float | None = Field(default=7.0, ge=0.0, le=50.0)
    width: int | None = Field(default=512, ge=8, le=16384)
    height: int | None = Field(default=512, ge=8, le=16384)
    override_settings: dict[str, Any] | None = None
    force_task_id: str | None = Field(default=None, max_length=200)
    send_images: bool | None = True

    # --- accepted and ignored (A1111's defaults, echoed in ``parameters``) -----------------------
    styles: Any = None
    subseed_strength: Any = 0
    seed_resize_from_h: Any = -1
    seed_resize_from_w: Any = -1
    restore_faces: Any = None
    tiling: Any = None
    do_not_save_samples: Any = False
    do_not_save_grid: Any = False
    eta: Any = None
    s_min_uncond: Any = None
    s_churn: Any = None
    s_tmax: Any = None
    s_tmin: Any = None
    s_noise: Any = None
    override_settings_restore_afterwards: Any = True
    refiner_checkpoint: Any = None
    refiner_switch_at: Any = None
    disable_extra_networks: Any = False
    firstpass_image: Any = None
    comments: Any = None
    script_name: Any = None
    script_args: Any = Field(default_factory=list)
    save_images: Any = False
    alwayson_scripts: Any = Field(default_factory=dict)
    infotext: Any = None


class Txt2ImgRequest(ProcessingRequest):
    denoising_strength: float | None = Field(default=0.75, ge=0.0, le=1.0)
    # Hires fix, not run here: upscale a result with /sdapi/v1/extra-single-image instead.
    enable_hr: Any = False
    firstphase_width: Any = 0
    firstphase_height: Any = 0
    hr_scale: Any = 2.0
    hr_upscaler: Any = None
    hr_second_pass_steps: Any = 0
    hr_resize_x: Any = 0
    hr_resize_y: Any = 0
    hr_checkpoint_name: Any = None
    hr_sampler_name: Any = None
    hr_scheduler: Any = None
    hr_prompt: Any = ""
    hr_negative_prompt: Any = ""


class Img2ImgRequest(ProcessingRequest):
    init_images: list[str] | None = Field(default=None, max_length=64)
    resize_mode: Literal[0, 1, 2, 3] | None = 0
    denoising_strength: float | None = Field(default=0.75, ge=0.0, le=1.0)
    mask: str | None = None
    mask_blur_x: int | None = Field(default=4, ge=0, le=64)
    mask_blur_y: int | None = Field(default=4, ge=0, le=64)
    mask_blur: int | None = Field(default=None, ge=0, le=64)
    inpainting_fill: Literal[0, 1, 2, 3] | None = 0
    inpainting_mask_invert: Literal[0, 1] | None = 0
    include_init_images: bool | None = False
    # Accepted and ignored.
    image_cfg_scale: Any = None
    mask_round: Any = True
    inpaint_full_res: Any = True
    inpaint_full_res_padding: Any = 0
    initial_noise_multiplier: Any = None
    latent_mask: Any = None


class ImagesResponse(BaseModel):
    """A1111's ``TextToImageResponse`` / ``ImageToImageResponse``: ``info`` is a JSON *string*."""

    images: list[str] | None = None
    parameters: dict[str, Any]
    info: str


class ExtrasSingleImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str = ""
    resize_mode: Literal[0, 1] = 0
    upscaling_resize: float = Field(default=2, gt=0, le=64)
    upscaling_resize_w: int = Field(default=512, ge=1, le=16384)
    upscaling_resize_h: int = Field(default=512, ge=1, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    # Accepted and ignored: face restoration and a second upscaler blended in.
    show_extras_results: Any = True
    gfpgan_visibility: Any = 0
    codeformer_visibility: Any = 0
    codeformer_weight: Any = 0
    upscaler_2: Any = "None"
    extras_upscaler_2_visibility: Any = 0
    upscale_first: Any = False


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None
    # Ours, beside A1111's fields: images ahead of this task's and the seconds until it is done,
    # while none of its images renders yet (None otherwise).
    queue_position: int | None = None
    expected_wait_s: float | None = None
