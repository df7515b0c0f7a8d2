"""AUTOMATIC1111's sampler and schedule-type names, resolved onto ``serve_app.config.schedulers``.

Since A1111 1.9 a sampler ("DPM++ 2M") and its schedule type ("Karras") are two fields, and
"Automatic" means the sampler's own default (Karras for DPM++ 2M and DPM++ SDE); older clients
still send the combined names ("DPM++ 2M Karras"), which A1111 splits by the suffix. Both are
resolved here the way A1111's ``get_sampler_and_scheduler`` does, onto the schedulers a replica can
build. A name we cannot honour is a 400 naming the field: rendering with another sampler than the
caller asked for would be a silent lie.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve_app.config.families import FAMILIES
from serve_app.core.errors import InvalidRequestError

AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class ScheduleType:
    name: str  # A1111's key ("karras"), what webuiapi sends
    label: str  # A1111's label ("Karras"), what infotexts show
    default_rho: float = -1.0
    need_inner_model: bool = False


SCHEDULE_TYPES = (
    ScheduleType("automatic", AUTOMATIC),
    ScheduleType("uniform", "Uniform", need_inner_model=True),
    ScheduleType("karras", "Karras", default_rho=7.0),
)


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    # Schedule-type label -> our scheduler; "Automatic" is the sampler's default.
    schedules: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)


def _plain(scheduler: str) -> dict[str, str]:
    return {AUTOMATIC: scheduler, "Uniform": scheduler}


def _karras_default(plain: str, karras: str) -> dict[str, str]:
    return {AUTOMATIC: karras, "Karras": karras, "Uniform": plain}


# A1111 1.10's names, aliases and options, limited to what serve_app.config.schedulers can build.
SAMPLERS = (
    Sampler(
        "DPM++ 2M", ("k_dpmpp_2m",), _karras_default("dpmpp_2m", "dpmpp_2m_karras"), {"scheduler": "karras"}
    ),
    Sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        _karras_default("dpmpp_sde", "dpmpp_sde_karras"),
        {"scheduler": "karras", "second_order": True, "brownian_noise": True},
    ),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), _plain("euler_a"), {"uses_ensd": True}),
    Sampler("Euler", ("k_euler",), _plain("euler")),
    Sampler("LMS", ("k_lms",), _plain("lms")),
    Sampler("Heun", ("k_heun",), _plain("heun"), {"second_order": True}),
    Sampler("DDIM", (), _plain("ddim"), {"default_eta_is_0": True, "uses_ensd": True}),
    Sampler("PLMS", (), _plain("pndm")),
    Sampler("UniPC", (), _plain("unipc")),
)

# A1111's API model defaults ``sampler_index`` to "Euler" and uses it when ``sampler_name`` is unset.
DEFAULT_SAMPLER = "Euler"


@dataclass(frozen=True)
class ResolvedSampler:
    sampler: str  # A1111's name, echoed in infotexts
    schedule: str  # the schedule-type label actually used ("Automatic" when left to the sampler)
    scheduler: str  # ours: a key of serve_app.config.schedulers.SCHEDULERS


def _find_sampler(name: str) -> Sampler | None:
    wanted = name.strip().lower()
    for sampler in SAMPLERS:
        if wanted in (sampler.name.lower(), *(alias.lower() for alias in sampler.aliases)):
            return sampler
    return None


def _find_schedule(name: str) -> ScheduleType | None:
    wanted = name.strip().lower()
    for schedule in SCHEDULE_TYPES:
        if wanted in (schedule.name, schedule.label.lower()):
            return schedule
    return None


def resolve_sampler(
    sampler_name: str | None, sampler_index: str | None, scheduler: str | None
) -> ResolvedSampler:
    field_name = "sampler_name" if sampler_name else "sampler_index"
    name = (sampler_name or sampler_index or DEFAULT_SAMPLER).strip()
    schedule = _find_schedule(scheduler) if scheduler else SCHEDULE_TYPES[0]
    if schedule is None:
        labels = ", ".join(s.label for s in SCHEDULE_TYPES)
        raise InvalidRequestError(
            f"Unknown or unsupported scheduler {scheduler!r}; choose one of: {labels}.", param="scheduler"
        )
    sampler = _find_sampler(name)
    if sampler is None:  # a legacy combined name: "DPM++ 2M Karras"
        for candidate in SCHEDULE_TYPES:
            for suffix in (candidate.label, candidate.name):
                if name.lower().endswith(" " + suffix.lower()):
                    sampler = _find_sampler(name[: -len(suffix) - 1])
                    if sampler is not None:
                        schedule = candidate
                        break
            if sampler is not None:
                break
    if sampler is None:
        names = ", ".join(s.name for s in SAMPLERS)
        raise InvalidRequestError(
            f"Unknown or unsupported sampler {name!r}; choose one of: {names} "
            "(schedule types go in 'scheduler').",
            param=field_name,
        )
    if schedule.label not in sampler.schedules:
        allowed = ", ".join(sampler.schedules)
        raise InvalidRequestError(
            f"Sampler {sampler.name!r} cannot run with schedule type {schedule.label!r}; "
            f"choose one of: {allowed}.",
            param="scheduler",
        )
    return ResolvedSampler(sampler.name, schedule.label, sampler.schedules[schedule.label])


# What A1111-style names mean on a flow-matching model (Forge and ComfyUI call FLUX's sampler
# "Euler"): the same sampler and schedule type onto the flow schedulers.
FLOW_SAMPLERS: dict[tuple[str, str], str] = {
    ("Euler", AUTOMATIC): "flow_euler",
    ("Euler", "Uniform"): "flow_euler",
}


def for_family(
    resolved: ResolvedSampler, family: str, model: str, field: str = "sampler_name"
) -> ResolvedSampler:
    """The resolved sampler as model ``model`` of ``family`` runs it, or a 400 naming ``field`` that
    lists the samplers this model has (an SD sampler means nothing to a rectified-flow model)."""
    spec = FAMILIES[family]
    if resolved.scheduler in spec.schedulers:
        return resolved
    if spec.schedulers == ("default",):  # a generic pipeline keeps its own scheduler
        return ResolvedSampler(resolved.sampler, resolved.schedule, "default")
    flow = FLOW_SAMPLERS.get((resolved.sampler, resolved.schedule))
    if flow is not None and flow in spec.schedulers:
        return ResolvedSampler(resolved.sampler, resolved.schedule, flow)
    offered = sorted(
        {f"{name} ({schedule})" for (name, schedule), key in FLOW_SAMPLERS.items() if key in spec.schedulers}
    )
    raise InvalidRequestError(
        f"Model {model!r} ({spec.name}) cannot run sampler {resolved.sampler!r} with schedule type "
        f"{resolved.schedule!r}; it has: {', '.join(offered) or 'its own scheduler only'}.",
        param=field,
    )


def sampler_items() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers``: A1111's SamplerItem for each sampler we can run."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in SAMPLERS]


def scheduler_items() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/schedulers``: A1111's SchedulerItem for each schedule type we can run."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULE_TYPES
    ]
