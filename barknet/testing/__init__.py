"""Tools for testing any transport, yours included, as ``trio.testing`` is for trio.

* :mod:`~barknet.testing.faults`: :class:`ChunkingTransport` (partial I/O and
  "would block" on demand) and :class:`RawPeer` (a plain socket that sends what no
  framing layer would, half-closes, or resets);
* :mod:`~barknet.testing.trace`: :class:`TracingTransport` and :class:`LoopTrace`,
  which record every call and dispatch, with text, hex and plot renderings;
* :mod:`~barknet.testing.harness`: :class:`~barknet.testing.harness.Owner` (the
  one piece of code that reacts to a transport's events),
  :class:`~barknet.testing.harness.Endpoint` and
  :class:`~barknet.testing.harness.Stage`, the one harness the tests, the checks
  and notebook 08 drive transports with;
* :mod:`~barknet.testing.conformance`: one suite of checks that every framing
  transport must pass, :mod:`~barknet.testing.contract`, the interface's
  promises beyond framing, and :mod:`~barknet.testing.queueing`, the water marks
  of a transport that queues; all run with :func:`run_checks`, from
  :mod:`~barknet.testing.checks`.

Nothing in the library (``barknet``) imports this package.
"""

from .checks import run_checks
from .faults import ChunkingTransport, RawPeer
from .trace import LoopTrace, Trace, TracingTransport

__all__ = ["ChunkingTransport", "LoopTrace", "RawPeer", "Trace", "TracingTransport", "run_checks"]
