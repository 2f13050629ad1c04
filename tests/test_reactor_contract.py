"""The reactor's contract with its callbacks: no re-entrant runs, a safe close()
from a callback, readiness that goes to the registration it was reported for,
stop() never lost, cancelled timers never fired."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def pairs() -> Iterator[list[socket.socket]]:
    """Two socket pairs, non-blocking; closed after the test (those still open)."""
    made: list[socket.socket] = []
    for _ in range(2):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made += [a, b]
    try:
        yield made
    finally:
        for sock in made:
            sock.close()


def _fill(sock: socket.socket) -> None:
    """Send until the socket's buffers are full, so it is no longer writable."""
    chunk = bytes(65536)
    while True:
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


# ------------------------------------------------------------------ re-entrancy
@pytest.mark.parametrize(
    "reenter",
    [
        pytest.param(lambda ew: ew.run_once(0), id="run_once"),
        pytest.param(lambda ew: ew.run_until(lambda: False, timeout=1), id="run_until"),
        # refused before the condition is even looked at, true or not
        pytest.param(lambda ew: ew.run_until(lambda: True, timeout=1), id="run_until-true"),
        pytest.param(lambda ew: ew.run(), id="run"),
    ],
)
def test_a_callback_that_runs_the_loop_gets_already_running_and_the_turn_goes_on(ew, reenter):
    ran: list[str] = []
    refused: list[RuntimeError] = []

    def reenters() -> None:
        ran.append("reenters")
        try:
            reenter(ew)
        except RuntimeError as exc:
            refused.append(exc)

    ew.call_soon(reenters)
    ew.call_soon(ran.append, "second")
    ew.call_soon(ran.append, "third")
    ew.call_soon(ew.stop)  # (so that a re-entrant run() that was let in would end)
    ew.run_once(0)
    assert len(refused) == 1
    assert "already running" in str(refused[0])
    assert ran == ["reenters", "second", "third"]  # each once, in order, in this turn
    # and the loop runs normally afterwards
    ew.call_soon(ran.append, "later")
    ew.run_once(0)
    assert ran[-1] == "later"


def test_close_from_a_callback_ends_the_turn_and_run_returns(ew):
    ran: list[str] = []

    def closes() -> None:
        ran.append("closes")
        ew.close()

    ew.call_soon(closes)
    ew.call_soon(ran.append, "never")
    ew.call_later(0, ran.append, "timer, never")
    ew.run()  # returns: the loop is closed
    assert ran == ["closes"]
    assert ew.closed
    with pytest.raises(RuntimeError, match="closed"):
        ew.run_once(0)


# -------------------------------------------------- registrations, not fd numbers
def test_an_fd_closed_and_reused_in_one_turn_does_not_get_the_old_readiness(ew, pairs):
    """Two writable sockets; whichever callback runs first closes the other and
    opens a socket that gets the same fd number but is not writable. The new
    registration must not be called for the old socket's readiness."""
    s1, _, s2, _ = pairs
    full_a, full_b = socket.socketpair()
    full_a.setblocking(False)
    _fill(full_a)
    new_writes: list[int] = []
    opened: list[socket.socket] = []

    def swap(victim: socket.socket) -> None:
        if opened:
            return
        fd = victim.fileno()
        ew.unwatch(fd)
        victim.close()
        reused = socket.socket(fileno=os.dup(full_a.fileno()))  # lowest free fd: ours
        opened.append(reused)
        assert reused.fileno() == fd
        ew.watch_write(fd, lambda: new_writes.append(fd))

    ew.watch_write(s1.fileno(), lambda: swap(s2))
    ew.watch_write(s2.fileno(), lambda: swap(s1))
    try:
        ew.run_once(0)
        assert len(opened) == 1
        assert new_writes == []  # the old socket was writable; the new one is not
        ew.run_once(0)
        assert new_writes == []
    finally:
        for sock in opened:
            ew.unwatch(sock.fileno())
            sock.close()
        for sock in (s1, s2):
            if sock.fileno() != -1:
                ew.unwatch(sock.fileno())
        full_a.close()
        full_b.close()


# ------------------------------------------------------------------ stop and timers
def test_run_until_keeps_a_stop_that_arrived_before_it(ew):
    ew.stop()
    turns: list[int] = []
    ew.call_soon(turns.append, 1)
    with pytest.raises(RuntimeError, match="stopped"):
        ew.run_until(lambda: False, timeout=0.5)
    assert turns == []  # it made no turn, like run()
    # the stop was used up: the next wait runs normally
    ew.run_until(lambda: turns, timeout=5)


def test_run_until_leaves_an_early_stop_pending_when_the_condition_already_holds(ew):
    ew.stop()
    ew.run_until(lambda: True)
    turns: list[int] = []
    ew.call_soon(turns.append, 1)
    ew.call_later(0.2, ew.stop)  # bounds run() if the early stop were lost
    ew.run()
    assert turns == []  # run() returned at once: the early stop was kept


def test_a_timer_cancelled_earlier_in_the_same_turn_does_not_fire(ew, pairs):
    a, b, _, _ = pairs
    fired: list[str] = []
    first = ew.call_later(0, lambda: second.cancel())
    second = ew.call_later(0, fired.append, "second")
    third = ew.call_later(0, fired.append, "third")
    b.send(b"x")
    ew.watch_read(a.fileno(), lambda: (third.cancel(), ew.unwatch(a.fileno())))
    ew.call_soon(lambda: None)  # so the turn does not wait
    ew.run_once(0.05)
    ew.run_once(0)
    assert first.cancelled  # it ran
    assert fired == []
