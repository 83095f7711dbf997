"""Dependencies point one way: ``storage`` knows neither package, ``webhooks``
uses the plugin as a third-party subscriber would, and the plugin reaches
``webhooks`` only inside ``init_app``. Read from the source with ``ast``, so a
test that imports everything cannot hide a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("addon_plugin", "webhooks", "storage")


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: at the top level and in
    class bodies (under ``if`` and ``try`` too), not inside a function."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def every_import(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, function-local ones included."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    """The absolute dotted names an import statement reaches (``from . import x``
    in ``pkg`` reaches ``pkg`` and ``pkg.x``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


@dataclass(frozen=True)
class Source:
    """One module of the three packages, parsed."""

    name: str
    is_package: bool
    tree: ast.Module

    @classmethod
    def read(cls, path: Path) -> Source:
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        return cls(name, is_package, ast.parse(path.read_text(encoding="utf-8"), str(path)))

    def imports(self, *, function_local: bool = False) -> set[str]:
        statements = every_import(self.tree) if function_local else module_level_imports(self.tree)
        return {name for node in statements for name in imported_names(node, self.name, self.is_package)}


SOURCES = {source.name: source for package in PACKAGES
           for source in map(Source.read, sorted((ROOT / package).rglob("*.py")))}


def reaches(names: set[str], target: str) -> bool:
    return any(name == target or name.startswith(target + ".") for name in names)


def importers(target: str, *, within: str) -> list[str]:
    """Modules of package ``within`` that import ``target`` at module level."""
    return [name for name, source in SOURCES.items()
            if reaches({name}, within) and reaches(source.imports(), target)]


def test_every_module_of_the_three_packages_is_read():
    assert {"addon_plugin.ledger", "addon_plugin.api.http", "webhooks.delivery", "storage.models"} <= set(SOURCES)


def test_storage_imports_neither_the_plugin_nor_webhooks_anywhere():
    for name, source in SOURCES.items():
        if reaches({name}, "storage"):
            found = source.imports(function_local=True)
            assert not reaches(found, "addon_plugin") and not reaches(found, "webhooks"), name


def test_the_plugin_imports_webhooks_only_inside_functions():
    assert importers("webhooks", within="addon_plugin") == []


def test_the_packages_import_each_other_in_one_direction_only():
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for name, source in SOURCES.items():
        package = name.partition(".")[0]
        graph[package] |= {other for other in PACKAGES if other != package and reaches(source.imports(), other)}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"the packages import each other: {error.args[1]}")
    assert order == ["storage", "addon_plugin", "webhooks"]


def test_the_ledger_imports_neither_top_ups_nor_webhooks_anywhere():
    found = SOURCES["addon_plugin.ledger"].imports(function_local=True)
    assert not reaches(found, "addon_plugin.topup") and not reaches(found, "webhooks")


def test_only_the_http_layer_imports_the_http_layer():
    """Domain modules (hooks, ledger, top-ups…) never reach into ``addon_plugin.api``."""
    outside = [name for name in importers("addon_plugin.api", within="addon_plugin")
               if not reaches({name}, "addon_plugin.api")]
    assert outside == []


def test_the_walk_skips_function_bodies_but_not_class_bodies():
    tree = ast.parse("import a\nclass C:\n    import b\n    if x:\n        import c\n"
                     "def f():\n    import d\n")
    source = Source("pkg.mod", False, tree)
    assert source.imports() == {"a", "b", "c"}
    assert source.imports(function_local=True) == {"a", "b", "c", "d"}


def test_relative_imports_resolve_from_the_module_or_package():
    def names(code: str, module: str, is_package: bool) -> set[str]:
        [statement] = ast.parse(code).body
        assert isinstance(statement, ast.ImportFrom)
        return imported_names(statement, module, is_package)

    assert names("from . import ledger", "addon_plugin.hooks", False) == {"addon_plugin", "addon_plugin.ledger"}
    assert names("from ..present import x", "addon_plugin.api.me", False) == {"addon_plugin.present",
                                                                             "addon_plugin.present.x"}
    assert names("from .http import y", "addon_plugin.api", True) == {"addon_plugin.api.http",
                                                                      "addon_plugin.api.http.y"}
