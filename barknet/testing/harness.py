"""One harness for driving transports on loopback in tests, checks and notebooks.

Theory of operation
-------------------
Almost every test of a transport needs the same cast: a loop, a server that
records what happened and maybe echoes, clients, and sometimes a raw socket that
misbehaves. Written five times, each copy drifts; written once, here, a test reads
as the behaviour it pins.

* :class:`Owner` is what a transport's owner does with its events, recorded: it
  keeps every event in order, the messages (or byte chunks) each peer sent, the
  peers opened, the EOFs read and each peer's one ``CLOSED`` (a second one is a
  broken grammar and raises ``AssertionError`` at once). How it answers is set
  by a few options, each an owner a test or a check needs:

  - ``take`` (default): on ``READABLE``, read until the status is not ``OK``, or
    ``per_readable`` reads of at most ``read_size`` bytes each, as an owner that
    takes one message at a time does; ``take=False`` leaves the data waiting, so
    a test can pull by hand;
  - ``echo``: send every message back to its sender, obeying the water marks
    while it does (``PAUSE_WRITING``: stop reading that peer; ``RESUME_WRITING``:
    read again), so a peer that never reads its echoes costs bounded memory;
  - ``quiet``: answer every wake-up it has no use for, as a careful owner does
    (``READABLE`` while not taking: ``suspend_read``; ``WRITABLE`` with nothing
    to send: ``suspend_write``), so a loop that keeps waking it is the
    transport's fault, not the owner's.

  :meth:`Owner.send` sends a whole message, or a whole byte stream across
  ``WRITABLE`` events, then calls you back.
* :class:`Endpoint` is an :class:`Owner` with the questions tests ask
  (``closed(peer)``, ``of_kind(...)``, ``round_trip(...)``).
* :class:`Stage` owns a private :class:`~barknet.reactor.EventWatcher` (or one you
  give it), every owner made on it, and anything else handed to :meth:`Stage.own`
  (the TCP transport under a layer, a raw socket). :meth:`Stage.close` closes them
  all, in the order they were made, each even if an earlier one raised (a
  transport under test may fail in ``close`` too). Use it as a context manager.

Waits are bounded: :meth:`Stage.run_until` raises ``TimeoutError`` after a few
seconds instead of hanging.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..errors import TransportClosedError
from ..events import EventKind, IOEvent, IOStatus, Peer
from ..framed import FramedTransport
from ..interfaces import ITransport
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from .faults import RawPeer

__all__ = ["Endpoint", "Owner", "Stage", "framed_over_tcp"]

#: How long a harness wait may last before it is declared stuck.
WAIT = 5.0


class _Closable(Protocol):
    def close(self) -> None: ...


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


#: READABLEs tolerated once an owner read the EOF (see ``Owner.readable_after_eof``):
#: one that was already scheduled when it read it may still come; a busy loop, or a
#: transport still holding frames, brings one every turn.
IDLE_READABLES = 2


class Owner:
    """A transport plus what happened to it: every event, and what each peer sent."""

    def __init__(
        self,
        ew: EventWatcher,
        transport: ITransport,
        *,
        echo: bool = False,
        take: bool = True,
        per_readable: int | None = None,
        read_size: int | None = None,
        quiet: bool = False,
    ) -> None:
        self.ew = ew
        self.transport = transport
        self.echo = echo
        self.take = take
        #: Reads per READABLE (None: until the status is not OK) and bytes per read.
        self.per_readable = per_readable
        self.read_size = read_size
        self.quiet = quiet
        self.events: list[IOEvent] = []
        #: What each peer sent: its messages, or the chunks of its byte stream.
        self.frames: defaultdict[Peer, list[bytes]] = defaultdict(list)
        #: Peers in the order they were ACCEPTED or CONNECTED.
        self.opened: list[Peer] = []
        #: Peers whose EOF a read returned.
        self.eof: set[Peer] = set()
        #: READABLEs that came for a peer after resume_read had said EOF for it.
        self.readable_after_eof: Counter[Peer] = Counter()
        #: Each peer's CLOSED event.
        self.ended: dict[Peer, IOEvent] = {}
        #: Called after each event is recorded (and answered), for a test's own logic.
        self.on_event: Callable[[IOEvent], None] | None = None
        self.address: tuple[str, int] | None = None
        self.raws: list[RawPeer] = []
        #: Peers an echoing owner stopped reading (PAUSE_WRITING) until RESUME_WRITING.
        self.paused: set[Peer] = set()
        #: The first peer :meth:`connect` opened: the one a one-connection client uses.
        self.peer: Peer | None = None
        self._sending: dict[Peer, deque[tuple[memoryview, Callable[[], None] | None]]] = {}
        transport.attach(ew, self._on_event)

    @property
    def messages(self) -> bool:
        """True for a message transport (it has a ``max_frame_size``), False for a
        byte stream."""
        return getattr(self.transport, "max_frame_size", None) is not None

    def _on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        kind, peer = event.kind, event.peer
        if kind is EventKind.READABLE:
            if peer in self.eof:
                self.readable_after_eof[peer] += 1
            try:
                if self.take:
                    self.read(peer)
                elif self.quiet:
                    self.transport.suspend_read(peer)
            except TransportClosedError as exc:
                # The transport said READABLE for a peer it no longer serves.
                raise AssertionError(
                    f"READABLE came for {peer}, but the transport then refused it: "
                    f"{type(exc).__name__}: {exc}. Once a peer is closed (by you, or "
                    "gone below), the only event still to come for it is its CLOSED"
                ) from None
        elif kind is EventKind.WRITABLE:
            if peer in self._sending:
                self._push(peer)
            elif self.quiet:
                self.transport.suspend_write(peer)
        elif kind is EventKind.PAUSE_WRITING and self.echo:
            # An echo must not read faster than its peer reads the replies: stop
            # reading this peer until the replies queued for it drain.
            self.paused.add(peer)
            self.transport.suspend_read(peer)
        elif kind is EventKind.RESUME_WRITING and self.echo and peer in self.paused:
            self.paused.discard(peer)
            if self.take:
                self.read(peer)  # resume_read after suspend_read reads again
        elif kind in (EventKind.ACCEPTED, EventKind.CONNECTED):
            self.opened.append(peer)
        elif kind is EventKind.CLOSED:
            if peer in self.ended:
                raise AssertionError(f"CLOSED came twice for {peer}")
            self.ended[peer] = event
            self.paused.discard(peer)
            self._sending.pop(peer, None)
        if self.on_event is not None:
            self.on_event(event)

    # --- reading and writing
    def read(self, peer: Peer) -> None:
        """Read what waits for ``peer`` (see ``per_readable`` and ``read_size``),
        sending each message back if echoing; note the EOF if one comes."""
        transport, reads = self.transport, 0
        while peer not in self.paused and (self.per_readable is None or reads < self.per_readable):
            reads += 1
            # ``max_len`` only when asked for: a learner's resume_read may not take it.
            if self.read_size is None:
                result = transport.resume_read(peer)
            else:
                result = transport.resume_read(peer, max_len=self.read_size)
            if result.status is IOStatus.OK:
                data = bytes(result.data)
                self.frames[peer].append(data)
                if self.echo:
                    transport.resume_write(data, peer)
                continue
            if result.status is IOStatus.EOF:
                self.eof.add(peer)
            return

    def send(self, peer: Peer, data: bytes, then: Callable[[], None] | None = None) -> None:
        """Send ``data`` (one message, or the whole byte stream), then call ``then``.

        A message transport takes the whole message at once; a byte stream takes
        what fits, and the rest goes out on ``WRITABLE`` events, in order."""
        if self.messages:
            self.transport.resume_write(data, peer)
            if then is not None:
                then()
            return
        queue = self._sending.setdefault(peer, deque())
        queue.append((memoryview(data), then))
        if len(queue) == 1:
            self._push(peer)

    def _push(self, peer: Peer) -> None:
        queue = self._sending[peer]
        while queue:
            view, then = queue[0]
            while view.nbytes:
                result = self.transport.resume_write(view, peer)
                view = view[result.sent :]
                if result.status is IOStatus.ERROR:
                    self._sending.pop(peer, None)
                    return
                if result.status is IOStatus.WOULD_BLOCK:
                    queue[0] = (view, then)
                    return
            queue.popleft()
            if then is not None:
                then()
        del self._sending[peer]

    def received(self, peer: Peer) -> bytes:
        """Everything ``peer`` sent so far, joined."""
        return b"".join(self.frames.get(peer, ()))

    # --- set-up
    def bind(self) -> tuple[str, int]:
        self.address = self.transport.bind()
        return self.address

    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        """Connect and wait until ``CONNECTED``; return the peer."""
        peer = self.transport.connect(address) if address else self.transport.connect()
        if self.peer is None:
            self.peer = peer
        self.ew.run_until(lambda: peer in self.opened or peer in self.ended, WAIT)
        return peer

    def raw(self) -> tuple[RawPeer, Peer]:
        """A plain socket connected to this (bound) endpoint, and the peer it made here."""
        assert self.address is not None, "bind() first"
        before = len(self.accepted())
        raw = RawPeer(self.address)
        self.raws.append(raw)
        self.ew.run_until(lambda: len(self.accepted()) > before, WAIT)
        return raw, self.accepted()[-1]

    def accepted(self) -> list[Peer]:
        return [e.peer for e in self.events if e.kind is EventKind.ACCEPTED]

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            for raw in self.raws:
                raw.close()


class Endpoint(Owner):
    """An :class:`Owner` with the questions tests ask about it."""

    def round_trip(self, payload: bytes, peer: Peer | None = None) -> None:
        """Send one message and wait for the echo: proof that ``peer`` (by default
        :attr:`peer`) still works."""
        peer = peer or self.peer
        assert peer is not None, "connect() first"
        before = len(self.frames[peer])
        self.transport.resume_write(payload, peer)
        self.ew.run_until(lambda: len(self.frames[peer]) > before, WAIT)
        assert self.frames[peer][-1] == payload, (self.frames[peer][-1][:32], payload[:32])

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

    def is_connected(self, peer: Peer) -> bool:
        return bool(self.of_kind(EventKind.CONNECTED, peer))


OwnerT = TypeVar("OwnerT", bound=Owner)
ClosableT = TypeVar("ClosableT", bound=_Closable)


class Stage:
    """A private loop and everything made on it; :meth:`close` releases all of it."""

    def __init__(self, ew: EventWatcher | None = None) -> None:
        self._owns_loop = ew is None
        self.ew = EventWatcher() if ew is None else ew
        self.endpoints: list[Owner] = []
        self.owned: list[_Closable] = []
        #: True once :meth:`close` began: timers a test set can stop re-arming.
        self.closing = False

    def add(self, owner: OwnerT) -> OwnerT:
        """Close ``owner`` (made on this stage's loop) with the stage."""
        self.endpoints.append(owner)
        return owner

    def own(self, thing: ClosableT) -> ClosableT:
        """Close ``thing`` (anything with ``close()``) with the stage, after the owners."""
        self.owned.append(thing)
        return thing

    def endpoint(self, transport: ITransport, **options: Any) -> Endpoint:
        """Attach ``transport`` to this stage's loop, recording what it replays
        (``options``: those of :class:`Owner`)."""
        return self.add(Endpoint(self.ew, transport, **options))

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
        """Close every owner, then everything owned, then (if it is ours) the loop,
        after a few turns that deliver the ``CLOSED`` events. Every step runs even
        if an earlier one raised; the first error is raised at the end."""
        self.closing = True
        errors: list[BaseException] = []
        for thing in [*self.endpoints, *self.owned]:
            try:
                thing.close()
            except Exception as exc:
                errors.append(exc)
        if self._owns_loop and not self.ew.closed:
            try:
                for _ in range(3):
                    self.ew.run_once(0)
            finally:
                self.ew.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
