"""What each install brings: the laptop tools need no torch, serving needs no test or bench extras,
and the package builds without setuptools' deprecation banners (issue 27)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from support import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The model stack: gigabytes with CUDA torch, and nothing the AWS and Discord tools use.
HEAVY = {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "scipy", "xformers"}
TOOLS = (
    "serve_app.provisioning.cli",
    "bot_gateway.register",
    "serve_app.ops.deploy",
    "serve_app.ops.local_run",
)


def names(lines: list[str]) -> set[str]:
    return {Requirement(line).name for line in lines}


def test_the_base_install_is_light_and_every_extra_that_serves_brings_the_model_stack() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert not names(PROJECT["project"]["dependencies"]) & HEAVY
    assert {"torch", "diffusers", "transformers", "peft"} <= names(extras["serve"])
    for extra in ("gpu", "test", "bench"):
        assert "raydiffusion[serve]" in extras[extra], extra


def test_the_command_line_tools_import_nothing_of_the_model_stack() -> None:
    """What a laptop with only `pip install -e .` runs: importing them must not need torch."""
    code = (
        "import importlib, sys\n"
        f"for name in {TOOLS!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert not imported & (HEAVY | {"PIL", "numpy"}), sorted(imported & (HEAVY | {"PIL", "numpy"}))


def test_make_run_installs_serving_only_and_make_test_adds_the_extras() -> None:
    makefile = (ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert match, target
        return match.group(1)

    assert "-e '.[serve]'" in recipe("$(STAMP)") and "test" not in recipe("$(STAMP)")
    assert "'.[serve,test,bench]'" in recipe("$(TEST_STAMP)")
    assert re.search(r"^run: \$\(STAMP\) ", makefile, re.M)
    assert re.search(r"^test: \$\(TEST_STAMP\)", makefile, re.M)
    assert "pip install -e .\n" in recipe("$(TOOLS_STAMP)")
    for tool in ("deploy", "image", "lock"):
        assert re.search(rf"^{tool}: \$\(TOOLS_STAMP\)", makefile, re.M), tool


def test_the_license_is_an_spdx_string_so_setuptools_prints_no_deprecation_banner() -> None:
    assert PROJECT["project"]["license"] == "Apache-2.0"
    requires = [Requirement(r) for r in PROJECT["build-system"]["requires"]]
    (setuptools,) = [r for r in requires if r.name == "setuptools"]
    assert setuptools.specifier.contains("77") and not setuptools.specifier.contains("76")
