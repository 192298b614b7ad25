"""Every core package re-exports exactly its public names, in a sorted `__all__`."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = ["access", "api", "cli", "clinical", "crypto", "domain", "estimation", "fhir",
            "guard", "ingest", "ledger", "physiology", "pipeline", "sim", "store"]


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff (RUF022) keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_unique(package: str) -> None:
    exported = importlib.import_module(f"medtwin.{package}").__all__
    assert list(exported) == sorted(exported, key=_isort_key)
    assert len(set(exported)) == len(exported)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists(package: str) -> None:
    module = importlib.import_module(f"medtwin.{package}")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_names_are_exactly_the_public_ones(package: str) -> None:
    module = importlib.import_module(f"medtwin.{package}")
    public = {name for name, value in vars(module).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == set(module.__all__)


def test_sort_key_orders_constants_classes_functions() -> None:
    names = ["seal", "KeyRing", "AEAD_SUITES", "AeadSuite", "SIGNATURE_SUITES"]
    assert sorted(names, key=_isort_key) == [
        "AEAD_SUITES", "SIGNATURE_SUITES", "AeadSuite", "KeyRing", "seal"]
