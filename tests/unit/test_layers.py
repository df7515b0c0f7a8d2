"""The house's rules, read from the code: which package may import which, and no deferred imports.

``serve_app`` is layered (README, "Layout"): config and core are the ground; the engine runs on
model replicas; jobs reach the engine only through its client; the API sits on top; Discord
(``bot_gateway``) is a client of the job runner that only ``serve_app/app.py`` wires in. A module
importing against these arrows, or importing one of ours inside a function (the way a cycle is
usually dodged), fails here with the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages of ours it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "serve_app.config": set(),
    "serve_app.core": {"serve_app.config"},
    "serve_app.storage": {"serve_app.config", "serve_app.core"},
    "serve_app.ops": {"serve_app.config", "serve_app.core"},
    "serve_app.engine": {"serve_app.config", "serve_app.core", "serve_app.ops"},
    "serve_app.jobs": {
        "serve_app.config",
        "serve_app.core",
        "serve_app.storage",
        "serve_app.ops",
        "serve_app.engine.client",
    },
    "serve_app.api": {
        "serve_app.config",
        "serve_app.core",
        "serve_app.storage",
        "serve_app.ops",
        "serve_app.jobs",
        "serve_app.engine.client",
    },
    "serve_app.testing": {"serve_app.config", "serve_app.core"},
    "serve_app.provisioning": set(),
    "bot_gateway": {
        "serve_app.config",
        "serve_app.core",
        "serve_app.storage",
        "serve_app.ops",
        "serve_app.jobs",
    },
    # The composition root: the one module that sees everything.
    "serve_app.app": {"serve_app", "bot_gateway"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def _ours(name: str) -> bool:
    return name.split(".")[0] in {"serve_app", "bot_gateway"}


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, str, bool]]:
    """(node, imported module, at module level?) for every import of ours."""
    found = []
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if _ours(name):
                found.append((node, name, id(node) in top or _in_type_checking(tree, node)))
    return found


def _in_type_checking(tree: ast.Module, node: ast.stmt) -> bool:
    return any(
        isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        and node in block.body
        for block in tree.body
    )


def _sources() -> list[Path]:
    paths = [p for base in ("serve_app", "bot_gateway") for p in (ROOT / base).rglob("*.py")]
    return sorted(p for p in paths if "__pycache__" not in p.parts)


def _allowed(importer: str, imported: str) -> bool:
    package = _package_of(importer)
    if imported == package or imported.startswith(package + ".") or imported in {"serve_app", "bot_gateway"}:
        return True
    return any(imported == p or imported.startswith(p + ".") for p in ALLOWED[package])


def test_no_import_runs_against_the_layers() -> None:
    wrong = []
    for path in _sources():
        module = _module_name(path)
        if module in {"serve_app", "bot_gateway"}:
            continue
        for node, imported, _ in _imports(ast.parse(path.read_text())):
            if not _allowed(module, imported):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_no_module_of_ours_is_imported_inside_a_function() -> None:
    deferred = []
    for path in _sources():
        for node, imported, at_top in _imports(ast.parse(path.read_text())):
            if not at_top:
                deferred.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported} in a function")
    assert not deferred, "\n".join(sorted(set(deferred)))


def test_every_module_belongs_to_a_layer() -> None:
    for path in _sources():
        module = _module_name(path)
        if module in {"serve_app", "bot_gateway"}:
            continue
        assert _package_of(module), module
