"""``python -m benchmarks.serve_bench ...``: see the package's docstring, or ``--help``."""

import sys

from .cli import main

sys.exit(main())
