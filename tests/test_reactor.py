"""The reactor: readiness callbacks, call_soon/call_later, cross-thread wake-ups,
errors, closing, and living inside a running asyncio loop."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from barknet import EventWatcher

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def pair2() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def turns(ew: EventWatcher, n: int, timeout: float = 0.01) -> None:
    for _ in range(n):
        ew.run_once(timeout)


# ------------------------------------------------------------------ readiness
def test_read_callback_runs_when_data_arrives(ew, pair):
    a, b = pair
    calls = []
    ew.watch_read(a.fileno(), lambda: calls.append(a.recv(100)))
    turns(ew, 3)
    assert calls == []  # nothing to read: no callback
    b.send(b"ping")
    ew.run_until(lambda: calls, timeout=5)
    assert calls == [b"ping"]


def test_write_callback_runs_while_socket_is_writable(ew, pair):
    a, _ = pair
    calls = []
    ew.watch_write(a.fileno(), lambda: calls.append("w"))
    turns(ew, 3)
    assert calls == ["w", "w", "w"]  # level-triggered: once per turn


def test_watch_read_and_write_on_one_fd_then_unwatch_each(ew, pair):
    a, b = pair
    fd = a.fileno()
    seen: list[str] = []
    ew.watch_write(fd, lambda: seen.append("write"))
    ew.watch_read(fd, lambda: (seen.append("read"), a.recv(100)))  # modify: both now
    b.send(b"x")
    ew.run_once(1)
    assert sorted(seen) == ["read", "write"]

    seen.clear()
    ew.unwatch_write(fd)  # modify: reader only
    b.send(b"y")
    ew.run_once(1)
    assert seen == ["read"]
    assert ew.is_watching(fd)

    seen.clear()
    ew.watch_write(fd, lambda: seen.append("write"))
    ew.unwatch(fd)  # forget both at once
    assert not ew.is_watching(fd)
    b.send(b"z")
    turns(ew, 2)
    assert seen == []

    ew.watch_read(fd, lambda: (seen.append("read again"), a.recv(100)))  # registers anew
    ew.run_until(lambda: seen, timeout=5)
    assert seen == ["read again"]
    ew.unwatch_read(fd)  # the last interest gone: unregistered
    assert not ew.is_watching(fd)
    ew.unwatch_read(fd)  # harmless when nothing is watched
    ew.unwatch(fd)


def test_watch_read_replaces_the_earlier_reader(ew, pair):
    a, b = pair
    seen = []
    ew.watch_read(a.fileno(), lambda: seen.append("old"))
    ew.watch_read(a.fileno(), lambda: (seen.append("new"), a.recv(10)))
    b.send(b"x")
    ew.run_until(lambda: seen, timeout=5)
    assert seen == ["new"]


def test_callback_that_unwatches_another_fd_stops_it_running_in_the_same_turn(ew, pair, pair2):
    (a, b), (c, d) = pair, pair2
    ran: list[str] = []

    def on_a() -> None:
        ran.append("a")
        a.recv(10)
        ew.unwatch(c.fileno())

    def on_c() -> None:
        ran.append("c")
        c.recv(10)
        ew.unwatch(a.fileno())

    ew.watch_read(a.fileno(), on_a)
    ew.watch_read(c.fileno(), on_c)
    b.send(b"1")
    d.send(b"1")
    # Both are readable before the turn; whichever runs first unwatches the other.
    ew.run_until(lambda: ran, timeout=5)
    turns(ew, 3)
    assert ran in (["a"], ["c"])


def test_callback_that_unwatches_its_own_writer_is_not_called_for_write(ew, pair):
    a, b = pair
    ran: list[str] = []

    def on_read() -> None:
        ran.append("read")
        a.recv(10)
        ew.unwatch_write(a.fileno())

    ew.watch_read(a.fileno(), on_read)
    ew.watch_write(a.fileno(), lambda: ran.append("write"))
    b.send(b"x")
    ew.run_once(1)  # readable and writable in the same turn; read runs first
    assert ran == ["read"]


# ------------------------------------------------------------------ callbacks
def test_call_soon_runs_callbacks_in_order_with_their_arguments(ew):
    got: list[object] = []
    for i in range(5):
        ew.call_soon(got.append, i)
    ew.call_soon(lambda *args: got.append(args), "x", "y")
    ew.run_until(lambda: len(got) == 6, timeout=5)
    assert got == [0, 1, 2, 3, 4, ("x", "y")]


def test_call_later_fires_in_deadline_order_and_cancel_prevents_firing(ew):
    got: list[str] = []
    ew.call_later(0.03, got.append, "third")
    ew.call_later(0.01, got.append, "first")
    cancelled = ew.call_later(0.015, got.append, "cancelled")
    ew.call_later(0.02, got.append, "second")
    ew.call_later(0.0, got.append, "now-1")
    ew.call_later(0.0, got.append, "now-2")  # same deadline: scheduling order
    cancelled.cancel()
    ew.run_until(lambda: "third" in got, timeout=5)
    turns(ew, 2)
    assert got == ["now-1", "now-2", "first", "second", "third"]
    assert "cancelled" in repr(cancelled)


def test_cancelling_a_timer_that_already_ran_is_harmless(ew):
    got = []
    handle = ew.call_later(0, got.append, 1)
    ew.run_until(lambda: got, timeout=5)
    handle.cancel()
    turns(ew, 2)
    assert got == [1]


def test_timer_fires_only_once(ew):
    got = []
    ew.call_later(0, got.append, 1)
    ew.run_until(lambda: got, timeout=5)
    turns(ew, 3, timeout=0)
    assert got == [1]


def test_self_rescheduling_callback_does_not_starve_sockets(ew, pair):
    a, b = pair
    spins = 0
    read: list[bytes] = []

    def spin() -> None:
        nonlocal spins
        spins += 1
        ew.call_soon(spin)

    ew.call_soon(spin)
    ew.watch_read(a.fileno(), lambda: read.append(a.recv(10)))
    b.send(b"hi")
    ew.run_until(lambda: read, timeout=5)
    # Callbacks added during a turn wait for the next one, so the socket is
    # seen within a turn or two, however busy the spinner is.
    assert spins <= 2
    assert read == [b"hi"]


def test_self_rescheduling_callback_does_not_starve_timers(ew):
    fired = []
    spins = 0

    def spin() -> None:
        nonlocal spins
        spins += 1
        if not fired:
            ew.call_soon(spin)

    ew.call_soon(spin)
    ew.call_later(0.01, fired.append, True)
    ew.run_until(lambda: fired, timeout=5)
    assert fired == [True]


def test_tracer_sees_every_kind_of_dispatch(ew, pair):
    a, b = pair
    kinds: list[str] = []
    ew.tracer = lambda kind, what: kinds.append(kind)
    ew.watch_read(a.fileno(), lambda: (a.recv(10), ew.unwatch_read(a.fileno())))
    ew.watch_write(b.fileno(), lambda: ew.unwatch_write(b.fileno()))
    ew.call_soon(lambda: None)
    done = []
    ew.call_later(0, done.append, 1)
    b.send(b"x")
    ew.run_until(lambda: done, timeout=5)
    assert {"read", "write", "soon", "timer"} <= set(kinds)


# --------------------------------------------------------------------- threads
def test_call_soon_and_stop_from_another_thread_wake_a_blocked_loop(ew):
    started = threading.Event()
    delivered = threading.Event()
    got: list[str] = []
    safety_fired: list[bool] = []

    def other_thread() -> None:
        if not started.wait(5):
            return
        # The loop is (almost certainly) blocked in select with a 5 s timer as
        # its only deadline: only the wake-up socket can get it out early.
        threading.Event().wait(0.05)
        ew.call_soon(lambda: (got.append("from thread"), delivered.set()))
        if not delivered.wait(5):
            return
        threading.Event().wait(0.05)
        ew.stop()

    def safety() -> None:
        safety_fired.append(True)
        ew.stop()

    guard = ew.call_later(5.0, safety)
    ew.call_soon(started.set)
    thread = threading.Thread(target=other_thread, name="waker")
    thread.start()
    try:
        ew.run()
    finally:
        started.set()
        delivered.set()
        thread.join(5)
    guard.cancel()
    assert not thread.is_alive()
    assert got == ["from thread"]
    assert safety_fired == []  # woken by the thread, not by the safety timer


def from_other_thread(fn, *args) -> None:
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()


class RacyWakeReader:
    """Stands in for the loop's wake-up socket: the first time the loop drains
    it, another thread calls ``call_soon`` right inside the drain, the narrowest
    window of the race between the wake-up flag and the wake-up byte."""

    def __init__(self, ew: EventWatcher, real: socket.socket) -> None:
        self.ew, self.real, self.raced = ew, real, False

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()

    def recv(self, size: int) -> bytes:
        if not self.raced:
            self.raced = True
            from_other_thread(self.ew.call_soon, lambda: None)
        return self.real.recv(size)


def test_wakeup_during_a_drain_is_not_lost_for_later_wakeups(ew):
    ew._wake_r = RacyWakeReader(ew, ew._wake_r)  # white-box: reproduce the race exactly
    # A call_soon from another thread while the loop runs sends a wake-up byte.
    ew.call_soon(from_other_thread, ew.call_soon, lambda: None)
    for _ in range(3):
        ew.run_once(0.05)
    assert ew._wake_r.raced

    # Later, a blocked loop (only a 5 s safety timer pending) must still be woken.
    safety_fired: list[bool] = []
    guard = ew.call_later(5.0, lambda: (safety_fired.append(True), ew.stop()))
    thread = threading.Thread(target=lambda: (threading.Event().wait(0.05), ew.call_soon(ew.stop)))
    thread.start()
    try:
        ew.run()
    finally:
        thread.join(5)
    guard.cancel()
    assert safety_fired == []


def test_run_until_raises_timeout_error_when_condition_never_comes(ew):
    with pytest.raises(TimeoutError, match="not met within"):
        ew.run_until(lambda: False, timeout=0.05)
    # and the loop still works afterwards
    got = []
    ew.call_soon(got.append, 1)
    ew.run_until(lambda: got, timeout=5)


def test_run_until_reports_a_stop_before_the_condition(ew):
    ew.call_soon(ew.stop)
    with pytest.raises(RuntimeError, match="stopped"):
        ew.run_until(lambda: False, timeout=5)


def test_run_returns_after_stop_from_a_callback(ew):
    ew.call_later(0.01, ew.stop)
    ew.run()
    # stop() is not sticky: a later run() runs again until the next stop
    got = []
    ew.call_soon(got.append, 1)
    ew.call_soon(ew.stop)
    ew.run()
    assert got == [1]


# ---------------------------------------------------------------------- errors
def test_exception_from_call_soon_propagates_and_loop_runs_again(ew):
    got: list[str] = []

    def boom() -> None:
        raise ValueError("bug in a callback")

    ew.call_soon(boom)
    ew.call_soon(got.append, "after")
    with pytest.raises(ValueError, match="bug in a callback"):
        ew.run_once(0)
    # The callback queued behind the failing one is not lost.
    ew.run_until(lambda: got, timeout=5)
    assert got == ["after"]


def test_exception_from_read_callback_propagates_and_loop_runs_again(ew, pair):
    a, b = pair
    got: list[bytes] = []

    def bad_reader() -> None:
        a.recv(10)
        raise KeyError("reader")

    ew.watch_read(a.fileno(), bad_reader)
    b.send(b"x")
    with pytest.raises(KeyError):
        ew.run_until(lambda: False, timeout=5)
    ew.watch_read(a.fileno(), lambda: got.append(a.recv(10)))
    b.send(b"y")
    ew.run_until(lambda: got, timeout=5)
    assert got == [b"y"]


def test_exception_from_timer_propagates(ew):
    def boom() -> None:
        raise RuntimeError("timer bug")

    ew.call_later(0, boom)
    with pytest.raises(RuntimeError, match="timer bug"):
        ew.run_until(lambda: False, timeout=5)


# --------------------------------------------------------------------- closing
def test_close_is_idempotent_and_releases_its_descriptors(fds):
    before = fds()
    ew = EventWatcher()
    assert len(fds() - before) >= 3  # selector + the wake-up socket pair
    ew.close()
    ew.close()
    assert ew.closed
    assert fds() - before == set()
    with pytest.raises(RuntimeError, match="closed"):
        ew.run_once(0)
    with pytest.raises(RuntimeError, match="closed"):
        ew.call_later(1, print)
    assert "closed" in repr(ew)


def test_context_manager_closes_the_watcher():
    with EventWatcher() as ew:
        assert not ew.closed
    assert ew.closed


def test_cross_thread_call_soon_after_close_is_harmless():
    ew = EventWatcher()
    ew.close()
    thread = threading.Thread(target=ew.stop)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()


# --------------------------------------------------------------------- asyncio
def test_reactor_runs_inside_a_running_asyncio_loop(ew, pair):
    """A Jupyter kernel runs cells inside an asyncio loop: the reactor must not care."""
    a, b = pair
    got: list[bytes] = []

    async def cell() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        ew.watch_read(a.fileno(), lambda: got.append(a.recv(10)))
        ew.call_later(0.01, b.send, b"inside")
        ew.run_until(lambda: got, timeout=5)  # synchronous, like a notebook cell
        assert asyncio.get_running_loop() is loop
        return loop

    loop = asyncio.run(cell())
    assert loop.is_closed()
    assert got == [b"inside"]


def test_core_package_does_not_import_asyncio():
    code = "import sys, barknet; print('asyncio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_stop_from_another_thread_before_run_starts_is_not_lost(ew) -> None:
    stopper = threading.Thread(target=ew.stop)
    stopper.start()
    stopper.join(5)
    fired = []
    guard = ew.call_later(5.0, lambda: (fired.append(True), ew.stop()))
    ew.run()  # returns at once; without the early stop only the guard would end it
    assert not fired
    guard.cancel()
    ew.call_soon(ew.stop)
    ew.run()  # the flag was reset: this run turns until the next stop


@pytest.mark.parametrize("far", [1e9, math.inf], ids=["31 years", "never"])
def test_a_timer_further_away_than_the_kernel_can_sleep_does_not_break_the_loop(
    ew, pair, far: float
) -> None:
    """epoll waits at most about 24.8 days: a timer further away (or a timeout that
    long) is slept in naps of MAX_WAIT, not handed to the kernel whole."""
    a, b = pair
    woke: list[bool] = []
    ew.watch_read(a.fileno(), lambda: woke.append(bool(a.recv(1))))
    ew.call_later(far, lambda: None)  # the nearest timer
    b.send(b"x")
    ew.run_once()  # no OverflowError: the wait is capped, and the socket wakes it
    b.send(b"y")
    ew.run_once(far)
    assert woke == [True, True]


@pytest.mark.parametrize("timeout", [-1.0, -1e9, math.nan, 0.0])
def test_run_once_with_no_time_to_wait_does_not_wait(timeout: float) -> None:
    """A negative wait means "for ever" to epoll: run_once(-1) must not hand it
    over (nor NaN). With nothing ready, the turn ends at once; a thread wakes
    the loop after 5 s at the latest, so a wrong wait cannot hang the suite."""
    with EventWatcher() as ew:
        rescue = threading.Timer(5.0, ew.call_soon, args=(lambda: None,))
        rescue.start()
        try:
            ew.run_once(timeout)
            assert rescue.is_alive(), "run_once waited until it was woken"
        finally:
            rescue.cancel()
            rescue.join()


def test_timers_set_and_cancelled_for_every_read_leave_no_heap_behind() -> None:
    """A deadline set and cancelled per read (a frame_timeout under load) must not
    keep an entry per read until the timeout: 100,000 such timers, 30 s away,
    behind one live one, cost the loop's memory next to nothing once cancelled."""
    import tracemalloc

    with EventWatcher() as ew:
        live = ew.call_later(10.0, lambda: None)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(100_000):
                ew.call_later(30.0, lambda: None).cancel()
            ew.run_once(0)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 256 * 1024, f"{grown:,} bytes still held"  # (kept: about 20 MB)
        assert not live.cancelled


def test_timers_fire_in_order_after_the_cancelled_ones_were_cleaned_out() -> None:
    fired: list[int] = []
    with EventWatcher() as ew:
        handles = [ew.call_later(0.001 * (i % 37), fired.append, i) for i in range(600)]
        for i, handle in enumerate(handles):
            if i % 3:
                handle.cancel()  # 400 of 600: the next call_later cleans the heap
        ew.call_later(0.05, fired.append, -1)
        ew.run_until(lambda: fired and fired[-1] == -1, timeout=5)
    live = [i for i in range(600) if i % 3 == 0]
    # By deadline, and in the order they were set for the same deadline.
    assert fired == [*sorted(live, key=lambda i: (handles[i].when, i)), -1]


def test_run_until_with_a_nan_timeout_times_out_at_once_instead_of_spinning(ew) -> None:
    """run_until is how tests and cells stay bounded: a NaN timeout (as run_once
    reads a NaN wait: not at all) must end the wait, not turn it into a busy loop
    that never reaches its deadline."""
    safety = threading.Timer(2.0, ew.stop)  # (a loop that spins is stopped: RuntimeError)
    safety.start()
    try:
        with pytest.raises(TimeoutError):
            ew.run_until(lambda: False, timeout=math.nan)
    finally:
        safety.cancel()
        safety.join()
    assert ew.turns == 0
