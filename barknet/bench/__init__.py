"""Benchmarks side by side: barknet against what you would otherwise use.

Theory of operation
-------------------
Every implementation speaks the same wire format (a 4-byte big-endian length,
then the payload) and plays both sides: the client and the server of one
measurement are the same implementation, in **two separate processes**, so the
GIL never serialises them and each side's costs are its own. Compared are
barknet's :class:`~barknet.framed.FramedTransport`; raw blocking sockets
(``sendall`` and ``recv_into`` with the 4-byte header, one reused buffer: the
practical floor for Python); a careful hand-written ``selectors`` loop (the
pure-Python floor the layers are measured against); asyncio streams
(``readexactly``); a careful asyncio ``Protocol``; and, when they are installed (``pip install
barknet[bench]``), uvloop running that same ``Protocol`` and Twisted's
``Int32StringReceiver``.

The server understands three commands, each sent as the first frame of a
conversation: ``echo`` (send every later frame back), ``sink N`` (swallow N
frames, then answer ``ok``) and ``rss`` (answer ``ready``, take the next frame,
answer with how much its peak resident memory grew meanwhile). From them:

* **ping-pong**: one frame out, the echo back, timed one by one after a
  warm-up; p50 and p99 of the round trips, for 16 B, 1 KiB and 64 KiB;
* **bulk**: ``sink N`` then N frames as fast as the sender can, timed from the
  first byte sent to the ``ok``: MB/s (1e6 bytes) for 1 MiB and 16 MiB frames,
  frames/s for 64 B frames;
* **peak memory**: a fresh server receives one 16 MiB frame; its peak RSS
  (``VmHWM``) minus its RSS before, as a multiple of the frame size.

Fairness, because two effects on a small VM move figures by several times and
must not decide the comparison:

* **Allocator state.** glibc hands large freed blocks back to the kernel until
  a freed ``mmap`` block raises its threshold; in a "cold" process every large
  read then costs an ``mmap``/``munmap`` pair and fresh page faults. Every
  child process therefore allocates and frees one 1 MiB block at start-up, so
  they all start in the same (warm) state.
* **CPU placement.** Client and server on one CPU hand the token back and forth
  without cross-CPU wake-ups (best for latency); on two CPUs they run in
  parallel (best for throughput). Where ``os.sched_setaffinity`` works, both
  are pinned to one CPU for ping-pong and to two for bulk; the placement is
  printed. Compare ratios from one run, never absolute figures across runs.

Implementations are interleaved within each repetition (the order rotates),
so a burst of load from elsewhere on the machine smears over all of them
rather than sinking one. Each figure is the median over repetitions, and each
is also given as a ratio to raw blocking sockets measured in the same run.

The package holds one module per implementation compared (``raw_sockets``,
``selectors_side``, ``barknet_side``, ``asyncio_side``, ``twisted_side``), the
TLS rows (``tls_side``), what they share (``common``), the process
orchestration and statistics (``runner``), the table and command line
(``report``), and the in-process cost of each layer (``layers``, behind
``benchmarks/layer_costs.py``).
"""

from .common import FULL, IMPLS, QUICK, Plan, Session
from .report import format_table, main
from .runner import available_impls, machine_info, run

__all__ = [
    "FULL",
    "IMPLS",
    "QUICK",
    "Plan",
    "Session",
    "available_impls",
    "format_table",
    "machine_info",
    "main",
    "run",
]
