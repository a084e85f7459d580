"""Check that every public name of the package is in the built API reference.

    mkdocs build --strict && python docs/check_api.py site

Reads ``site/objects.inv`` (the inventory mkdocstrings writes: one entry per documented object)
and lists, for every public module (``docs/hooks.py``), the names it should document: those of
``__all__``, or, without one, the classes and functions the module defines whose names do not
start with ``_``. Exit status 1, with the missing names, when any is absent.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooks import public_modules  # noqa: E402


def inventory(site: Path) -> set[str]:
    data = (site / "objects.inv").read_bytes()
    body = data.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines() if line}


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(v) or inspect.isfunction(v)) and v.__module__ == module_name]
    return [n for n in names if not (n.startswith("__") and n.endswith("__"))]


def missing(site: Path) -> list[str]:
    documented = inventory(site)
    return [f"{m}.{n}" for m in public_modules() if m != "nn_from_scratch.__main__"
            for n in public_names(m) if f"{m}.{n}" not in documented] + \
           [m for m in public_modules() if m not in documented]


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    absent = missing(site)
    total = sum(len(public_names(m)) for m in public_modules())
    if absent:
        print(f"{len(absent)} public names are not in the API reference:\n  " + "\n  ".join(absent))
        return 1
    print(f"every public name is in the API reference ({total} names in {len(public_modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
