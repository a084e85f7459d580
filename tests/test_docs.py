"""The documentation's scaffolding: the licence matches pyproject.toml, every public module gets
an API page, ``docs/check_api.py`` notices a public name missing from the built site, and the
modules of issue 12 document every public function with Args and an example.

``.ci/run`` builds the site itself (``mkdocs build --strict``) and runs ``docs/check_api.py``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import check_api  # noqa: E402
from hooks import public_modules  # noqa: E402


def test_license_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_changelog_has_an_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "nn_from_scratch.plots" in text


def test_every_public_module_gets_a_page():
    import nn_from_scratch

    found = {m.name for m in pkgutil.walk_packages(nn_from_scratch.__path__, "nn_from_scratch.")
             if not any(part.startswith("_") for part in m.name.split(".")[1:])}
    assert found | {"nn_from_scratch"} == set(public_modules())


def write_inventory(site: Path, names: list[str]) -> None:
    lines = "".join(f"{n} py:object 1 api/#{n} -\n" for n in names)
    header = b"# Sphinx inventory version 2\n# Project: x\n# Version: 0\n# The remainder of this file is compressed using zlib.\n"
    (site / "objects.inv").write_bytes(header + zlib.compress(lines.encode()))


def test_check_api_notices_a_missing_name(tmp_path):
    everything = [m for m in public_modules()] + [f"{m}.{n}" for m in public_modules() for n in check_api.public_names(m)]
    write_inventory(tmp_path, everything)
    assert check_api.missing(tmp_path) == []
    write_inventory(tmp_path, [n for n in everything if n != "nn_from_scratch.plots.plot_comparison"])
    assert check_api.missing(tmp_path) == ["nn_from_scratch.plots.plot_comparison"]
    assert check_api.main(["check_api.py", str(tmp_path)]) == 1


@pytest.mark.parametrize("module", ["nn_from_scratch.plots", "nn_from_scratch.cli_jobs"])
def test_public_functions_have_args_and_an_example(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not inspect.isfunction(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        assert "Args:" in doc and "Example:" in doc, f"{module}.{name}"
        for parameter in inspect.signature(obj).parameters:
            assert f"{parameter}:" in doc or f"{parameter}," in doc, f"{module}.{name}: {parameter} undocumented"


@pytest.mark.parametrize("module", ["nn_from_scratch.plots", "nn_from_scratch.zoo", "nn_from_scratch.nodes.activations",
                                    "nn_from_scratch.nodes.pooling", "nn_from_scratch.nodes.dropout",
                                    "nn_from_scratch.nodes.reshape", "nn_from_scratch.neurons.linear",
                                    "nn_from_scratch.optimizers", "nn_from_scratch.verify.compare",
                                    "nn_from_scratch.verify.gradcheck", "nn_from_scratch.verify.training",
                                    "nn_from_scratch.symbolic", "nn_from_scratch.callbacks"])
def test_examples_in_docstrings_run(module):
    """The ``Example:`` sections of these modules are doctests, and they pass."""
    import doctest

    import matplotlib

    matplotlib.use("Agg")
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
