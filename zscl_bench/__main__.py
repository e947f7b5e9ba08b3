"""``python -m zscl_bench mtil ...``."""

import sys

from .cli import main

sys.exit(main())
