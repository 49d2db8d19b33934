"""The rules that keep the project's shape (see ARCHITECTURE.md).

1. ``backends/`` imports nothing from ``als/``: a backend is usable, and testable, alone.
2. No module imports an underscored name from another project module: what modules share is
   public in the module that owns it.
3. Sizes that keep the code readable: no module in ``als/`` or ``backends/`` over 700 lines,
   no class over 500 lines, no function over 80 lines of code (docstrings, comments and
   blank lines not counted).

All are read from the source with ``ast``, so they hold whatever is installed.
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


#: the sizes that keep a module readable
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 500
MAX_FUNCTION_CODE_LINES = 80


def docstring_lines(node):
    """The line numbers of the docstrings of ``node`` and of everything defined in it."""
    lines = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = inner.body[0] if inner.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source_lines, node):
    """How many lines of ``node`` hold code: not blank, not only a comment, not a docstring."""
    skip = docstring_lines(node)
    return sum(
        1
        for number in range(node.lineno, node.end_lineno + 1)
        if number not in skip
        and source_lines[number - 1].strip()
        and not source_lines[number - 1].strip().startswith("#")
    )


def oversized(path):
    """One line for each size rule ``path`` breaks."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    if len(lines) > MAX_MODULE_LINES:
        found.append(f"{path.relative_to(ROOT)} has {len(lines)} lines")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_CLASS_LINES:
                found.append(f"{where(path, node.lineno)} class {node.name} has {length} lines")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            count = code_lines(lines, node)
            if count > MAX_FUNCTION_CODE_LINES:
                found.append(f"{where(path, node.lineno)} {node.name} has {count} code lines")
    return found


def test_the_size_rule_counts_code_lines():
    """Docstrings, comments and blank lines are not counted; statements are."""
    body = "".join(f"    x{i} = {i}  # note\n\n    # why\n" for i in range(81))
    source = f'def long():\n    """Doc\n\n    more doc.\n    """\n{body}'
    function = ast.parse(source).body[0]
    assert code_lines(source.splitlines(), function) == 82  # the def line and 81 statements


@pytest.mark.parametrize("path", modules("als", "backends"), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_classes_and_functions_stay_readable(path):
    found = oversized(path)
    assert not found, found
