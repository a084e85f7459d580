"""The progress bar of ``fit``, ``evaluate`` and ``predict``: :mod:`tqdm.auto`, quietly.

In Jupyter with ipywidgets installed, the bar is a widget; everywhere else (terminals, logs,
Jupyter without ipywidgets) it is tqdm's text bar. ``tqdm.auto`` alone warns ("IProgress not
found. Please update jupyter and ipywidgets") when a notebook lacks ipywidgets and, when it has
them, that notebook mode is experimental; this module takes the same decision without either
warning. ``pip install ipywidgets`` is all a notebook needs for the widget.

    from nn_from_scratch.progress import tqdm
    for batch in tqdm(range(10), desc="work"):
        ...
"""

from __future__ import annotations

import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    # TqdmWarning: no ipywidgets in a notebook (the text bar is used); TqdmExperimentalWarning
    # (a subclass): the widget bar is used. Neither is something the user can act on here.
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm as _auto_tqdm

tqdm = _auto_tqdm
"""The progress-bar class, as ``tqdm.auto.tqdm`` picks it: ``tqdm.notebook.tqdm`` (a widget) in
Jupyter with ipywidgets installed, ``tqdm.std.tqdm`` (text) everywhere else. Same arguments as
``tqdm.tqdm``, e.g. ``tqdm(total=100, desc="Epoch 1/3", unit="batch")``."""

__all__ = ["tqdm"]
