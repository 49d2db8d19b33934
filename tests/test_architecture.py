"""The two import rules that keep the project's shape (see ARCHITECTURE.md).

1. ``backends/`` imports nothing from ``als/``: a backend is usable, and testable, alone.
2. No module imports an underscored name from another project module: what modules share is
   public in the module that owns it.

Both are read from the source with ``ast``, so they hold whatever is installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("als", "backends", "benchmarks")


def modules(*packages):
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def imports(path):
    """Yield (line, imported module, imported names) for every import statement in ``path``.

    Relative imports are resolved against the module's package, so ``from .base import x``
    in ``backends/numba_cpu.py`` reads as ``backends.base``.
    """
    package = path.relative_to(ROOT).parent.parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def is_project(module):
    return module.split(".")[0] in PACKAGES


def is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def where(path, line):
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_rules_see_imports():
    """The checks below would pass vacuously if ``imports`` found nothing: it finds these."""
    found = {module for _, module, _ in imports(ROOT / "backends" / "numba_cpu.py")}
    assert {"backends.base", "backends.xp_generic", "backends"} <= found
    assert any(module == "als.fitting" for _, module, _ in imports(ROOT / "als" / "model.py"))


@pytest.mark.parametrize("path", modules("backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_backends_import_nothing_from_als(path):
    offending = [
        f"{where(path, line)} imports {module}"
        for line, module, names in imports(path)
        if module.split(".")[0] == "als"
        or (module == "" and "als" in names)  # "from . import als" cannot happen, but be sure
    ]
    assert not offending, offending


@pytest.mark.parametrize("path", modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path):
    own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    offending = []
    for line, module, names in imports(path):
        if not is_project(module) or module == own:
            continue
        place = where(path, line)
        if any(is_private(part) for part in module.split(".")):
            offending.append(f"{place} imports the private module {module}")
        offending += [f"{place} imports {name} from {module}" for name in names if is_private(name)]
    assert not offending, offending
