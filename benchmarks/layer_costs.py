"""CPU time, Python calls and opcodes per 16-byte round trip as each of barknet's layers
is added, then per 64-byte frame sent one way in batches (the bench's bulk row).

    .venv/bin/python benchmarks/layer_costs.py [round_trips]

The programs live in :mod:`barknet.bench.layers` (so ``python -m barknet bench`` can
print the call counts too); this script only runs them.
"""

import sys

from barknet.bench.layers import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
