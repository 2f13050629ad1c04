"""Raw non-blocking TCP as an :class:`~barknet.interfaces.ITransport`.

Theory of operation
-------------------
One ``TcpTransport`` can listen (``bind``) and dial (``connect``, as often as
you like); every connection becomes a :class:`~barknet.events.Peer` with its
own socket, its own counters and its own flags. The transport keeps **no**
application data: ``resume_write`` makes one ``send`` (or one ``sendmsg`` for
several buffers) and tells you how much left; the rest is yours to offer again
when ``WRITABLE`` arrives. That is the job of the layer above (see
:mod:`barknet.framed`), which is why this module is short.

Each system call maps to a status, never to an exception the owner must catch:

=====================================  =========================================
what the socket did                    what the owner sees
=====================================  =========================================
``recv`` moved n > 0 bytes             ``OK`` (n smaller than asked: a short read)
``send`` moved all it was asked        ``OK``
``send`` moved fewer bytes             ``WOULD_BLOCK`` with ``sent`` = n (a short
                                       write): ``WRITABLE`` comes when there is room
``EAGAIN`` / ``EWOULDBLOCK``           ``WOULD_BLOCK``; the fd is watched for you
``recv`` returned ``b""``              ``EOF``; read interest is dropped
``ECONNRESET``, ``EPIPE``, ...         ``ERROR`` with a ``ConnectionBrokenError``,
                                       the peer is closed, ``CLOSED`` follows;
                                       until it does, calls answer that ``ERROR``
connect finished with ``SO_ERROR``     ``CLOSED(ERROR, ConnectFailedError)``
=====================================  =========================================

Connects do not block: ``connect_ex`` answers ``EINPROGRESS``, the socket is
watched for writability, and ``SO_ERROR`` then says whether it worked.
``TCP_NODELAY`` is on (unless ``nodelay=False``) for the sockets it makes: a
framing layer that writes header and payload in one call has nothing to gain
from Nagle's algorithm and a lot of latency to lose.

One ``sendmsg`` takes at most ``IOV_MAX`` buffers (1024 on Linux): of a longer
list only the first ``IOV_MAX`` are offered, and the answer is a short write
(``WOULD_BLOCK`` with what they moved), so the rest goes on ``WRITABLE`` like
any unsent rest.

``CLOSED`` events are delivered through ``call_soon``, so that a ``close()`` or
a failed ``resume_write`` never calls you back while you are still inside your
own call: later in the same turn if you called from an event's callback (the
loop runs what was scheduled once the readiness callbacks are done), else on
the next turn.

Half-close and graceful close. ``write_eof(peer)`` shuts down the write side
(``shutdown(SHUT_WR)``: the kernel sends FIN after what is in its buffer); you
keep reading. Once you have also read the peer's EOF, both directions are over
and the transport closes the socket itself: ``CLOSED(EOF)``. The peer's EOF
alone never closes anything here: that is the owner's call.

``close(peer)`` *lingers*, like an HTTP server: it shuts down the write side,
then reads and discards until the peer's EOF, and only then closes the socket
(``CLOSED(OK)``). Closing a socket that still holds unread bytes makes the kernel
send a reset, and a reset destroys whatever of your reply was still in the
kernel's send buffer, so a peer that pipelined one more request would lose the
end of the answer to the last one. A peer that never ends its side costs you at
most ``linger_timeout`` seconds: then the socket is closed anyway and ``CLOSED``
carries a ``LingerTimeoutError``; a reset meanwhile gives a
``ConnectionBrokenError``. From ``close(peer)`` on the peer is yours no more:
I/O calls raise ``TransportClosedError`` and ``peers`` leaves it out.
``abort(peer)`` closes at once, for a peer that broke the rules.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import (
    ConnectFailedError,
    ConnectionBrokenError,
    LingerTimeoutError,
    TransportClosedError,
)
from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .interfaces import IOV_MAX, LINGER_TIMEOUT, Buffer, ITransport, Replay, WriteData

if TYPE_CHECKING:
    from .reactor import EventWatcher, TimerHandle

__all__ = ["ACCEPT_ERRORS_KEPT", "TcpTransport"]

_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)  # EPIPE as an error, never SIGPIPE
_AGAIN = (BlockingIOError, InterruptedError)
#: Looked up once: on CPython 3.10 and 3.11 ``IOStatus.OK`` goes through the
#: enum metaclass's ``__getattr__`` hook each time (see barknet.framed).
_OK, _WOULD_BLOCK = IOStatus.OK, IOStatus.WOULD_BLOCK
#: The results of a read or write that moved bytes are built with tuple.__new__,
#: which skips the Python-level __new__ NamedTuple generates: one Python call
#: less per read and per write (benchmarks/layer_costs.py counts the calls).
#: Everywhere else the results are built plainly.
_tuple_new = tuple.__new__
#: Answers that carry nothing but their status, made once (they are immutable).
_NOTHING_YET = ReadResult(b"", IOStatus.WOULD_BLOCK)
_NOTHING_SENT = WriteResult(0, IOStatus.WOULD_BLOCK)
#: How many of the latest ``accept`` errors a transport keeps (it counts them all).
ACCEPT_ERRORS_KEPT = 8
#: Reads per readiness event while discarding a closed peer's bytes.
_DISCARD_READS = 16


def _size_of(buffer: bytes | bytearray | memoryview) -> int:
    """Bytes in one part of a gathered write (a memoryview's ``len`` counts items)."""
    return buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)


class _Conn:
    """Per-peer state: the socket and what the loop is watching it for."""

    __slots__ = (
        "closing",
        "connecting",
        "counters",
        "discarded",
        "eof",
        "eof_sent",
        "fd",
        "linger_timer",
        "paused",
        "peer",
        "reading",
        "sock",
        "want_write",
        "writing",
    )

    def __init__(self, sock: socket.socket, peer: Peer, *, connecting: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.connecting = connecting
        self.reading = False  # read interest registered
        self.paused = False  # the owner called suspend_read (maybe before it connected)
        self.writing = False  # write interest registered (for WRITABLE)
        self.want_write = False  # a write was tried while connecting
        self.eof = False  # the owner read the peer's EOF
        self.eof_sent = False  # write_eof (or a graceful close) shut our side down
        self.closing = False  # close(peer): lingering until the peer's EOF
        self.linger_timer: TimerHandle | None = None
        self.discarded = 0  # bytes read and thrown away while lingering
        self.counters = IOCounters()


class TcpTransport(ITransport):
    """Non-blocking TCP for many peers.

    ``host``/``port`` are where ``bind`` listens, or where ``connect`` dials.
    ``sndbuf``/``rcvbuf`` set ``SO_SNDBUF``/``SO_RCVBUF`` on every socket it
    makes (the listener, accepted and connected ones; the kernel may double
    what you ask); small values make partial I/O happen on
    purpose. ``read_size`` is how much ``resume_read`` asks for when you give
    it no buffer. ``linger_timeout`` bounds how long a ``close(peer)`` waits
    for the peer's EOF (see the module docstring).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        nodelay: bool = True,
        backlog: int = 128,
        read_size: int = 256 * 1024,
        linger_timeout: float = LINGER_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.sndbuf = sndbuf
        self.rcvbuf = rcvbuf
        self.nodelay = nodelay
        self.backlog = backlog
        self.read_size = read_size
        self.linger_timeout = linger_timeout
        self._watcher: EventWatcher | None = None
        self._replay: Replay | None = None
        self._listener: socket.socket | None = None
        self._conns: dict[Peer, _Conn] = {}
        self._closed_totals = IOCounters()
        #: Peers that broke, until their CLOSED(ERROR) is delivered: calls for
        #: them meanwhile answer with the error (see _fail), they do not raise.
        self._broken_peers: dict[Peer, ConnectionBrokenError] = {}
        #: The counters of peers whose socket is gone, until their CLOSED has
        #: been delivered: an owner may read a connection's totals up to then.
        self._leaving: dict[Peer, IOCounters] = {}
        #: Peers closed because both directions ended, until their CLOSED(EOF) is
        #: delivered: reads answer EOF meanwhile, suspending is a no-op.
        self._ended: set[Peer] = set()
        self._closed = False
        #: The latest errors ``accept`` (or configuring an accepted socket) hit,
        #: e.g. out of file descriptors; at most ``ACCEPT_ERRORS_KEPT`` of them,
        #: without tracebacks, so a server at its fd limit does not grow.
        self.accept_errors: deque[OSError] = deque(maxlen=ACCEPT_ERRORS_KEPT)
        #: How many accept errors there were in all.
        self.accept_error_count = 0
        #: Seconds the listener rests after ``accept`` failed, instead of spinning.
        self.accept_pause = 0.05
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """The address ``bind`` got (with the real port when you asked for 0)."""
        return self._address

    # ------------------------------------------------------------ lifecycle
    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        self._watcher = watcher
        self._replay = replay

    def _loop(self) -> EventWatcher:
        if self._closed:
            raise TransportClosedError(f"{self!r} is closed")
        if self._watcher is None:
            raise RuntimeError("call attach(watcher, replay) before using the transport")
        return self._watcher

    def _configure(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if self.sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)

    def bind(self) -> tuple[str, int]:
        watcher = self._loop()
        if self._listener is not None:
            raise RuntimeError(f"{self!r} is already bound to {self.address}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Buffer sizes set on the listener are inherited by accepted sockets
            # before the handshake, which is when the TCP window is chosen.
            self._configure(sock)
            sock.bind((self.host, self.port))
            sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._address = address = sock.getsockname()[:2]
        watcher.watch_read(sock.fileno(), self._on_acceptable)
        return address

    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        """Start connecting to ``address`` (default: this transport's host and port)."""
        watcher = self._loop()
        address = address or (self.host, self.port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._configure(sock)
            if self.nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
        except BaseException:
            sock.close()
            raise
        peer = Peer(address)
        conn = _Conn(sock, peer, connecting=True)
        self._conns[peer] = conn
        if code in (0, errno.EINPROGRESS, errno.EAGAIN):
            # Loopback may connect at once (0); the answer still comes as an
            # event, so your code has one path, not two.
            watcher.watch_write(conn.fd, lambda: self._on_connect_done(conn))
        else:
            self._fail(conn, self._connect_error(peer, code))
        return peer

    def adopt(self, sock: socket.socket) -> Peer:
        """Take over an already connected socket (e.g. one end of a
        ``socket.socketpair()``) as a new peer, and own it from now on.

        No event announces it: the peer is returned here and is ready at once.
        Tests use this to slip in a fake socket that misbehaves on purpose. The
        socket keeps its options as they are: ``sndbuf``, ``rcvbuf`` and
        ``TCP_NODELAY`` apply to the sockets this transport makes (``connect``,
        ``accept``), not to one you hand it, which may not even be TCP.
        """
        self._loop()
        sock.setblocking(False)
        try:
            remote = sock.getpeername()
        except (OSError, AttributeError):
            remote = None
        if not (isinstance(remote, tuple) and len(remote) >= 2):
            remote = None
        conn = _Conn(sock, Peer(remote[:2] if remote else None), connecting=False)
        self._conns[conn.peer] = conn
        self._start_reading(conn)
        return conn.peer

    def _connect_error(self, peer: Peer, code: int) -> ConnectFailedError:
        return ConnectFailedError(
            f"connect to {peer.remote[0]}:{peer.remote[1]} failed: "  # type: ignore[index]
            f"{os.strerror(code)} (errno {errno.errorcode.get(code, code)})",
            peer=peer,
            errno=code,
        )

    def _on_connect_done(self, conn: _Conn) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        watcher = self._watcher
        assert watcher is not None
        watcher.unwatch_write(conn.fd)
        if code:
            self._fail(conn, self._connect_error(conn.peer, code))
            return
        conn.connecting = False
        self._start_reading(conn)
        try:
            self._emit(IOEvent(EventKind.CONNECTED, conn.peer))
        finally:  # (even after a callback that raised: what you asked for still happens)
            # (Not after the owner closed the loop from its callback: nothing more
            # can be watched, and run() returns.)
            if self._conns.get(conn.peer) is conn and not conn.closing and not watcher.closed:
                if conn.eof_sent:  # write_eof was called while connecting
                    self._shutdown_write(conn)
                elif conn.want_write:
                    self._arm_write(conn)

    def _on_acceptable(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(64):  # take a batch, then let the other sockets have a turn
            try:
                sock, remote = listener.accept()
            except _AGAIN:
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ECONNABORTED ...
                self._accept_failed(exc)
                self._pause_accepting(self.accept_pause)
                return
            try:
                self._configure(sock)
                if self.nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:  # e.g. the peer reset it already: drop this one only
                sock.close()
                self._accept_failed(exc)
                continue
            conn = _Conn(sock, Peer(remote[:2]), connecting=False)
            self._conns[conn.peer] = conn
            self._start_reading(conn)
            self._emit(IOEvent(EventKind.ACCEPTED, conn.peer))
            if self._listener is None or self._watcher.closed:  # type: ignore[union-attr]
                return  # the owner closed us, or the loop, from its callback

    def _accept_failed(self, exc: OSError) -> None:
        self.accept_error_count += 1
        exc.__traceback__ = None  # keep the error, not the frames it was raised in
        self.accept_errors.append(exc)

    def _pause_accepting(self, delay: float) -> None:
        watcher, listener = self._watcher, self._listener
        assert watcher is not None and listener is not None
        watcher.unwatch_read(listener.fileno())

        def again() -> None:
            if self._listener is listener and not watcher.closed:
                watcher.watch_read(listener.fileno(), self._on_acceptable)

        watcher.call_later(delay, again)

    # ---------------------------------------------------------------- reads
    def _start_reading(self, conn: _Conn) -> None:
        if not conn.reading and not conn.eof and not conn.paused:
            conn.reading = True
            # This runs for every readable socket, on every turn, so it is the
            # owner's callback itself, bound to the peer's READABLE event (made
            # once: it is immutable) by functools.partial, which adds no Python
            # call of its own, as a lambda would.
            assert self._watcher is not None and self._replay is not None
            event = IOEvent(EventKind.READABLE, conn.peer)
            self._watcher.watch_read(conn.fd, partial(self._replay, event))

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        conn = self._conns.get(peer)
        if conn is None or conn.closing:
            error = self._broken_peers.get(peer)
            if error is not None:
                return ReadResult(b"", IOStatus.ERROR, error)
            if peer in self._ended:
                return ReadResult(b"", IOStatus.EOF)  # (both ended: its CLOSED is coming)
            conn = self._conn(peer)  # raises TransportClosedError
        if not conn.reading:
            # Reading is on for every open peer but these three, so the usual read
            # asks one question here, not three: the peer ended, it is still
            # connecting, or you suspended reading (a read resumes it).
            if conn.eof:
                return ReadResult(b"", IOStatus.EOF)
            if conn.connecting:
                return ReadResult(b"", IOStatus.WOULD_BLOCK)
            conn.paused = False
            self._start_reading(conn)
        counters = conn.counters
        counters.recv_calls += 1
        try:
            if buffer is None:
                asked = max_len or self.read_size
                data: bytes | memoryview = conn.sock.recv(asked)
                got = len(data)
            else:
                if offset or max_len is not None or type(buffer) is not memoryview:
                    view = memoryview(buffer)[offset:]
                    if max_len is not None:
                        view = view[:max_len]
                else:
                    view = buffer  # already a view of the room to fill (framing layers)
                asked = len(view)
                if asked == 0:
                    raise ValueError("resume_read was given no room to read into")
                got = conn.sock.recv_into(view)
                data = view[:got]
        except _AGAIN:
            counters.recv_eagain += 1
            return _NOTHING_YET
        except OSError as exc:
            error = self._broken(conn, "recv", exc)
            return ReadResult(b"", IOStatus.ERROR, error)
        if got == 0:
            conn.eof = True
            self.suspend_read(peer)  # nothing more will come: stop the loop waking us
            if conn.eof_sent:  # both directions are over
                self._ended.add(peer)
                self._drop(conn, IOEvent(EventKind.CLOSED, peer, IOStatus.EOF))
            return ReadResult(b"", IOStatus.EOF)
        if got < asked:
            counters.short_recvs += 1
        counters.bytes_received += got
        return _tuple_new(ReadResult, (data, _OK, None))  # = ReadResult(data, OK)

    def suspend_read(self, peer: Peer | None = None) -> None:
        if peer in self._broken_peers or peer in self._ended:
            return  # nothing is watched for it any more
        # (No argument: the peers still yours; a lingering close keeps discarding.)
        conns = (
            [c for c in self._conns.values() if not c.closing]
            if peer is None
            else [self._conn(peer)]
        )
        for conn in conns:
            conn.paused = True  # (also before it is connected: reading waits for you)
            if conn.reading:
                conn.reading = False
                self._watcher.unwatch_read(conn.fd)  # type: ignore[union-attr]

    # --------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        conn = self._conns.get(peer)
        if conn is None or conn.closing or conn.eof_sent:
            error = self._broken_peers.get(peer)
            if error is not None:
                return WriteResult(0, IOStatus.ERROR, error)
            conn = self._conn(peer)  # raises TransportClosedError
            if conn.eof_sent:
                raise TransportClosedError(
                    f"you called write_eof({peer}): nothing more can be sent", peer=peer
                )
        if conn.connecting:
            conn.want_write = True
            return WriteResult(0, IOStatus.WOULD_BLOCK)
        counters = conn.counters
        try:
            if isinstance(data, Buffer):
                asked = data.nbytes if type(data) is memoryview else len(data)
                if asked == 0:
                    return WriteResult(0, IOStatus.OK)
                counters.send_calls += 1
                sent = conn.sock.send(data, _SEND_FLAGS)
            else:
                if len(data) <= IOV_MAX:
                    buffers = data
                else:  # (empty parts would use up the slots and move nothing)
                    buffers = [b for b in data if _size_of(b)][:IOV_MAX]
                # Asked: every buffer, also those past IOV_MAX, so that a cut list is
                # a short write (WOULD_BLOCK, WRITABLE later), never a silent OK.
                asked = sum(_size_of(b) for b in data)
                if asked == 0:
                    return WriteResult(0, IOStatus.OK)
                counters.send_calls += 1
                sent = conn.sock.sendmsg(buffers, (), _SEND_FLAGS)
        except _AGAIN:
            counters.send_eagain += 1
            self._arm_write(conn)
            return _NOTHING_SENT
        except OSError as exc:
            error = self._broken(conn, "send", exc)
            return WriteResult(0, IOStatus.ERROR, error)
        counters.bytes_sent += sent
        if sent < asked:
            counters.short_sends += 1
            self._arm_write(conn)
            return WriteResult(sent, _WOULD_BLOCK)
        return _tuple_new(WriteResult, (sent, _OK, None))  # = WriteResult(sent, OK)

    def _arm_write(self, conn: _Conn) -> None:
        if not conn.writing:
            conn.writing = True
            # The peer's WRITABLE event is made once per arming (it is immutable),
            # not once per wake-up, and bound to _emit as READABLE is to the owner.
            event = IOEvent(EventKind.WRITABLE, conn.peer)
            self._watcher.watch_write(conn.fd, partial(self._emit, event))  # type: ignore[union-attr]

    def suspend_write(self, peer: Peer) -> None:
        if peer in self._broken_peers or peer in self._ended:
            return  # nothing is watched for it any more
        conn = self._conn(peer)
        conn.want_write = False
        if conn.writing:
            conn.writing = False
            self._watcher.unwatch_write(conn.fd)  # type: ignore[union-attr]

    # -------------------------------------------------------------- closing
    def write_eof(self, peer: Peer) -> None:
        """Shut down the write side (``SHUT_WR``): the peer reads EOF after what
        the kernel still holds for it. You keep reading; once you read the peer's
        EOF too, the socket is closed and ``CLOSED(EOF)`` follows."""
        if peer in self._broken_peers or peer in self._ended:
            return  # it broke, or both ended: nothing more goes, and CLOSED is on its way
        conn = self._conn(peer)
        if conn.eof_sent:
            return
        conn.eof_sent = True
        if not conn.connecting:  # else _on_connect_done does it
            self._shutdown_write(conn)

    def _shutdown_write(self, conn: _Conn) -> bool:
        conn.want_write = False
        if conn.writing:
            conn.writing = False
            if not self._watcher.closed:  # type: ignore[union-attr]  # (closed first: gone)
                self._watcher.unwatch_write(conn.fd)  # type: ignore[union-attr]
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                self._broken(conn, "shutdown", exc)
                return False
            # The peer reset the connection meanwhile (it had closed its socket,
            # and our last bytes met it). Nothing more can be sent, which is what
            # was asked; but what it sent before the reset is still in the kernel
            # and still readable: reads find it, then its EOF or the reset.
        if conn.eof and not conn.closing:  # both directions are over
            self._ended.add(conn.peer)
            self._drop(conn, IOEvent(EventKind.CLOSED, conn.peer, IOStatus.EOF))
        return True

    def close(self, peer: Peer | None = None) -> None:
        """Close ``peer`` gracefully (lingering, see the module docstring), or
        close the listener and every peer at once. Each open peer gets its
        ``CLOSED`` event. Bytes you did not get to send are yours to have kept."""
        if peer is not None:
            self._broken_peers.pop(peer, None)  # closed by you: your calls raise from now on
            self._ended.discard(peer)
            conn = self._conns.get(peer)
            if conn is None or conn.closing:
                return
            watcher = self._watcher
            if conn.connecting or conn.eof or watcher is None or watcher.closed:
                # No connection yet, or the peer ended its side already (nothing
                # unread can arrive), or no loop left to linger on.
                self._drop(conn, IOEvent(EventKind.CLOSED, peer, IOStatus.OK))
                return
            conn.closing = True
            if not conn.eof_sent:
                conn.eof_sent = True
                if not self._shutdown_write(conn):
                    return
            conn.reading = True
            watcher.watch_read(conn.fd, partial(self._discard, conn))
            conn.linger_timer = watcher.call_later(self.linger_timeout, self._linger_expired, conn)
            return
        if self._closed:
            return
        if self._listener is not None:
            if self._watcher is not None and not self._watcher.closed:
                self._watcher.unwatch(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for conn in list(self._conns.values()):
            self._drop(conn, IOEvent(EventKind.CLOSED, conn.peer, IOStatus.OK))
        self._closed = True

    def abort(self, peer: Peer) -> None:
        """Close ``peer``'s socket now (lingering or not); ``CLOSED(OK)`` follows.
        Unread bytes make the kernel reset the connection: meant for a peer that
        broke the rules, not for the end of a conversation."""
        self._broken_peers.pop(peer, None)  # aborted by you: your calls raise from now on
        self._ended.discard(peer)
        conn = self._conns.get(peer)
        if conn is not None:
            self._drop(conn, IOEvent(EventKind.CLOSED, peer, IOStatus.OK))

    def _discard(self, conn: _Conn) -> None:
        """Lingering: read and drop what a closed peer still sends, until its EOF.
        (Counted like any read: the counters say what crossed the wire.)"""
        counters = conn.counters
        for _ in range(_DISCARD_READS):
            counters.recv_calls += 1
            try:
                data = conn.sock.recv(65536)
            except _AGAIN:
                counters.recv_eagain += 1
                return
            except OSError as exc:
                self._broken(conn, "recv", exc)
                return
            if not data:
                self._drop(conn, IOEvent(EventKind.CLOSED, conn.peer, IOStatus.OK))
                return
            conn.discarded += len(data)
            counters.bytes_received += len(data)
            if len(data) < 65536:
                counters.short_recvs += 1

    def _linger_expired(self, conn: _Conn) -> None:
        if self._conns.get(conn.peer) is conn:
            conn.linger_timer = None
            error = LingerTimeoutError(self.linger_timeout, conn.discarded, peer=conn.peer)
            self._fail(conn, error)

    def _broken(self, conn: _Conn, call: str, exc: OSError) -> ConnectionBrokenError:
        code = exc.errno
        name = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
        error = ConnectionBrokenError(
            f"{call} on {conn.peer} failed: {exc.strerror or exc} ({name}); "
            f"{conn.counters.bytes_sent} bytes sent and "
            f"{conn.counters.bytes_received} received before it broke",
            peer=conn.peer,
            errno=code,
        )
        error.__cause__ = exc
        self._fail(conn, error)
        return error

    def _fail(self, conn: _Conn, error: ConnectionBrokenError) -> None:
        """The peer broke: its socket goes now, its CLOSED(ERROR) through call_soon.
        Until then your calls for it return this error (an owner may still be
        in the middle of a callback about it), except after your own close(peer):
        from there on they raise, as for any peer you closed."""
        if not conn.closing and self._conns.get(conn.peer) is conn:
            self._broken_peers[conn.peer] = error
        self._drop(conn, IOEvent(EventKind.CLOSED, conn.peer, IOStatus.ERROR, error))

    def _drop(self, conn: _Conn, event: IOEvent) -> None:
        if self._conns.pop(conn.peer, None) is None:
            return
        if conn.linger_timer is not None:
            conn.linger_timer.cancel()
        watcher = self._watcher
        if watcher is not None and not watcher.closed:
            watcher.unwatch(conn.fd)
        conn.sock.close()
        self._closed_totals.add(conn.counters)
        if watcher is not None and not watcher.closed and self._replay is not None:
            self._leaving[conn.peer] = conn.counters
            watcher.call_soon(self._deliver_closed, event)
        else:
            self._broken_peers.pop(conn.peer, None)  # no CLOSED will be delivered
            self._ended.discard(conn.peer)

    def _deliver_closed(self, event: IOEvent) -> None:
        self._broken_peers.pop(event.peer, None)  # the peer is unknown from here on
        self._ended.discard(event.peer)
        try:
            self._emit(event)
        finally:
            self._leaving.pop(event.peer, None)  # (its counters: in the CLOSED callback too)

    def _emit(self, event: IOEvent) -> None:
        if self._replay is not None:
            self._replay(event)

    # ------------------------------------------------------------ inspection
    def _conn(self, peer: Peer, *, closing_too: bool = False) -> _Conn:
        conn = self._conns.get(peer)
        if conn is None or (conn.closing and not closing_too):
            raise TransportClosedError(
                f"{peer} is closed (or never belonged to {self!r})", peer=peer
            )
        return conn

    @property
    def peers(self) -> list[Peer]:
        """The peers open right now (not those lingering after your ``close``)."""
        return [peer for peer, conn in self._conns.items() if not conn.closing]

    def socket_of(self, peer: Peer) -> socket.socket:
        """The socket behind ``peer``, for experiments (e.g. ``SO_LINGER`` in a test)."""
        return self._conn(peer, closing_too=True).sock

    def counters(self, peer: Peer | None = None) -> IOCounters:
        total = IOCounters()
        if peer is not None:
            leaving = self._leaving.get(peer)
            total.add(self._conn(peer, closing_too=True).counters if leaving is None else leaving)
            return total
        total.add(self._closed_totals)
        for conn in self._conns.values():
            total.add(conn.counters)
        return total

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._listener is not None:
            state = f"listening on {self._address[0]}:{self._address[1]}"  # type: ignore[index]
        else:
            state = "not listening"
        return f"<TcpTransport {state}, {len(self._conns)} peers>"

    def __enter__(self) -> TcpTransport:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
