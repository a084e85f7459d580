"""The tutorial notebooks: each ``.ipynb`` is its jupytext ``.py`` executed (same cells, outputs
and figures included, no errors), each has the size parameter that ``.ci/run`` sets, and the
progress bar in a Jupyter kernel without ipywidgets is the text bar, with no warning.

Executing the notebooks themselves is ``.ci/run``'s job (``notebooks/run.py --size ci``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
from run import NOTEBOOKS as LISTED  # noqa: E402


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_run_lists_every_notebook():
    assert sorted(LISTED) == sorted(p.stem for p in NOTEBOOKS.glob("*.py") if p.stem != "run")
    assert len(LISTED) == 3


@pytest.mark.parametrize("name", LISTED)
def test_ipynb_matches_its_py(name):
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    ipynb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert cells(ipynb) == cells(py), f"{name}.ipynb is out of date: python notebooks/run.py {name} --size full --write"
    assert py.metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", LISTED)
def test_ipynb_is_executed_with_figures(name):
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] is not None for c in code), "every code cell ran"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "executed top to bottom in one kernel"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{name}: expected its figures, found {len(images)}"
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "IProgress" not in text and "TqdmWarning" not in text and "TqdmExperimentalWarning" not in text
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "NN_NOTEBOOK_SIZE" in "".join(params[0]["source"])
    # The committed notebook is the full-size run, not the CI one.
    assert "SIZE = 'full'" in text


def test_progress_bar_in_jupyter_without_ipywidgets(tmp_path):
    """In a kernel without ipywidgets, ``fit(verbose=1)`` shows tqdm's text bar and no warning
    (plain ``tqdm.auto`` warns "IProgress not found")."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        pytest.skip("ipywidgets is installed: the bar is a widget")
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import numpy as np\n"
        "from nn_from_scratch import zoo\n"
        "from nn_from_scratch.losses import SoftMaxLoss\n"
        "from nn_from_scratch.optimizers import GradientDescent\n"
        "m = zoo.seed_cnn(seed=0)\n"
        "m.compile(GradientDescent(0.1), SoftMaxLoss())\n"
        "m.fit(np.zeros((8, 1, 28, 28), np.float32), np.arange(8), epochs=1, batch_size=4, verbose=1)\n"
        "print('done')")])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Epoch 1/1" in streams and "2/2" in streams, streams  # the text bar
    assert "done" in streams
    assert "IProgress" not in streams and "Warning" not in streams, streams
    assert not [o for o in outputs if o.output_type == "display_data"]  # no widget
