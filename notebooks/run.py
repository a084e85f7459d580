"""Execute the notebooks (``notebooks/*.py``, jupytext percent files) with nbclient.

    python notebooks/run.py --size ci                 # what .ci/run does: every notebook, small; fails on any error
    python notebooks/run.py --size full --write       # refresh the committed .ipynb files (outputs and figures)
    python notebooks/run.py course_lab --size ci      # one notebook

The size reaches each notebook through the environment variable ``NN_NOTEBOOK_SIZE`` (its
``SIZE`` parameter). ``--write`` saves the executed notebook as the ``.ipynb`` paired with the
``.py`` (jupytext). Exit status 1 when a cell raises (its traceback is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("course_lab", "fashion_mnist_resnet", "custom_layer")


def execute(name: str, size: str, write: bool, timeout: int) -> float:
    import jupytext
    import nbclient

    source = HERE / f"{name}.py"
    notebook = jupytext.read(source)
    env_before = os.environ.get("NN_NOTEBOOK_SIZE")
    os.environ["NN_NOTEBOOK_SIZE"] = size  # inherited by the kernel
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    try:
        client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(HERE)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("NN_NOTEBOOK_SIZE", None)
        else:
            os.environ["NN_NOTEBOOK_SIZE"] = env_before
    seconds = time.perf_counter() - start
    if write:
        notebook.metadata.pop("widgets", None)
        jupytext.write(notebook, HERE / f"{name}.ipynb", fmt="ipynb")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *NOTEBOOKS], default=[], metavar="NAME",
                        help=f"which notebooks (default: all of {', '.join(NOTEBOOKS)})")
    parser.add_argument("--size", choices=("ci", "full"), default="ci")
    parser.add_argument("--write", action="store_true", help="save the executed .ipynb next to the .py")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = False
    for name in args.names or NOTEBOOKS:
        try:
            seconds = execute(name, args.size, args.write, args.timeout)
        except Exception as error:  # nbclient's CellExecutionError carries the cell's traceback
            print(f"{name}: FAILED\n{error}", file=sys.stderr)
            failed = True
            continue
        print(f"{name}: ran in {seconds:.1f} s (size {args.size}){', wrote .ipynb' if args.write else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
