"""One harness for driving transports on loopback in tests, checks and notebooks.

Theory of operation
-------------------
Almost every test of a transport needs the same cast: a loop, a server that
records what happened and maybe echoes, clients, and sometimes a raw socket that
misbehaves. Written five times, each copy drifts; written once, here, a test reads
as the behaviour it pins.

* :class:`Endpoint` wraps any :class:`~barknet.interfaces.ITransport` (framed or
  raw bytes) and records its events in order and the messages each peer sent.
  With ``echo=True`` it sends every message back to its sender, and obeys the
  water marks while it does (``PAUSE_WRITING``: stop reading that peer;
  ``RESUME_WRITING``: read again), so a peer that never reads its echoes costs
  bounded memory; with
  ``take=False`` it leaves ``READABLE`` unanswered so a test can pull by hand.
* :class:`Stage` owns a private :class:`~barknet.reactor.EventWatcher` and every
  endpoint and raw peer made on it, and closes them all, in the right order,
  whatever happened. Use it as a context manager.

Waits are bounded: :meth:`Stage.run_until` raises ``TimeoutError`` after a few
seconds instead of hanging.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..events import EventKind, IOEvent, IOStatus, Peer
from ..framed import FramedTransport
from ..interfaces import ITransport
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from .faults import RawPeer

__all__ = ["Endpoint", "Stage", "framed_over_tcp"]

#: How long a harness wait may last before it is declared stuck.
WAIT = 5.0


def framed_over_tcp(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sndbuf: int | None = None,
    rcvbuf: int | None = None,
    **framed_options: Any,
) -> FramedTransport:
    """A ``FramedTransport(TcpTransport(...))``, socket-buffer options split off."""
    return FramedTransport(
        TcpTransport(host, port, sndbuf=sndbuf, rcvbuf=rcvbuf), **framed_options
    )


class Endpoint:
    """A transport plus what happened to it: every event, and messages per peer."""

    def __init__(
        self, ew: EventWatcher, transport: ITransport, *, echo: bool = False, take: bool = True
    ) -> None:
        self.ew = ew
        self.transport = transport
        self.echo = echo
        self.take = take
        self.events: list[IOEvent] = []
        self.frames: defaultdict[Peer, list[bytes]] = defaultdict(list)
        #: Called after each event is recorded (and answered), for a test's own logic.
        self.on_event: Callable[[IOEvent], None] | None = None
        self.address: tuple[str, int] | None = None
        self.raws: list[RawPeer] = []
        #: Peers an echoing endpoint stopped reading (PAUSE_WRITING) until RESUME_WRITING.
        self.paused: set[Peer] = set()
        #: The first peer :meth:`connect` opened: the one a one-connection client uses.
        self.peer: Peer | None = None
        transport.attach(ew, self._on_event)

    def _on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        kind, peer = event.kind, event.peer
        if kind is EventKind.READABLE and self.take and peer not in self.paused:
            self._drain(peer)
        elif kind is EventKind.PAUSE_WRITING and self.echo:
            # An echo must not read faster than its peer reads the replies: stop
            # reading this peer until the replies queued for it drain.
            self.paused.add(peer)
            self.transport.suspend_read(peer)
        elif kind is EventKind.RESUME_WRITING and self.echo and peer in self.paused:
            self.paused.discard(peer)
            if self.take:
                self._drain(peer)  # resume_read after suspend_read reads again
        elif kind is EventKind.CLOSED:
            self.paused.discard(peer)
        if self.on_event is not None:
            self.on_event(event)

    def _drain(self, peer: Peer) -> None:
        transport = self.transport
        while peer not in self.paused and (r := transport.resume_read(peer)).status is IOStatus.OK:
            self.frames[peer].append(bytes(r.data))
            if self.echo:
                transport.resume_write(r.data, peer)

    # --- set-up
    def bind(self) -> tuple[str, int]:
        self.address = self.transport.bind()
        return self.address

    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        """Connect and wait until ``CONNECTED``; return the peer."""
        peer = self.transport.connect(address) if address else self.transport.connect()
        if self.peer is None:
            self.peer = peer
        self.ew.run_until(lambda: self.is_connected(peer) or bool(self.closed(peer)), WAIT)
        return peer

    def raw(self) -> tuple[RawPeer, Peer]:
        """A plain socket connected to this (bound) endpoint, and the peer it made here."""
        assert self.address is not None, "bind() first"
        before = len(self.accepted())
        raw = RawPeer(self.address)
        self.raws.append(raw)
        self.ew.run_until(lambda: len(self.accepted()) > before, WAIT)
        return raw, self.accepted()[-1]

    # --- traffic
    def round_trip(self, payload: bytes, peer: Peer | None = None) -> None:
        """Send one message and wait for the echo: proof that ``peer`` (by default
        :attr:`peer`) still works."""
        peer = peer or self.peer
        assert peer is not None, "connect() first"
        before = len(self.frames[peer])
        self.transport.resume_write(payload, peer)
        self.ew.run_until(lambda: len(self.frames[peer]) > before, WAIT)
        assert self.frames[peer][-1] == payload, (self.frames[peer][-1][:32], payload[:32])

    # --- what tests ask about
    def of_kind(self, kind: EventKind, peer: Peer | None = None) -> list[IOEvent]:
        return [e for e in self.events if e.kind is kind and (peer is None or e.peer == peer)]

    def of(self, peer: Peer) -> list[IOEvent]:
        return [e for e in self.events if e.peer == peer]

    def closed(self, peer: Peer | None = None) -> list[IOEvent]:
        return self.of_kind(EventKind.CLOSED, peer)

    def close_of(self, peer: Peer, timeout: float = WAIT) -> IOEvent:
        """Wait for ``peer``'s ``CLOSED`` and return it."""
        self.ew.run_until(lambda: bool(self.closed(peer)), timeout)
        return self.closed(peer)[0]

    def accepted(self) -> list[Peer]:
        return [e.peer for e in self.of_kind(EventKind.ACCEPTED)]

    def is_connected(self, peer: Peer) -> bool:
        return bool(self.of_kind(EventKind.CONNECTED, peer))

    def close(self) -> None:
        self.transport.close()
        for raw in self.raws:
            raw.close()


class Stage:
    """A private loop and everything made on it; :meth:`close` releases all of it."""

    def __init__(self, ew: EventWatcher | None = None) -> None:
        self._owns_loop = ew is None
        self.ew = EventWatcher() if ew is None else ew
        self.endpoints: list[Endpoint] = []

    def endpoint(
        self, transport: ITransport, *, echo: bool = False, take: bool = True
    ) -> Endpoint:
        """Attach ``transport`` to this stage's loop, recording what it replays."""
        made = Endpoint(self.ew, transport, echo=echo, take=take)
        self.endpoints.append(made)
        return made

    def server(
        self, transport: ITransport | None = None, *, echo: bool = True, **options: Any
    ) -> Endpoint:
        """A bound server (by default an echoing ``FramedTransport`` over TCP)."""
        take = options.pop("take", True)
        made = self.endpoint(transport or framed_over_tcp(**options), echo=echo, take=take)
        made.bind()
        return made

    def client(
        self, address: tuple[str, int], transport: ITransport | None = None, **options: Any
    ) -> Endpoint:
        """A client aimed at ``address`` (by default a ``FramedTransport`` over TCP);
        call ``.connect()`` for each peer."""
        take = options.pop("take", True)
        return self.endpoint(transport or framed_over_tcp(*address, **options), take=take)

    def connected(self, address: tuple[str, int], **options: Any) -> Endpoint:
        """A client with one peer connected to ``address`` (it is ``.peer``)."""
        made = self.client(address, **options)
        made.connect()
        return made

    def link(
        self, *, server: dict[str, Any] | None = None, **client_options: Any
    ) -> tuple[Endpoint, Endpoint, Peer]:
        """An echoing server (``server`` holds its options), a client with
        ``client_options``, and the client's peer, connected."""
        made = self.server(**(server or {}))
        assert made.address is not None
        client = self.client(made.address, **client_options)
        return made, client, client.connect()

    def run_until(self, condition: Callable[[], Any], timeout: float = WAIT) -> None:
        self.ew.run_until(condition, timeout)

    def turns(self, n: int, timeout: float = 0.005) -> None:
        """Run ``n`` turns of the loop, each waiting at most ``timeout`` seconds."""
        for _ in range(n):
            self.ew.run_once(timeout)

    def close(self) -> None:
        for made in self.endpoints:
            made.close()
        if self._owns_loop and not self.ew.closed:
            self.turns(2)  # deliver the CLOSED events
            self.ew.close()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
