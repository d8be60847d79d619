"""The package layout holds: import-linter's contracts pass, and a broken one fails."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.serve.packaging import SERVICE_MODULES

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SHARED = {
    "slipway",
    "slipway.config",
    "slipway.errors",
    "slipway.fsutil",
    "slipway.github",
    "slipway.manifests",
    "slipway.probabilities",
    "slipway.progress",
    "slipway.registry",
    "slipway.registry_process",
    "slipway.registry_rest",
}


def _lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_are_kept():
    done = _lint_imports(SRC, REPO / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("registry.py", "import slipway.propose.gate", "Shared modules use no flow package"),
        ("manifests.py", "import slipway.promote", "Shared modules use no flow package"),
        ("propose/report.py", "import slipway.serve.service", "Propose uses no other flow"),
        ("propose/training.py", "import slipway.drift", "Propose uses no other flow"),
        ("serve/packaging.py", "import slipway.propose.training", "Serve uses no other flow"),
        ("promote/__init__.py", "import slipway.drift", "Promote may use serve, never drift"),
        ("serve/server.py", "from slipway.cli import main", "Nothing imports the command line"),
    ],
)
def test_a_contract_broken_on_purpose_fails(tmp_path, module, line, contract):
    shutil.copytree(SRC / "slipway", tmp_path / "slipway")
    target = tmp_path / "slipway" / module
    target.write_text(target.read_text() + f"\n{line}  # broken on purpose\n")
    done = _lint_imports(tmp_path, REPO / "pyproject.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{contract} BROKEN" in done.stdout


def _slipway_imports(path: Path) -> set[str]:
    """Every ``slipway…`` module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("slipway")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slipway"):
            for alias in node.names:  # `from slipway.serve import x` may name a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _source(candidate) else node.module)
    return found


def _source(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_the_service_imports_only_serve_and_the_shared_modules():
    imported = _slipway_imports(REPO / "bento" / "service.py")
    assert imported, "bento/service.py imports the platform"
    outside = {m for m in imported if m not in SHARED and not m.startswith("slipway.serve.")}
    assert not outside


def test_the_bento_bundles_exactly_what_the_service_imports():
    seen: set[str] = set()
    todo = list(_slipway_imports(REPO / "bento" / "service.py"))
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b's __init__ too
            name = ".".join(parts[:i])
            if name not in seen:
                seen.add(name)
                source = _source(name)
                assert source is not None, name
                todo.extend(_slipway_imports(source))
    bundled = {_source(m).relative_to(SRC / "slipway").as_posix() for m in seen}
    assert bundled == set(SERVICE_MODULES)


def test_every_package_the_platform_imports_is_pinned_in_pyproject():
    import tomllib
    from importlib.metadata import packages_distributions

    pinned = {
        requirement.split("==")[0].lower().replace("_", "-")
        for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    distributions = packages_distributions()
    imported: set[str] = set()
    for path in [*SRC.rglob("*.py"), REPO / "bento" / "service.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"slipway", "__future__"}
    unpinned = {
        module: distributions.get(module)
        for module in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [])} & pinned
    }
    assert not unpinned  # a workflow step's environment installs only these pins
