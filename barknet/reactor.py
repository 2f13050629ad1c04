"""The reactor: one thread, one readiness loop (epoll), callbacks and timers.

Theory of operation
-------------------
Each turn of the loop (one :meth:`EventWatcher.run_once`; ``run`` and
``run_until`` make turn after turn) does three things:

1. Ask the kernel which watched file descriptors are ready (``epoll`` on
   Linux, ``poll`` elsewhere), sleeping no longer than the nearest timer allows
   (and not at all when callbacks are already waiting).
2. Call the read or write callback of each ready descriptor.
3. Move due timers to the ready queue, then run the callbacks that were ready
   when this step began. Callbacks added meanwhile wait for the next turn, so
   a callback that reschedules itself cannot starve the sockets.

Callbacks may watch and unwatch descriptors (their own or others') while the
loop dispatches. Each watched descriptor has one *registration*; the loop
looks up the registrations of the ready descriptors as soon as the kernel
answers, before any callback runs (asyncio keeps them as selector keys for the
same reason), and skips one that was cancelled meanwhile, or whose callback for
that direction was removed. So a callback
that closes fd N and opens a new socket that gets number N again in the same
turn cannot hand the old socket's readiness to the new one.

The loop is not re-entrant: a callback that calls ``run``, ``run_once`` or
``run_until`` gets ``RuntimeError("... already running")``, as in asyncio.
Schedule the work with :meth:`EventWatcher.call_soon` instead. ``close()``
from a callback is allowed: the turn ends there and ``run`` returns.

Why not :mod:`selectors`? It asks the same ``epoll`` and then wraps every
ready descriptor in a key object, in Python, on every turn: for a loop that
turns once per message that is work without a lesson in it. ``epoll.poll``
answers with plain ``(fd, mask)`` pairs made in C, and the registration table
here is the part of ``selectors`` the loop actually needs.

Another thread may call :meth:`call_soon` or :meth:`stop`; the loop is woken
through a socket pair it watches itself. The loop never touches asyncio, so it
runs happily inside a Jupyter kernel, which already runs an asyncio loop.

An exception raised by a callback is a bug in that callback: it propagates out
of ``run*`` so a test or a notebook shows it at once. The loop stays
consistent, and you may run it again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["EventWatcher", "TimerHandle"]

Callback = Callable[..., Any]

# Readiness straight from the kernel: epoll where there is one (Linux), else poll.
# Both take register(fd, mask) / modify / unregister and answer poll() with
# (fd, mask) pairs; they differ in the names of the masks and in poll's timeout,
# which is in milliseconds.
if hasattr(select, "epoll"):
    _new_poller: Callable[[], Any] = select.epoll
    _READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
    _TIMEOUT_SCALE = 1.0
else:  # pragma: no cover - macOS and the BSDs
    _new_poller = select.poll
    _READ, _WRITE = select.POLLIN, select.POLLOUT
    _TIMEOUT_SCALE = 1000.0

#: Cancelled timers the heap may hold before it is cleaned in one go (then again
#: only once they are half of it: each entry is looked at O(1) times on average).
_CANCELLED_KEPT = 100

#: The longest one turn sleeps, in seconds. The kernel refuses longer waits (epoll
#: counts milliseconds in an int: about 24.8 days), so a timer further away than
#: this, or a timeout that long, is reached in several naps instead of one.
MAX_WAIT = 3600.0


class TimerHandle:
    """A callback scheduled with :meth:`EventWatcher.call_later`; ``cancel()`` it at will."""

    __slots__ = ("args", "callback", "cancelled", "watcher", "when")

    def __init__(
        self,
        when: float,
        callback: Callback,
        args: tuple[Any, ...],
        watcher: EventWatcher | None = None,
    ) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.watcher = watcher  # told of a cancel, to drop cancelled timers in bulk

    def cancel(self) -> None:
        """Stop the callback from running; harmless if it already ran."""
        if not self.cancelled:
            self.cancelled = True
            if self.watcher is not None:
                self.watcher._cancelled_timers += 1

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else f"at {self.when:.6f}"
        return f"<TimerHandle {getattr(self.callback, '__qualname__', self.callback)} {state}>"


class _Registration:
    """What one watched descriptor calls: its reader and its writer.

    It lives from the ``register`` to the ``unregister`` of its fd and is then
    marked ``cancelled``, so readiness the kernel reported for it is dropped
    even if the same fd number is registered again within the turn.
    """

    __slots__ = ("cancelled", "reader", "writer")

    def __init__(self) -> None:
        self.reader: Callback | None = None
        self.writer: Callback | None = None
        self.cancelled = False

    @property
    def mask(self) -> int:
        return (_READ if self.reader is not None else 0) | (
            _WRITE if self.writer is not None else 0
        )


class EventWatcher:
    """An event loop over ``epoll`` (``poll`` where there is no epoll).

    Use it as a context manager so its poller and wake-up sockets are released::

        with EventWatcher() as ew:
            ew.call_later(0.01, ew.stop)
            ew.run()

    ``tracer``, when set, is called as ``tracer(kind, what)`` before every
    dispatch (``kind`` is ``"read"``, ``"write"``, ``"timer"`` or ``"soon"``), so a
    notebook can draw what fired when.
    """

    def __init__(self) -> None:
        self._poller = _new_poller()
        self._registrations: dict[int, _Registration] = {}
        self._ready: deque[tuple[Callback, tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        #: Timers cancelled since the heap was last cleaned (some may have left it).
        self._cancelled_timers = 0
        self._timer_seq = itertools.count()
        self._stopping = False
        self._running = False
        self._closed = False
        self._thread_id: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self.tracer: Callable[[str, Any], None] | None = None
        #: Turns made so far. A transport compares it to tell "written in this
        #: turn" from "written in an earlier one" without scheduling anything.
        self.turns = 0
        self.watch_read(self._wake_r.fileno(), self._drain_wakeup)

    # ----------------------------------------------------------- descriptors
    def watch_read(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (replaces any earlier reader)."""
        self._set(fd, 0, callback)

    def watch_write(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fd`` is writable (replaces any earlier writer)."""
        self._set(fd, 1, callback)

    def unwatch_read(self, fd: int) -> None:
        """Stop calling the reader of ``fd``; harmless if there is none."""
        self._set(fd, 0, None)

    def unwatch_write(self, fd: int) -> None:
        """Stop calling the writer of ``fd``; harmless if there is none."""
        self._set(fd, 1, None)

    def unwatch(self, fd: int) -> None:
        """Forget ``fd`` entirely. Call it before closing the socket behind ``fd``."""
        registration = self._registrations.pop(fd, None)
        if registration is not None:
            registration.cancelled = True
            self._unregister(fd)

    def _unregister(self, fd: int) -> None:
        # A socket closed before it was unwatched has already left the epoll set
        # (the kernel drops it with the last reference); saying so again is EBADF.
        with contextlib.suppress(OSError):
            self._poller.unregister(fd)

    def is_watching(self, fd: int) -> bool:
        return fd in self._registrations

    def _set(self, fd: int, slot: int, callback: Callback | None) -> None:
        # register / modify / unregister, depending on what is left watched.
        self._check_open()
        registration = self._registrations.get(fd)
        if registration is None:
            if callback is None:
                return
            registration = _Registration()
            self._set_slot(registration, slot, callback)
            self._poller.register(fd, registration.mask)
            self._registrations[fd] = registration
            return
        old_mask = registration.mask
        self._set_slot(registration, slot, callback)
        new_mask = registration.mask
        if new_mask == 0:
            del self._registrations[fd]
            registration.cancelled = True
            self._unregister(fd)
        elif new_mask != old_mask:
            self._poller.modify(fd, new_mask)

    @staticmethod
    def _set_slot(registration: _Registration, slot: int, callback: Callback | None) -> None:
        if slot == 0:
            registration.reader = callback
        else:
            registration.writer = callback

    # ------------------------------------------------------------- callbacks
    def call_soon(self, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` on the next turn. Safe to call from any thread."""
        self._ready.append((callback, args))  # deque.append is atomic
        if self._thread_id is not None and threading.get_ident() != self._thread_id:
            self._wakeup()

    def call_later(self, delay: float, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds. Call from the loop's thread
        (or before it runs); from another thread, wrap it in :meth:`call_soon`."""
        self._check_open()
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback, args, self)
        timers = self._timers
        if self._cancelled_timers > _CANCELLED_KEPT and 2 * self._cancelled_timers > len(timers):
            # Cancelled timers leave the heap when they reach its front, or all at
            # once when they are most of it: a deadline set and cancelled for
            # every read (a frame_timeout) would otherwise leave one entry per
            # read for the whole timeout, a heap that grows with the traffic.
            timers[:] = [entry for entry in timers if not entry[2].cancelled]
            heapq.heapify(timers)
            self._cancelled_timers = 0
        heapq.heappush(timers, (handle.when, next(self._timer_seq), handle))
        return handle

    def time(self) -> float:
        """The loop's clock (``time.monotonic``)."""
        return time.monotonic()

    # ------------------------------------------------------------------ run
    def run_once(self, timeout: float | None = None) -> None:
        """One turn: wait up to ``timeout`` seconds (None: until something happens;
        zero, negative or NaN: not at all).

        Raises ``RuntimeError`` if the loop is already running (you called it
        from a callback, or from another thread while the loop runs).
        """
        previous = self._start_running()
        try:
            self._turn(timeout)
        finally:
            self._stop_running(previous)

    def _start_running(self) -> int | None:
        """Mark the loop as running on this thread; return the thread it had before.

        ``run`` and ``run_until`` do this once for all their turns, not once per
        turn: each turn is then one call, :meth:`_turn`.
        """
        if self._running or self._closed:
            self._refuse_to_run()
        self._running = True
        # Say which thread runs the loop *before* looking at the ready queue, so a
        # call_soon from another thread either is seen there or wakes the poll.
        previous, self._thread_id = self._thread_id, threading.get_ident()
        return previous

    def _stop_running(self, previous: int | None) -> None:
        self._thread_id = previous
        self._running = False

    def _refuse_to_run(self) -> None:
        self._check_open()
        raise RuntimeError(
            "this EventWatcher is already running: a callback may not run the loop "
            "again (use call_soon or call_later to do the work on a later turn)"
        )

    def _check_not_running(self) -> None:
        if self._running:
            self._refuse_to_run()

    def _turn(self, timeout: float | None) -> None:
        self.turns += 1
        # 0. How long may we sleep? Not at all if callbacks wait; at most until
        # the nearest timer.
        if self._ready:
            timeout = 0.0
        elif self._timers:
            self._drop_cancelled_timers()
            if self._timers:
                until_timer = max(0.0, self._timers[0][0] - time.monotonic())
                timeout = until_timer if timeout is None else min(timeout, until_timer)
        if timeout is not None:
            # (Not `max(0, ...)`: epoll would read a negative wait as "for ever",
            # and `max` lets NaN through.)
            timeout = min(timeout, MAX_WAIT) * _TIMEOUT_SCALE if timeout > 0 else 0.0
        # 1. Ask the kernel, and take the registrations current *now*: a callback
        # below may close fd N and a new socket may get number N within this turn.
        registrations = self._registrations
        ready = []
        for fd, mask in self._poller.poll(timeout):
            registration = registrations.get(fd)
            if registration is not None:
                ready.append((registration, mask))
        # 2. Dispatch. An error or hang-up (any bit but "writable") wakes the
        # reader, and any bit but "readable" the writer, so both learn of it.
        tracer = self.tracer
        for registration, mask in ready:
            if mask & ~_WRITE:
                reader = registration.reader
                if reader is not None and not registration.cancelled:
                    if tracer is not None:
                        tracer("read", reader)
                    reader()
            if mask & ~_READ:
                writer = registration.writer  # the reader may have changed it
                if writer is not None and not registration.cancelled:
                    if tracer is not None:
                        tracer("write", writer)
                    writer()
        # 3. Timers that are due, then the callbacks that were ready before this step.
        if self._timers:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                handle = heapq.heappop(self._timers)[2]
                if not handle.cancelled:
                    self._ready.append((self._fire_timer, (handle,)))
        if not self._ready:
            return  # the usual turn of a busy server: nothing was scheduled
        for _ in range(len(self._ready)):
            if self._closed:  # a callback closed the loop: the turn ends here
                return
            callback, args = self._ready.popleft()
            # `!=`, not `is not`: each `self._fire_timer` is a new bound-method object.
            if tracer is not None and callback != self._fire_timer:
                tracer("soon", callback)
            callback(*args)

    def _fire_timer(self, handle: TimerHandle) -> None:
        if not handle.cancelled:
            handle.cancelled = True  # a timer runs once
            if self.tracer is not None:
                self.tracer("timer", handle.callback)
            handle.callback(*handle.args)

    def _drop_cancelled_timers(self) -> None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)

    def run(self) -> None:
        """Turn until :meth:`stop` is called (from a callback or another thread).

        A ``stop()`` that arrives before ``run()`` starts is not lost: ``run()``
        then makes no turn and returns at once. A callback that closes the
        watcher also ends ``run()``.
        """
        previous = self._start_running()
        try:
            while not self._stopping and not self._closed:
                self._turn(None)
        finally:
            self._stop_running(previous)
        self._stopping = False

    def run_until(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Turn until ``predicate()`` is true; raise ``TimeoutError`` after ``timeout`` s.

        This is how tests and notebook cells stay bounded: they never wait forever.
        A ``stop()`` that arrived before (or during) the wait is not lost, as with
        :meth:`run`: it ends the wait with ``RuntimeError``, unless the condition
        already holds (then the stop stays pending for the next run).
        """
        previous = self._start_running()
        try:
            deadline = time.monotonic() + timeout
            while not predicate():
                if self._closed:
                    raise RuntimeError("the loop was closed before the condition was met")
                if self._stopping:
                    self._stopping = False
                    raise RuntimeError("loop stopped before the condition was met")
                left = deadline - time.monotonic()
                if not left > 0:  # (not `left <= 0`: a NaN timeout must end too)
                    raise TimeoutError(f"condition not met within {timeout:g} s")
                self._turn(min(left, 0.1))
        finally:
            self._stop_running(previous)

    def stop(self) -> None:
        """Make :meth:`run` return after the current turn. Safe from any thread,
        and from a signal handler.

        A signal handler runs on the loop's own thread, but *after* the select it
        interrupted, which PEP 475 then restarts with the old timeout: only a
        wake-up byte gets it out. So while the loop runs, stop() always sends one
        (the next turn drains it).
        """
        self._stopping = True
        if self._thread_id is not None:
            self._wakeup()

    # ---------------------------------------------------------------- wakeup
    def _wakeup(self) -> None:
        if self._woken:
            return
        self._woken = True
        # A full pipe means a wake-up is pending anyway; an error, that we are closing.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _drain_wakeup(self) -> None:
        # Drain first, clear the flag after: cleared first, a wake-up sent in
        # between would be drained with the flag left set, and every later
        # cross-thread call_soon/stop would skip its wake-up. A callback queued
        # while the flag is still set runs anyway: the ready queue is read after
        # this (and its wake-up byte is not needed).
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._woken = False

    # --------------------------------------------------------------- closing
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EventWatcher is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the selector and wake-up sockets; drop every callback. Idempotent.

        The watcher does not own the descriptors it watches: close your
        transports first, they close their sockets (and send what they queued;
        a transport closed after its loop can only drop that, and no CLOSED
        comes). Called from a callback, it ends the current turn (nothing else
        runs) and makes ``run`` return.
        """
        if self._closed:
            return
        self._closed = True
        for registration in self._registrations.values():
            registration.cancelled = True
        self._registrations.clear()
        self._ready.clear()
        self._timers.clear()
        close = getattr(self._poller, "close", None)  # epoll has one, poll does not
        if close is not None:
            close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> EventWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._registrations)} fds"
        return f"<EventWatcher {state}, {len(self._ready)} ready, {len(self._timers)} timers>"
