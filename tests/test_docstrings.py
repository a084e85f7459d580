"""Every public class and function documents its arguments (an ``Args:`` section) and shows one
short example (an ``Example:`` section), as the API site promises (issue 12)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import check_api  # noqa: E402
from hooks import public_modules  # noqa: E402


def public_objects(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    found = []
    for name in check_api.public_names(module_name):
        obj = getattr(module, name, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", module_name) == module_name:
            found.append((name, obj))
    return found


def takes_arguments(obj: object) -> bool:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    except (TypeError, ValueError):
        return False
    return bool(params) and not (inspect.isclass(obj) and target is object.__init__)


@pytest.mark.parametrize("module_name", sorted(public_modules()))
def test_public_classes_and_functions_have_args_and_an_example(module_name):
    lacking: list[str] = []
    for name, obj in public_objects(module_name):
        doc = inspect.getdoc(obj) or ""
        if "Example" not in doc or (takes_arguments(obj) and "Args:" not in doc):
            lacking.append(name)
    assert not lacking, f"{module_name}: no Args/Example section in {', '.join(lacking)}"
