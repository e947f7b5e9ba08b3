"""Debian's Fashion-MNIST (package dataset-fashion-mnist): where it lies, and CI's rule that it
must be there (.ci/run installs it; importing this module in CI without it is an error)."""

from __future__ import annotations

import os

import pytest

from zscl_cli.demo import FASHION_DIR as FASHION

if os.environ.get("CI") and not FASHION.exists():
    raise RuntimeError(f"{FASHION} is missing in CI; .ci/run installs dataset-fashion-mnist")

#: skip a test where the package is not installed (outside CI)
needs_fashion = pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
