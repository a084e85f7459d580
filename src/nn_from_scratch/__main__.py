"""``python -m nn_from_scratch train``: see :mod:`nn_from_scratch.cli`."""

import sys

from .cli import main

sys.exit(main())
