"""The 16-byte round trip of every server against every client (see barknet.bench.pairs).

    .venv/bin/python benchmarks/pairs.py [--round-trips N] [--server-python PATH]

The program lives in :mod:`barknet.bench.pairs`; this script only runs it.
"""

import sys

from barknet.bench.pairs import main

if __name__ == "__main__":
    sys.exit(main())
