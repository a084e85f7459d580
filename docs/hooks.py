"""MkDocs hook: one API page per public module of ``src/nn_from_scratch``, generated at build time.

Every module (private ones, ``_name``, and ``__main__`` excepted) gets ``api/<module>.md`` holding
``::: <module>``; mkdocstrings renders its docstring and every public member (``__all__`` when the
module defines it). The pages are appended to the navigation as "API reference", so a new module
appears in the site without editing anything here. ``docs/check_api.py`` then checks that every
public name is in the built site.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

SRC = Path(__file__).resolve().parent.parent / "src"


def public_modules() -> list[str]:
    """Dotted names of the package's public modules, sorted, the package itself first."""
    names = []
    for path in sorted((SRC / "nn_from_scratch").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    return sorted(names, key=lambda n: (n != "nn_from_scratch", n))


def on_config(config):
    # Google style names the section "Examples"; this code base writes "Example:" (one example).
    # Parse both as doctest examples, so that ">>>" lines render as code, not as Markdown.
    from griffe._internal.docstrings import google
    from griffe import DocstringSectionKind

    google._section_kind.setdefault("example", DocstringSectionKind.examples)
    api = [{name: f"api/{name}.md"} for name in public_modules()]
    config["nav"].append({"API reference": api})
    return config


def on_files(files, config):
    for name in public_modules():
        content = f"# `{name}`\n\n::: {name}\n"
        if name == "nn_from_scratch":
            content += "    options:\n      members: false\n"
        files.append(File.generated(config, f"api/{name}.md", content=content))
    return files
