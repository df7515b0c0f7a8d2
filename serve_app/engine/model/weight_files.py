"""Which files of a diffusers folder a load needs, judged from their names alone.

A model folder on S3 often holds the same weights several times (fp32 and fp16 ``.safetensors``,
``.bin`` copies, a single-file ``.ckpt``), gigabytes each; a GPU node that scales from zero should
fetch only what ``from_pretrained`` will read for the configured ``variant``: every config and
tokenizer file, and per component one set of weights, preferring the variant and safetensors
(the order diffusers itself prefers). The naming rules are diffusers' own:
``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors`` (and the
legacy ``model-00001-of-00002.fp16.safetensors``), index files ``*.safetensors.index.fp16.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

LOADABLE_FORMATS = ("safetensors", "bin")
# Weight formats from_pretrained never reads from a diffusers folder: single-file checkpoints,
# Flax, ONNX, TensorFlow, GGUF.
UNUSED_WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".onnx_data", ".pb", ".h5", ".gguf")

_SHARD = re.compile(r"-\d{5}-of-\d{5}")
_WEIGHTS = re.compile(r"^(?P<stem>[^.]+)(?:\.(?P<rest>[^.]+))?\.(?P<format>safetensors|bin)$")
_INDEX = re.compile(
    r"^[^.]+\.(?P<format>safetensors|bin)(?:\.index\.(?P<variant>[^.]+)\.json|\.(?P<legacy>[^.]+)\.index\.json"
    r"|\.index\.json)$"
)


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative, POSIX
    format: str
    variant: str | None

    @property
    def folder(self) -> str:
        return str(PurePosixPath(self.path).parent)


def is_unused_format(path: str) -> bool:
    return PurePosixPath(path).name.lower().endswith(UNUSED_WEIGHT_SUFFIXES)


def classify(path: str) -> WeightFile | None:
    """A WeightFile for weights and their shard indexes in a loadable format; None for anything else."""
    name = PurePosixPath(path).name
    if match := _INDEX.match(name):
        return WeightFile(path, match["format"], match["variant"] or match["legacy"])
    if match := _WEIGHTS.match(name):
        return WeightFile(path, match["format"], _SHARD.sub("", match["rest"] or "") or None)
    return None


@dataclass(frozen=True)
class Selection:
    files: list[str]  # what to fetch, relative paths
    variant: str | None  # the variant to pass to from_pretrained (None if the folder lacks it)
    skipped: list[str]  # weights not needed: other variants, other formats, unused formats


def select_files(paths: Iterable[str], variant: str | None) -> Selection:
    others: list[str] = []
    skipped: list[str] = []
    by_folder: dict[str, list[WeightFile]] = {}
    for path in paths:
        weight = classify(path)
        if is_unused_format(path):
            skipped.append(path)
        elif weight is not None:
            by_folder.setdefault(weight.folder, []).append(weight)
        else:
            others.append(path)
    has_variant = variant is not None and any(
        weight.variant == variant for weights in by_folder.values() for weight in weights
    )
    effective = variant if has_variant else None
    chosen: list[str] = []
    for weights in by_folder.values():
        preferences = [(effective, fmt) for fmt in LOADABLE_FORMATS]
        if effective is not None:  # a component without the variant falls back to its defaults
            preferences += [(None, fmt) for fmt in LOADABLE_FORMATS]
        for wanted_variant, wanted_format in preferences:
            picked = [w.path for w in weights if w.variant == wanted_variant and w.format == wanted_format]
            if picked:
                chosen.extend(picked)
                break
        skipped.extend(w.path for w in weights if w.path not in chosen)
    return Selection(sorted(others + chosen), effective, sorted(skipped))


def usable_variant(folder: str | Path, variant: str | None) -> str | None:
    """``variant`` if the local folder has weights of it, else None (load the default weights)."""
    if variant is None:
        return None
    root = Path(folder)
    names = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return select_files(names, variant).variant
