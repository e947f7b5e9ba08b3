"""Build the offline starter model into a version store (once; later starts just load it).

    python scripts/build_starter.py [--root versions] [--device cpu] [--force]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from zscl_core.starter import build_starter, ensure_starter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline starter CLIP model.")
    parser.add_argument("--root", type=Path, default=Path("versions"), help="the version store")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true",
                        help="build a new starter version even if one exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.force:
        directory = args.root / build_starter(args.root, device=args.device, progress=True)
    else:
        directory = ensure_starter(args.root, device=args.device)
    logging.getLogger("build_starter").info("starter at %s (%.1f s)", directory,
                                            time.perf_counter() - start)


if __name__ == "__main__":
    main()
