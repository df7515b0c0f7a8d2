"""``python -m bench.gpu_report.wheels`` (``make gpu-wheels``): the wheels the GPU report needs, small enough.

The GPU machine has Python 3.12, CUDA torch, transformers, accelerate and peft, but no Ray, diffusers,
FastAPI or pydantic, and no network: whatever the report imports beyond its own packages travels as
wheels inside a working tree of at most 64 MiB. Ray's wheel alone is about 79 MB, most of it the Java
jars (``ray/jars``, 32 MB) and the dashboard's browser client (``ray/dashboard/client``), which a
Serve deployment driven from Python never loads; RLlib, Tune and Train are left out too (Serve never
imports them). The stripped wheel keeps a RECORD that lists only what it holds, so pip installs it
like the original.

Writes ``.gpu-wheels/`` (gitignored) and ``.gpu-wheels/SIZES.json``; fails when the folder is over
``--budget-mib``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".gpu-wheels"
REQUIREMENTS = Path(__file__).resolve().parent / "wheels.txt"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# Never imported by a Serve application driven from Python: Java workers, the dashboard's web client,
# and the RL / tuning / training libraries.
RAY_STRIP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/tune/", "ray/train/", "ray/llm/")


def requirements(path: Path = REQUIREMENTS) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def download_command(names: list[str], folder: Path, python: str = sys.executable) -> list[str]:
    command = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command + names


def strip_wheel(path: Path, prefixes: tuple[str, ...] = RAY_STRIP) -> tuple[int, int]:
    """Rewrite ``path`` without the members under ``prefixes``; return (bytes before, bytes after)."""
    before = path.stat().st_size
    kept = path.with_suffix(".tmp")
    with (
        zipfile.ZipFile(path) as source,
        zipfile.ZipFile(kept, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target,
    ):
        for info in source.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = source.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if not line.startswith(prefixes)) + "\n").encode()
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    kept.replace(path)
    return before, path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(WHEELS))
    parser.add_argument(
        "--budget-mib", type=float, default=52.0, help="the folder's limit (the tree's is 64)"
    )
    args = parser.parse_args(argv)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    names = requirements()
    wanted = {name.split("==")[0].lower().replace("-", "_") for name in names}
    for stale in folder.glob("*.whl"):  # one version of each: two stop the whole install
        if stale.name.split("-")[0].lower() not in wanted:
            stale.unlink()
    subprocess.run(download_command(names, folder), check=True)
    sizes: dict[str, int] = {}
    for wheel in sorted(folder.glob("*.whl")):
        if wheel.name.startswith("ray-"):
            with zipfile.ZipFile(wheel) as probe:
                stripped = not any(n.startswith(RAY_STRIP) for n in probe.namelist())
            if not stripped:
                before, after = strip_wheel(wheel)
                print(
                    f"{wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB without {RAY_STRIP}"
                )
        sizes[wheel.name] = wheel.stat().st_size
    total = sum(sizes.values())
    (folder / "SIZES.json").write_text(json.dumps({"total_bytes": total, "wheels": sizes}, indent=2) + "\n")
    print(f"{len(sizes)} wheels, {total / 2**20:.1f} MiB in {folder}")
    if total > args.budget_mib * 2**20:
        print(f"over the budget of {args.budget_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
