"""Shared fixtures for barknet's tests.

Theory of operation
-------------------
Every test that touches sockets needs the same three things: an event loop that
is closed whatever happens, servers and clients that are closed before the loop
is, and a check that nothing was left behind. The fixtures here provide them so
each test reads as the behaviour it pins:

* ``ew``: an :class:`~barknet.EventWatcher`, closed after the test.
* ``fds``: a function listing the open descriptors.
* ``no_leaks``: fails the test if it left a file descriptor or a thread behind.
  Modules opt in with ``pytestmark = pytest.mark.usefixtures("no_leaks")``;
  ``usefixtures`` fixtures are set up before (and torn down after) the ones a
  test names, so the check sees the state after every transport was closed.
* ``framed_endpoint`` / ``framed_server`` / ``framed_client``: factories for loopback
  :class:`~barknet.FramedTransport` endpoints that record their events and the
  frames they received per peer (a server echoes by default). Everything they
  create is closed when the test ends, before ``ew`` is.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOEvent, IOStatus, Peer, TcpTransport


def open_fds() -> set[tuple[int, str]]:
    """The process's open descriptors as ``(fd, target)`` pairs."""
    result = set()
    for name in os.listdir("/proc/self/fd"):
        # The descriptor listdir itself used is closed by now: skip it.
        with contextlib.suppress(OSError):
            result.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
    return result


@pytest.fixture
def fds() -> Callable[[], set[tuple[int, str]]]:
    """``fds()`` lists the open descriptors, for tests that compare before and after."""
    return open_fds


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a descriptor open or a thread running."""
    fds = open_fds()
    threads = set(threading.enumerate())
    yield
    leaked_fds = open_fds() - fds
    leaked_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not leaked_fds, f"descriptors left open: {sorted(leaked_fds)}"
    assert not leaked_threads, f"threads left running: {leaked_threads}"


@pytest.fixture
def ew() -> Iterator[EventWatcher]:
    """An event loop, closed after the test."""
    watcher = EventWatcher()
    try:
        yield watcher
    finally:
        watcher.close()


class FramedEndpoint:
    """A FramedTransport plus what happened to it: events, and frames per peer.

    ``echo=True`` sends every received frame back to its sender (a server);
    ``auto_read=False`` leaves READABLE unanswered, for tests that pull by hand.
    """

    def __init__(
        self, ew: EventWatcher, transport: FramedTransport, *, echo: bool, auto_read: bool = True
    ) -> None:
        self.ew = ew
        self.transport = transport
        self.echo = echo
        self.auto_read = auto_read
        self.events: list[IOEvent] = []
        self.frames: defaultdict[Peer, list[bytes]] = defaultdict(list)
        self.on_event: Callable[[IOEvent], None] | None = None
        self.address: tuple[str, int] | None = None  # set for servers
        transport.attach(ew, self._replay)

    def _replay(self, event: IOEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.READABLE and self.auto_read:
            peer = event.peer
            while (r := self.transport.resume_read(peer)).status is IOStatus.OK:
                self.frames[peer].append(bytes(r.data))
                if self.echo:
                    self.transport.resume_write(r.data, peer)
        if self.on_event is not None:
            self.on_event(event)

    # What the tests ask about.
    def of_kind(self, kind: EventKind, peer: Peer | None = None) -> list[IOEvent]:
        return [e for e in self.events if e.kind is kind and (peer is None or e.peer == peer)]

    def closed(self, peer: Peer | None = None) -> list[IOEvent]:
        return self.of_kind(EventKind.CLOSED, peer)

    def accepted(self) -> list[Peer]:
        return [e.peer for e in self.of_kind(EventKind.ACCEPTED)]

    def is_connected(self, peer: Peer) -> bool:
        return bool(self.of_kind(EventKind.CONNECTED, peer))


@pytest.fixture
def framed_endpoint(ew: EventWatcher) -> Iterator[Callable[..., FramedEndpoint]]:
    """``framed_endpoint(transport, echo=False, auto_read=True)``: attach ``transport``
    (e.g. one you will ``adopt`` a socket into) to ``ew`` with recording; it is
    closed after the test."""
    made: list[FramedTransport] = []

    def make(
        transport: FramedTransport, *, echo: bool = False, auto_read: bool = True
    ) -> FramedEndpoint:
        made.append(transport)
        return FramedEndpoint(ew, transport, echo=echo, auto_read=auto_read)

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def framed_server(
    framed_endpoint: Callable[..., FramedEndpoint],
) -> Callable[..., FramedEndpoint]:
    """``framed_server(echo=True, sndbuf=None, rcvbuf=None, **framed_options)``: a bound
    loopback server; its address is ``.address``."""

    def make(
        *, echo: bool = True, sndbuf: int | None = None, rcvbuf: int | None = None, **kw: Any
    ) -> FramedEndpoint:
        transport = FramedTransport(TcpTransport(sndbuf=sndbuf, rcvbuf=rcvbuf), **kw)
        endpoint = framed_endpoint(transport, echo=echo)
        endpoint.address = transport.bind()
        return endpoint

    return make


@pytest.fixture
def framed_client(
    framed_endpoint: Callable[..., FramedEndpoint],
) -> Callable[..., FramedEndpoint]:
    """``framed_client(address, sndbuf=None, rcvbuf=None, **framed_options)``: a client
    transport aimed at ``address`` (call ``.transport.connect()`` for each peer)."""

    def make(
        address: tuple[str, int],
        *,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        **kw: Any,
    ) -> FramedEndpoint:
        host, port = address
        inner = TcpTransport(host, port, sndbuf=sndbuf, rcvbuf=rcvbuf)
        return framed_endpoint(FramedTransport(inner, **kw))

    return make
