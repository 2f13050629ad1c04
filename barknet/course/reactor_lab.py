"""Notebook 02: what one EventWatcher dispatches, in order, and a late timer."""

from __future__ import annotations

import socket
import time

from ..reactor import EventWatcher
from ..testing.trace import LoopTrace

# --------------------------------------------------------- 02: the reactor
__all__ = [
    "late_timer",
    "reactor_tour",
]


def reactor_tour() -> LoopTrace:
    """A short, scripted run of the reactor with every kind of callback in it.

    A ``call_soon`` at the start; timers at 10, 20, 25, 40 and 50 ms, the one at
    25 ms writing five bytes into one end of a socket pair; and the pair's ends
    watched, one for reading and one for writing. The returned
    :class:`LoopTrace` lists what ran, in order.
    """
    trace = LoopTrace()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        with EventWatcher() as ew:
            received: list[bytes] = []
            finished: list[bool] = []

            def start() -> None:
                ew.watch_write(a.fileno(), socket_writable)

            def socket_writable() -> None:
                ew.unwatch_write(a.fileno())  # writable is almost always true: ask once

            def tick() -> None:
                pass

            def send_hello() -> None:
                a.send(b"hello")

            def socket_readable() -> None:
                received.append(b.recv(1024))

            def finish() -> None:
                finished.append(True)

            ew.watch_read(b.fileno(), socket_readable)
            ew.call_soon(start)
            for delay in (0.010, 0.020, 0.040):
                ew.call_later(delay, tick)
            ew.call_later(0.025, send_hello)
            ew.call_later(0.050, finish)
            with trace.watching(ew):
                ew.run_until(lambda: bool(finished), timeout=5)
            ew.unwatch(b.fileno())
            ew.unwatch(a.fileno())
    finally:
        a.close()
        b.close()
    return trace


def late_timer(block: float = 0.05, due: float = 0.01) -> tuple[float, float]:
    """A timer due after ``due`` s, behind a callback that hogs the loop for
    ``block`` s. Returns ``(due, actually_ran_after)``: timers mean "not before"."""
    ran: list[float] = []
    with EventWatcher() as ew:
        start = time.perf_counter()
        ew.call_soon(time.sleep, block)
        ew.call_later(due, lambda: ran.append(time.perf_counter() - start))
        ew.run_until(lambda: bool(ran), timeout=5)
    return due, ran[0]


# ------------------------------------------------------- 03: partial I/O
