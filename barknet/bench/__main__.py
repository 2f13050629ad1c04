"""``python -m barknet.bench``: the benchmark's child processes, or a run."""

import argparse
import sys

from .report import main
from .runner import _child_main

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        sys.exit(_child_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m barknet.bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.exit(main(quick=args.quick, json_path=args.json))
