"""The public surface: what ``addon_plugin`` exports, that the README documents
it, and that the demo host uses nothing else of the three packages."""

from __future__ import annotations

import ast
import configparser
import importlib
from pathlib import Path
from types import ModuleType

import pytest

import addon_plugin

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "storefront"
PACKAGES = {"addon_plugin", "storage", "webhooks"}
#: Where a host may start; ``storage`` is not one (``addon_plugin`` re-exports what a host needs of it).
PUBLIC_ROOTS = {"addon_plugin", "webhooks"}


def is_public(dotted: str) -> bool:
    """True if every step of ``dotted`` after its root is in the ``__all__`` of the module before it."""
    root, *rest = dotted.split(".")
    if root not in PUBLIC_ROOTS:
        return False
    obj: object = importlib.import_module(root)
    for name in rest:
        if not isinstance(obj, ModuleType) or name not in getattr(obj, "__all__", ()):
            return False
        obj = getattr(obj, name)
    return True


def _is_module(dotted: str) -> bool:
    try:
        importlib.import_module(dotted)
    except ImportError:
        return False
    return True


def names_used(source: str) -> list[str]:
    """Every dotted name of the three packages a module reaches: what it
    imports, and the attributes it reads of a module it imported."""
    tree = ast.parse(source)
    used: list[str] = []
    modules: dict[str, str] = {}  # local name → the module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    used.append(alias.name)
                    local = alias.asname or alias.name.split(".")[0]
                    modules[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                used.append(dotted)
                if _is_module(dotted):
                    modules[alias.asname or alias.name] = dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            used.append(f"{modules[node.value.id]}.{node.attr}")
    return used


def test_the_check_catches_every_way_past_the_surface():
    source = """
import storage
from addon_plugin import ledger, products
from addon_plugin.present import product_body
from addon_plugin.schemas import coerce_form
import addon_plugin.money
products.create_product("m", {})
"""
    private = [name for name in names_used(source) if not is_public(name)]
    assert set(private) == {"storage", "addon_plugin.ledger", "addon_plugin.present.product_body",
                            "addon_plugin.schemas.coerce_form", "addon_plugin.money",
                            "addon_plugin.products.create_product"}
    assert all(is_public(name) for name in ("addon_plugin.accounts.adjust", "addon_plugin.errors.NotFound",
                                            "webhooks.endpoints.list_endpoints", "addon_plugin.AddonPlugin"))


@pytest.mark.parametrize("path", sorted(DEMO.rglob("*.py")), ids=lambda path: path.name)
def test_the_demo_uses_only_the_public_surface(path):
    assert [name for name in names_used(path.read_text()) if not is_public(name)] == []


def test_every_exported_name_exists_and_exported_modules_declare_their_own():
    for name in addon_plugin.__all__:
        obj = getattr(addon_plugin, name)
        if isinstance(obj, ModuleType):
            assert obj.__all__ and all(hasattr(obj, inner) for inner in obj.__all__), name


def test_the_readme_documents_every_public_name():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Public API", 1)[1].split("\n## ", 1)[0]
    assert [name for name in addon_plugin.__all__ if f"`{name}" not in section] == []


def test_the_packages_ship_their_type_information():
    package_data = configparser.ConfigParser()
    package_data.read(ROOT / "setup.cfg")
    for package in ("addon_plugin", "storage", "webhooks"):
        assert (ROOT / package / "py.typed").exists()
        assert "py.typed" in package_data["options.package_data"][package]
