"""How the two processes of a round trip share one CPU, repetition by repetition.

    .venv/bin/python benchmarks/sharing.py [--impls LIST] [--repetitions N] [--round-trips N]

The program lives in :mod:`barknet.bench.sharing`; this script only runs it.
"""

import sys

from barknet.bench.sharing import main

if __name__ == "__main__":
    sys.exit(main())
