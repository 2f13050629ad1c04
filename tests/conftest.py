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
* ``stage``: a :class:`~barknet.testing.harness.Stage` on ``ew`` (the one harness
  every test, check and notebook scenario uses); ``framed_endpoint`` /
  ``framed_server`` / ``framed_client`` are its factories for loopback
  :class:`~barknet.FramedTransport` endpoints that record their events and the
  frames they received per peer (a server echoes by default). Everything they
  create is closed when the test ends, before ``ew`` is.
* ``ca``, ``server_cert``, ``server_ctx``, ``client_ctx``: a throwaway certificate
  authority (``trustme``, one per test module), a certificate it issued for
  127.0.0.1 and localhost, and the SSL contexts of a server using it and of a
  client trusting the CA, for the TLS tests.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
import trustme

from barknet import EventWatcher
from barknet.testing.harness import Endpoint, Stage


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


@pytest.fixture
def stage(ew: EventWatcher) -> Iterator[Stage]:
    """A :class:`~barknet.testing.harness.Stage` on ``ew``: every endpoint made on it is
    closed after the test, before ``ew`` is."""
    made = Stage(ew)
    try:
        yield made
    finally:
        made.close()
        for _ in range(3):  # deliver the CLOSED events
            ew.run_once(0)


@pytest.fixture
def framed_endpoint(stage: Stage) -> Callable[..., Endpoint]:
    """``framed_endpoint(transport, echo=False, take=True)``: attach ``transport`` (e.g.
    one you will ``adopt`` a socket into) to ``ew`` with recording."""
    return stage.endpoint


@pytest.fixture
def framed_server(stage: Stage) -> Callable[..., Endpoint]:
    """``framed_server(echo=True, sndbuf=None, rcvbuf=None, **framed_options)``: a bound
    loopback server; its address is ``.address``."""
    return stage.server


@pytest.fixture
def framed_client(stage: Stage) -> Callable[..., Endpoint]:
    """``framed_client(address, sndbuf=None, rcvbuf=None, **framed_options)``: a client
    transport aimed at ``address`` (``.connect()`` for each peer)."""
    return stage.client


# ------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def server_ctx(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx
