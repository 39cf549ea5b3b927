"""The code keeps the shape docs/architecture.md describes: short functions and modules, no
import circle inside aerun/, and the model-family contract that new families plug into."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "aerun"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_no_function_over_80_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert long_modules == [] and long_functions == []


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The aerun modules `name` imports (at any depth in the file: lazy imports count too)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            names_from_base = len(submodules) < len(node.names)  # `from pkg import name` reads pkg itself
            targets = submodules + ([base] if names_from_base else [])
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != "aerun":
                found.add(target)
    return found


def test_no_import_circle_inside_aerun():
    """Package faces (__init__ files that only hand names on) are followed through to what they name."""
    mods = modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    faces = {name for name, path in mods.items() if path.name == "__init__.py"}

    def edges(name):
        for target in graph[name]:
            if target in faces and not name.startswith(target + "."):
                yield from (t for t in graph[target] if t != name)
            else:
                yield target

    state: dict[str, int] = {}
    circles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in edges(node):
            if state.get(nxt) == 1 and nxt not in faces:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in mods:
        if name not in state and name not in faces:
            visit(name, [name])
    assert circles == []


def test_the_loop_never_names_a_model_family():
    """Families plug in through the contract: the engine and the train command mention none of them."""
    families = ("MLPAutoencoder", "ConvAutoencoder", "VAE", "ConvVAE", "is_variational")
    for path in [*(PACKAGE / "engine").glob("*.py"), PACKAGE / "commands" / "train.py"]:
        text = path.read_text()
        assert not [f for f in families if f in text], path


def test_pyproject_installs_every_package_and_config_folder():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    code = {".".join(p.relative_to(REPO).parts) for p in PACKAGE.rglob("*") if (p / "__init__.py").is_file()}
    configs = {".".join(("aerun", "configs", *p.relative_to(REPO / "configs").parts)).rstrip(".")
               for p in [REPO / "configs", *(REPO / "configs").rglob("*")] if p.is_dir() and any(p.glob("*.yaml"))}
    assert listed == code | {"aerun"} | configs
