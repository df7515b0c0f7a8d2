"""Sampler (scheduler) names users type, mapped to diffusers scheduler classes.

Which of them a model can take is its family's business (serve_app/config/families.py): the SD
samplers for UNets trained on DDPM noise, the flow-matching ones for rectified-flow transformers
(FLUX, SD 3.5), and ``default`` (the pipeline's own scheduler, as its checkpoint configures it)
for pipelines nothing is known about before they load.

Users arrive with AUTOMATIC1111's names ("Euler a", "DPM++ 2M Karras") or diffusers-style ones
("euler_a", "dpmpp_2m"); both resolve to one canonical name so a batch can group requests that
need the same scheduler, and so errors can list what is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    config_overrides: dict[str, Any] = field(default_factory=dict)


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler"),
    # Stable Diffusion runs PNDM as PLMS (skip_prk_steps); the PRK warm-up fails below 3 steps.
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler"),
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpmpp_sde": SchedulerSpec("DPMSolverSinglestepScheduler"),
    "dpmpp_sde_karras": SchedulerSpec("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "heun": SchedulerSpec("HeunDiscreteScheduler"),
    "lms": SchedulerSpec("LMSDiscreteScheduler"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler"),
    # Rectified flow (FLUX.1, FLUX.2, SD 3.5): Euler on the flow's ODE, with the checkpoint's own
    # shift and dynamic (resolution-dependent) shifting taken from its scheduler config.
    "flow_euler": SchedulerSpec("FlowMatchEulerDiscreteScheduler"),
    # The checkpoint's own scheduler, untouched (the generic family: a pipeline whose scheduler
    # kind is known only once it loads).
    "default": SchedulerSpec(""),
}

_ALIASES = {
    "euler_ancestral": "euler_a",
    "dpm_2m": "dpmpp_2m",
    "dpmsolver": "dpmpp_2m",
    "dpmsolvermultistep": "dpmpp_2m",
    "k_euler": "euler",
    "k_euler_a": "euler_a",
    "k_lms": "lms",
    "flowmatch_euler": "flow_euler",
    "flow_match_euler": "flow_euler",
    "flowmatcheulerdiscrete": "flow_euler",
}


class UnknownSchedulerError(ValueError):
    """Raised for a scheduler name that maps to nothing we can build."""


def canonical_scheduler_name(name: str) -> str:
    """Normalise 'DPM++ 2M Karras' / 'dpmpp-2m-karras' / 'Euler a' to one key of SCHEDULERS."""
    key = name.strip().lower().replace("++", "pp")
    key = re.sub(r"[^a-z0-9]+", "_", key).strip("_")
    key = _ALIASES.get(key, key)
    if key not in SCHEDULERS:
        raise UnknownSchedulerError(
            f"unknown scheduler {name!r}; choose one of: {', '.join(sorted(SCHEDULERS))}"
        )
    return key
