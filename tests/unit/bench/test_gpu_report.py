"""The GPU report runs on a CPU with the tiny model, and a stage past its deadline costs only itself.

A borrowed GPU machine gives minutes and no second chance, so CI runs the report's CPU mode (the
stages that need no Ray here: the served and compiled stages start a Ray of their own and are run by
``make gpu-wheels-check``) and checks that a killed stage leaves the JSON whole and the next stage runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.gpu_report.report import main


def _report(folder: Path) -> dict:
    (path,) = folder.glob("*-gpu-report-*.json")
    return json.loads(path.read_text())


def test_cpu_report_splits_the_render_and_prices_it(tmp_path: Path) -> None:
    code = main(
        ["--out", str(tmp_path), "--stages", "env,raw,cost", "--steps", "2", "--price", "some-gpu=3.6",
         "--model-dir", str(tmp_path / "model")]
    )
    assert code == 0
    report = _report(tmp_path)
    assert report["cuda"] is False and "not GPU figures" in report["note"]
    raw = report["stages"]["raw"]
    assert "error" not in raw, raw.get("traceback")
    assert [row["batch"] for row in raw["batches"]] == [1, 2]
    for row in raw["batches"]:
        assert set(row["split_s"]) == {"text_encoder", "denoise", "vae_decode", "safety", "encode"}
        assert row["images_per_s"] > 0
    assert raw["post"]["safety_on_device_s"] > 0 and raw["post"]["png_level1_pool4_s"] > 0
    # The served stages load these files.
    assert (Path(raw["model_dir"]) / "model_index.json").exists()
    (price,) = report["stages"]["cost"]["prices"]
    assert price["raw_images_per_dollar"] == round(raw["best_images_per_s"] * 3600 / 3.6)


def test_a_stage_past_its_deadline_is_killed_and_the_report_goes_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bench.gpu_report import report as module

    monkeypatch.setitem(module.CPU_DEADLINES, "raw", 2)
    code = main(["--out", str(tmp_path), "--stages", "raw,cost", "--model-dir", str(tmp_path / "model")])
    assert code == 0
    report = _report(tmp_path)
    assert report["stages"]["raw"]["error"] == "killed at the deadline"
    assert report["stages"]["raw"]["stage_s"] < 30
    assert "prices" in report["stages"]["cost"]  # the next stage ran


def test_readme_names_the_gpu_from_a_cuda_report_and_says_unmeasured_without_one(tmp_path: Path) -> None:
    from bench.gpu_report.readme import render

    assert "unmeasured" in render(tmp_path)
    # A CPU report is not a GPU figure: still unmeasured.
    cpu = {"cuda": False, "stages": {}}
    (tmp_path / "2026-01-01-gpu-report-x86-64-cpu.json").write_text(json.dumps(cpu))
    assert "unmeasured" in render(tmp_path)
    loop = {"concurrency": 16, "images_per_s": 9.5, "p50_s": 1.6, "p95_s": 1.9, "p99_s": 2.0}
    loop["gpu_busy_pct"] = 96.0
    served = {"ready_s": 30.0, "raw_batch": 8, "served_over_raw": 0.97, "loops": [loop]}
    report = {"cuda": True, "device": "Some GPU", "date": "2026-01-02T00:00:00+00:00",
              "stages": {"served": served, "raw": {"error": "killed at the deadline"}}}
    (tmp_path / "2026-01-02-gpu-report-some-gpu.json").write_text(json.dumps(report))
    text = render(tmp_path)
    assert "**Some GPU**" in text and "**0.97**" in text and "| 16 | 9.5 |" in text
    assert "raw pipeline: failed: killed at the deadline" in text
