"""``python -m bench.gpu_report.readme``: the README's GPU figures, written from the GPU report's JSON only.

The newest ``bench/results/*-gpu-report-*.json`` that ran on CUDA becomes the section between
``<!-- gpu-report:start -->`` and ``<!-- gpu-report:end -->``, with the GPU named. Without one, the
section says "unmeasured" and why, from ``bench/results/gpu-report-attempts.json`` (each attempt to get
a GPU: when, and what came back). No figure here is ever typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
ATTEMPTS = RESULTS / "gpu-report-attempts.json"
START, END = "<!-- gpu-report:start -->", "<!-- gpu-report:end -->"


def newest_gpu_report(folder: Path = RESULTS) -> tuple[Path, dict[str, Any]] | None:
    for path in sorted(folder.glob("*-gpu-report-*.json"), reverse=True):
        report = json.loads(path.read_text())
        if report.get("cuda"):
            return path, report
    return None


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f} GiB" if value else "n/a"


def _stage_error(stage: dict[str, Any]) -> str | None:
    if "skipped" in stage:
        return f"skipped ({stage['skipped']})"
    if "error" in stage:
        return f"failed: {str(stage['error'])[:160]}"
    return None


def section(path: Path, report: dict[str, Any]) -> str:
    stages = report["stages"]
    lines = [
        f"Measured by `make gpu-report` on **{report['device']}** on {report['date'][:10]}: "
        "SD 1.5 architecture "
        "with random weights (the cost of trained ones), 512x512, DPM++ 2M, fp16. "
        f"Full figures: `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`.",
        "",
    ]
    raw = stages.get("raw", {})
    if _stage_error(raw) or not raw.get("batches"):
        lines.append(f"- raw pipeline: {_stage_error(raw) or 'no figures'}")
    else:
        lines += [
            f"Raw diffusers pipeline ({raw['steps']} steps) and its split, seconds per call:",
            "",
            "| batch | images/s | text encoder | denoise | VAE decode | safety | PNG | peak memory |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in raw["batches"]:
            split = row["split_s"]
            lines.append(
                f"| {row['batch']} | {row['images_per_s']} | {split['text_encoder']} | {split['denoise']} | "
                f"{split['vae_decode']} | {split['safety']} | {split['encode']} | "
                f"{_gib(row['peak_gpu_bytes'])} |"
            )
        post = raw.get("post") or {}
        if post:
            lines += [
                "",
                f"PNG for a batch of {post['batch']}: level 6 serial {post['png_level6_serial_s']} s, "
                f"level 1 serial {post['png_level1_serial_s']} s, "
                f"level 1 in a pool of 4 {post['png_level1_pool4_s']} s. "
                f"Safety checker: diffusers' CPU preprocessing {post['safety_diffusers_s']} s, on the device "
                f"{post['safety_on_device_s']} s.",
            ]
    served = stages.get("served", {})
    lines.append("")
    if _stage_error(served) or not served.get("loops"):
        lines.append(f"- served: {_stage_error(served) or 'no figures'}")
    else:
        lines += [
            f"Served (the real deployment with `deployments/aws.yaml`'s model options, ready in "
            f"{served.get('ready_s')} s), closed loop:",
            "",
            "| callers | images/s | p50 s | p95 s | p99 s | GPU busy % |",
            "|---|---|---|---|---|---|",
        ]
        for row in served["loops"]:
            if "skipped" in row:
                lines.append(f"| {row['concurrency']} | skipped: {row['skipped']} | | | | |")
                continue
            lines.append(
                f"| {row['concurrency']} | {row['images_per_s']} | {row['p50_s']} | {row['p95_s']} | "
                f"{row['p99_s']} | {row.get('gpu_busy_pct')} |"
            )
        lines += [
            "",
            f"Served / raw at batch {served.get('raw_batch')}: **{served.get('served_over_raw')}**; "
            "replica peak "
            f"memory {_gib(served.get('replica_peak_gpu_bytes'))}; a full batch's stages in the replica "
            f"(s): {served.get('full_batch_stage_split_s')}.",
        ]
    compiled = stages.get("compiled", {})
    lines.append("")
    if _stage_error(compiled) and "ready_s" not in compiled:
        lines.append(f"- compiled replica: {_stage_error(compiled)}")
    else:
        lines.append(
            f"- compiled replica: ready in {compiled.get('ready_s')} s "
            f"(warm-up {compiled.get('warmup_s')} s); "
            f"after a mixed burst {compiled.get('graphs_compiled_since_ready')} graphs compiled since ready, "
            f"{compiled.get('eager_fallbacks')} eager fallbacks"
        )
    sdxl = stages.get("sdxl", {})
    if _stage_error(sdxl) or "fp16_s" not in sdxl:
        lines.append(f"- SDXL 1024x1024: {_stage_error(sdxl) or 'not measured'}")
    else:
        lines.append(
            f"- SDXL 1024x1024, {sdxl['steps']} steps, batch 1: fp16 (VAE upcast) {sdxl['fp16_s']} s, "
            f"bf16 {sdxl.get('bf16_s')} s"
        )
    for price in stages.get("cost", {}).get("prices", []):
        lines.append(
            f"- at ${price['dollars_per_hour']}/h ({price['name']}): {price['served_images_per_dollar']} "
            f"images per dollar served, {price['raw_images_per_dollar']} raw"
        )
    return "\n".join(lines)


def unmeasured(attempts: list[dict[str, Any]]) -> str:
    lines = ["**GPU figures: unmeasured.** No GPU report has run on a GPU yet."]
    for attempt in attempts:
        lines.append(f"- {attempt['date']}: {attempt['outcome']}")
    lines.append(
        "\nWhen a GPU is at hand: `make gpu-wheels` here; on the GPU machine, from the repository root, "
        "`python3 -m pip install --no-index --no-deps --target /tmp/site .gpu-wheels/*.whl` and "
        "`PYTHONPATH=/tmp/site python3 -m bench.gpu_report.report --out bench/results` (add "
        "`--price NAME=DOLLARS_PER_HOUR` for images per dollar); commit the JSON and run "
        "`python -m bench.gpu_report.readme`, which rewrites this section from it."
    )
    return "\n".join(lines)


def render(folder: Path = RESULTS) -> str:
    found = newest_gpu_report(folder)
    if found is not None:
        return section(*found)
    attempts = json.loads(ATTEMPTS.read_text()) if ATTEMPTS.exists() else []
    return unmeasured(attempts)


def update(readme: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace what stands between the ``start`` and ``end`` markers of ``readme`` with ``text``."""
    content = readme.read_text()
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args(argv)
    update(Path(args.readme), render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
