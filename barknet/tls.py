"""TLS as one more layer of the stack, over any byte transport.

Theory of operation
-------------------
Encryption works on the byte stream, so it sits **below** framing and above
TCP::

    FramedTransport(TlsTransport(TcpTransport(), context))

:class:`TlsTransport` never touches a socket. Each peer gets an
``ssl.SSLObject`` made by ``context.wrap_bio`` with two ``ssl.MemoryBIO``
buffers: ciphertext read from the transport below is written into
``incoming``; whatever OpenSSL wants to send (handshake messages, records,
alerts, ``close_notify``) appears in ``outgoing``, and this layer writes it
down. OpenSSL is then a sans-I/O codec, like the frame decoder, so a chunking
or tracing transport can sit under TLS and the same partial I/O rules apply.

The per-peer state (OpenSSL, the two buffers, what is held) is a sans-I/O
:class:`~barknet.tls_session.TlsSession`; this module moves its bytes and
replays the events. For the owner above, it is a *byte* transport, like TCP:

* **Handshake first.** An accepted peer is a server-side session, a peer from
  ``connect`` a client-side one (verification on, ``server_hostname`` from the
  address unless you give one). ``ACCEPTED``/``CONNECTED`` are replayed only
  once the handshake finished: a client hears of a server whose
  certificate it checked, while an accepted client is anonymous unless the
  server's context requires client certificates. A handshake that fails
  (untrusted certificate, wrong host name, a peer that does not speak TLS)
  replays one ``CLOSED(ERROR, TlsError)`` naming OpenSSL's reason, also on the
  server side, for a peer the owner never saw accepted.
* **Reads** pull: ``resume_read`` decrypts what is there, reading more
  ciphertext from below only when OpenSSL asks for it (``SSLWantReadError``),
  until your buffer is full or the transport below would block. A slow reader
  therefore leaves ciphertext in the kernel, not here. Bytes already pulled in
  but not yet read are announced again (level-triggered ``READABLE``) on the
  next turn until you read them or suspend reading, and so is an end already
  seen below (the read that returned the last bytes often finds the EOF too, and
  the socket will not say so twice); a half record waiting for its rest is not
  announced, so nothing spins. One ``READABLE`` is passed on as the socket says
  it, before anything is decrypted: when those bytes were TLS's own (a TLS 1.3
  server sends session tickets after the handshake), ``resume_read`` answers
  ``WOULD_BLOCK`` to it. A framing layer above never passes such a wake-up on.
* **Writes** and **water marks.** What this layer holds for a peer is counted
  as one number, ``write_buffer_size(peer)``: plaintext you handed over that
  OpenSSL cannot encrypt yet (during the handshake, or while it must read
  before it writes; kept as a copy) **plus** ciphertext the transport below
  has not taken yet. ``resume_write`` encrypts and sends at once while that
  number is at most ``high_water`` (64 KiB by default); the call that takes it
  over the mark replays ``PAUSE_WRITING``, and from there on takes nothing
  (``WOULD_BLOCK``, the rest stays yours). Once the transport below took
  enough to bring it down to ``low_water`` (``high_water // 4``),
  ``RESUME_WRITING`` comes, then ``WRITABLE`` if a write was refused. As over
  a socket, that ``WRITABLE`` then comes again each turn while this layer
  holds at most ``low_water`` bytes, until you ``suspend_write(peer)``; while
  it holds more, none comes until the transport below took enough. One
  call takes at most one record (16 KiB) past ``high_water``, so a peer that
  does not read costs at most ``high_water`` + 16 KiB + record overhead here,
  whatever you offer. A layer above that queues (``FramedTransport``) keeps
  what was refused under its own water marks and replays only its own
  ``PAUSE``/``RESUME_WRITING`` (it drops this layer's): you see one signal,
  and a slow reader costs its ``high_water`` + one frame + this layer's bound.
* **Ends.** ``write_eof(peer)`` sends ``close_notify`` and then, once it left,
  half-closes the transport below. ``close(peer)`` sends ``close_notify``,
  waits for the ciphertext to leave and closes the peer below. A peer that
  never reads would make that wait last forever, so it lasts at most
  ``linger_timeout`` seconds (then ``CLOSED(ERROR, LingerTimeoutError)``).
  While it lasts, what the peer sends is read and thrown away: a peer that
  pipelines requests reads our answer only once its own writes went through,
  and if we stopped reading, each side would wait for the other until the
  timeout. Once ours left, the peer's ``close_notify`` (or its FIN) is awaited
  here, for as long as the transport below would wait for a FIN, and the peer
  is closed below at once when it comes: a peer that keeps TCP open after its
  ``close_notify`` (to pool it) is not waited for. The peer's ``close_notify``
  is ``EOF`` for you; a peer that closes TCP without it is a *truncation*
  (an attacker can cut a connection, but cannot forge ``close_notify``):
  ``CLOSED(ERROR, TlsError(reason="TRUNCATED"))``.

A peer that connects and never finishes its handshake is closed after
``handshake_timeout`` seconds (60 by default, as in asyncio; for a client the
clock starts at ``connect``) with ``TlsError(reason="HANDSHAKE_TIMEOUT")``.
A handshake that failed (its alert sent, the close below lingering for the
peer's EOF) keeps OpenSSL's reason, and its wait ends by that deadline too.

Renegotiation (TLS 1.2 only; 1.3 has none): a server refuses a client's
request (OpenSSL's alert, and ``CLOSED(ERROR, TlsError)``); a client goes
along with a server's request (OpenSSL does it), and a ``close`` or
``write_eof`` made meanwhile sends ``close_notify`` once that handshake is
over, within ``linger_timeout`` for a close.

Caveats: no session resumption of our own (tickets are received and
ignored), and no client certificates beyond what your context asks for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from typing import Any, cast

from .errors import BarknetError, LingerTimeoutError, TransportClosedError
from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .interfaces import Buffer, ITransport, WriteData
from .layer import TransportLayer, linger_timeout_below
from .tls_session import RECORD_SIZE, TlsSession, local_error, tls_error

__all__ = ["HANDSHAKE_TIMEOUT", "HIGH_WATER", "TlsTransport"]

#: Bytes held per peer (plaintext not yet encrypted + ciphertext not yet taken
#: below) above which the owner gets ``PAUSE_WRITING`` and writes are refused.
HIGH_WATER = 64 * 1024
#: Seconds a peer has to finish its handshake, by default.
HANDSHAKE_TIMEOUT = 60.0
#: Bytes asked of the transport below per read, and of OpenSSL per plain read.
READ_SIZE = 64 * 1024
#: Reads per event while discarding what a closed peer still sends.
_DISCARD_READS = 16

_WOULD_BLOCK_READ = ReadResult(b"", IOStatus.WOULD_BLOCK)
_WOULD_BLOCK_WRITE = WriteResult(0, IOStatus.WOULD_BLOCK)


class TlsTransport(TransportLayer):
    """TLS for every peer of ``inner`` (any byte transport), with ``ssl.MemoryBIO``.

    ``context`` is an ``ssl.SSLContext``; for a client, ``None`` means
    ``ssl.create_default_context()``: the system's CAs, and the host name
    checked. A server needs a context with its certificate
    (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` then
    ``load_cert_chain``).

    Each peer's side follows how it came: accepted peers are server sessions,
    peers from ``connect`` client sessions. ``server_side`` forces one side for
    every peer (needed for :meth:`adopt`, where nothing says). A node that both
    listens and dials passes its client context as ``client_context``.

    ``server_hostname`` is the name checked against the server's certificate
    and sent as SNI; by default the host ``connect`` dials (an IP address is
    checked against the certificate's IP entries).

    ``high_water`` and ``low_water`` (default ``high_water // 4``) are the
    write water marks, as in :class:`~barknet.framed.FramedTransport`, over
    the bytes this layer holds for a peer: plaintext not yet encrypted plus
    ciphertext not yet taken by the transport below (``write_buffer_size``).

    ``linger_timeout`` bounds how long ``close(peer)`` waits for those bytes to
    leave (see "Ends" in the module docstring); ``None`` takes the transport
    below's ``linger_timeout`` if it has one, else 5 seconds.
    """

    def __init__(
        self,
        inner: ITransport,
        context: ssl.SSLContext | None = None,
        *,
        server_side: bool | None = None,
        server_hostname: str | None = None,
        client_context: ssl.SSLContext | None = None,
        high_water: int = HIGH_WATER,
        low_water: int | None = None,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
        linger_timeout: float | None = None,
    ) -> None:
        super().__init__(inner)
        self.high_water = high_water
        self.low_water = high_water // 4 if low_water is None else low_water
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        self.context = context
        self.client_context = client_context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.linger_timeout = linger_timeout_below(inner, linger_timeout)
        self._sessions: dict[Peer, TlsSession] = {}
        #: A peer's counters while its held CLOSED is being delivered (see _closed).
        self._leaving: dict[Peer, IOCounters] = {}
        self._scratch = bytearray(READ_SIZE)
        #: Where a read without a buffer decrypts to, before its bytes are copied out
        #: at their exact size: a new buffer per read would be zeroed each time
        #: (64 KiB for a 16-byte message).
        self._plaintext = bytearray(READ_SIZE)

    # ------------------------------------------------------------ lifecycle
    def connect(self, address: tuple[str, int] | None = None, *args: Any, **kw: Any) -> Peer:
        """Connect below, then run the handshake as the client; ``CONNECTED`` follows it."""
        peer = self.inner.connect(address, *args, **kw)
        side = False if self.server_side is None else self.server_side
        hostname = self.server_hostname
        if hostname is None and not side:
            where = address or peer.remote
            hostname = where[0] if where else None
        self._open(peer, side, hostname, start=False)
        return peer

    def adopt(self, sock: Any) -> Peer:
        """Take over a connected socket (see :meth:`TcpTransport.adopt`) and start
        the handshake at once, on the side ``server_side`` says.

        The peer is returned now; ``ACCEPTED`` (server side) or ``CONNECTED``
        (client side) follows the handshake.
        """
        if self.server_side is None:
            raise ValueError("adopt() needs TlsTransport(server_side=True or False)")
        peer = self.inner.adopt(sock)
        self._open(peer, self.server_side, self.server_hostname, start=True)
        return peer

    def _open(self, peer: Peer, server_side: bool, hostname: str | None, *, start: bool) -> None:
        session = TlsSession(peer, server_side)
        self._sessions[peer] = session
        try:
            if server_side:
                if self.context is None:
                    raise ValueError("a server-side session needs a context with a certificate")
                context = self.context
            else:
                context = self.client_context or self.context or ssl.create_default_context()
            session.wrap(context, hostname)
        except (ssl.SSLError, ValueError) as exc:
            self._fail(session, tls_error(peer, "setup", exc))
            return
        if self.handshake_timeout is not None:
            session.timer = self._watcher.call_later(  # type: ignore[union-attr]
                self.handshake_timeout, self._handshake_deadline, session
            )
        if start:
            self._handshake(session)

    def close(self, peer: Peer | None = None) -> None:
        """Close ``peer`` after sending ``close_notify`` and every queued record
        (no argument: close everything below at once)."""
        if peer is None:
            for each in self._sessions.values():
                # Every peer is let go below, now: a READABLE or WRITABLE this turn
                # still had scheduled for one finds it closing, and I/O calls raise.
                each.closing = each.gone = True
                self._stop_lingering(each)
                self._release_held(each, closed_by_you=True)
            self.inner.close()
            return
        session = self._sessions.get(peer)
        if session is None or session.closing:
            return
        session.closing = True
        if session.held_closed is not None:  # gone below already
            self._release_held(session, closed_by_you=True)
            return
        if session.error is not None:
            return  # already closing below; CLOSED is on its way
        if (session.handshaking and not session.plain) or self._watcher.closed:  # type: ignore[union-attr]
            # (With the loop closed first, nothing held here has a loop to send it.)
            self.inner.close(peer)
            return
        self._goodbye(session)  # (still handshaking: once it is done)
        if self._sessions.get(peer) is session and session.owes and not session.gone:
            # Bytes still held, or our close_notify (else the peer is closed below
            # already): wait for them at most linger_timeout, and meanwhile read
            # what the peer sends.
            session.linger_timer = self._watcher.call_later(  # type: ignore[union-attr]
                self.linger_timeout, self._linger_expired, session, self.linger_timeout
            )
            if not session.handshaking:
                self._discard(session)

    def abort(self, peer: Peer) -> None:
        """Close ``peer`` below now, dropping what is held here; ``CLOSED`` follows."""
        self.inner.abort(peer)
        session = self._sessions.get(peer)
        if session is not None:
            self._stop_lingering(session)
            session.closing = session.gone = True
            self._release_held(session, closed_by_you=True)

    def _stop_lingering(self, session: TlsSession) -> None:
        if session.linger_timer is not None:
            session.linger_timer.cancel()
            session.linger_timer = None

    def _linger_expired(self, session: TlsSession, waited: float) -> None:
        """``close(peer)`` waited ``linger_timeout`` and the held bytes did not all
        leave, or the peer's close_notify did not come: give up on the peer."""
        session.linger_timer = None
        if self._sessions.get(session.peer) is not session or session.gone:
            return
        if session.error is not None or not (session.owes or self._awaiting_close_notify(session)):
            return
        session.error = LingerTimeoutError(waited, session.discarded, peer=session.peer)
        session.gone = True  # nothing more goes down; CLOSED(ERROR) follows from below
        try:
            self.inner.abort(session.peer)
        except NotImplementedError:  # a transport below without abort
            self.inner.close(session.peer)

    def _discard(self, session: TlsSession) -> None:
        """Closing, with bytes still held: read what the peer sends and drop it,
        until the transport below would block (it then watches for more), the
        peer ends, or the held bytes left (then the transport below lingers)."""
        self._drop_plaintext(session)
        for _ in range(_DISCARD_READS):
            if (
                not session.owes
                or session.gone
                or session.error is not None
                or session.got_close_notify
                or session.inner_eof
                or self._sessions.get(session.peer) is not session
            ):
                return
            if self._pull(session) is not IOStatus.OK:
                return  # WOULD_BLOCK: below watches for us; EOF or ERROR: no more
            self._drop_plaintext(session)
            if session.write_wants_read and session.error is None:
                # OpenSSL read what it needed: the plaintext that waited can go.
                session.write_wants_read = False
                self._writable_again(session)

    def _drop_plaintext(self, session: TlsSession) -> None:
        """Decrypt whatever OpenSSL can and throw it away, counting it."""
        sslobj = session.sslobj
        assert sslobj is not None
        view = memoryview(self._scratch)
        session.discarded += len(session.early)
        session.early.clear()
        while session.error is None and not session.got_close_notify:
            try:
                n = cast(int, sslobj.read(len(view), view))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                n = 0
            except ssl.SSLError as exc:
                self._fail(session, tls_error(session.peer, "read", exc))
                return
            if n == 0:  # the peer's close_notify: it sends nothing more
                session.got_close_notify = True
                if not session.gone:
                    self.inner.suspend_read(session.peer)
                break
            session.discarded += n
        self._send_written_while_reading(session)

    def write_eof(self, peer: Peer) -> None:
        """Send ``close_notify`` ("I am done sending, I still read"), then, once the
        records before it left, half-close the transport below if it can."""
        session = self._open_session(peer)
        if session.write_eof or session.error is not None:
            return
        session.write_eof = True
        self._goodbye(session)

    def _goodbye(self, session: TlsSession) -> None:
        """After ``close`` or ``write_eof``: our ``close_notify`` goes out behind
        every byte you wrote (so not before the handshake and the plaintext that
        waits for it), then the close or half-close below once it all left."""
        if not (session.closing or session.write_eof):
            return
        if session.handshaking or session.plain or session.error is not None:
            return  # called again once the plaintext is encrypted
        if not session.notify_sent:
            session.say_goodbye()
            self._send_cipher(session)
            if session.notify_waits:
                return  # a renegotiation first: _send_written_while_reading asks again
        if session.error is None and not session.cipher:  # else once it was taken
            self._after_drained(session)

    def _after_drained(self, session: TlsSession) -> None:
        """Our ciphertext all left: finish a close or a half-close that waited for it."""
        peer = session.peer
        if session.closing:
            if session.got_close_notify and session.error is None:
                self._stop_lingering(session)
                self._end_below(session)  # both close_notifies crossed: no FIN to wait for
                return
            write_eof = getattr(self.inner, "write_eof", None)
            if write_eof is None or session.gone or session.inner_eof:
                self._stop_lingering(session)
                self.inner.close(peer)  # which lingers for the peer's EOF, by its own timeout
                return
            # Ours is out: wait for the peer's close_notify (or its FIN) here,
            # as long as the transport below would wait for its FIN. The close
            # below would drop the close_notify unread, with all the peer sends,
            # and then wait for a TCP FIN that a peer keeping TCP open (to pool
            # it) never sends. Our FIN goes now, behind our close_notify.
            if not session.eof_down:
                session.eof_down = True
                write_eof(peer)
            self._stop_lingering(session)  # (the wait for our bytes is over)
            waited = linger_timeout_below(self.inner, None)  # (what below would wait)
            session.linger_timer = self._watcher.call_later(  # type: ignore[union-attr]
                waited, self._linger_expired, session, waited
            )
            self._await_close_notify(session)
            return
        if session.notify_sent and session.write_eof and not session.eof_down:
            session.eof_down = True
            write_eof = getattr(self.inner, "write_eof", None)
            if write_eof is not None:
                write_eof(peer)
        self._close_if_both_ended(session)

    def _awaiting_close_notify(self, session: TlsSession) -> bool:
        """You closed the peer, every byte of ours left (our close_notify too), and
        its close_notify has not come yet."""
        return (
            session.closing
            and session.notify_sent
            and session.eof_down
            and not session.held
            and not (session.got_close_notify or session.gone or session.inner_eof)
            and session.error is None
        )

    def _await_close_notify(self, session: TlsSession) -> None:
        """Read what the peer sends (and drop it) until its close_notify, then
        close below at once; until the transport below would block, or ends."""
        for _ in range(_DISCARD_READS):
            if not self._awaiting_close_notify(session):
                return
            if self._pull(session) is not IOStatus.OK:
                return  # WOULD_BLOCK: below watches for us; EOF: it closes by itself
            self._drop_plaintext(session)
            if session.got_close_notify and session.error is None:
                self._stop_lingering(session)
                self._end_below(session)
                return

    def _close_if_both_ended(self, session: TlsSession) -> None:
        """Both close_notifies crossed: the conversation is over. No linger for the
        peer's TCP FIN (it may keep TCP open, to go on in plaintext or to pool
        it): what it sent is read to the end first (:meth:`_end_below`), so the
        socket closes without a reset, and the kernel still delivers what it
        holds of ours (our FIN went out with the half-close). ``CLOSED(EOF)``
        follows."""
        if session.eof_down and session.eof_read and session.error is None:
            self._end_below(session)

    def _end_below(self, session: TlsSession) -> None:
        """Both close_notifies crossed (ours left, the peer's was read): close below
        at once, without lingering for a TCP FIN (see _close_if_both_ended).

        What the peer sent after its close_notify and is already here (plaintext,
        if it goes on without TLS) is read and dropped first: bytes left unread
        in the kernel would turn the close into a reset, and what of ours is
        still on its way would be lost. (Bytes it sends after this moment still
        meet a closed socket: a peer that goes on talking after its close_notify
        must wait for our FIN, not only for our close_notify.)"""
        if not session.gone:
            session.gone = True  # (no more calls below for it: its CLOSED is coming)
            with contextlib.suppress(TransportClosedError):
                for _ in range(_DISCARD_READS):
                    data, status, _ = self.inner.resume_read(session.peer)
                    if status is not IOStatus.OK:
                        break
                    session.discarded += len(data)
            try:
                self.inner.abort(session.peer)
            except NotImplementedError:  # a transport below without abort
                self.inner.close(session.peer)

    def _fail(self, session: TlsSession, error: BarknetError) -> None:
        """Give up on the peer: send what OpenSSL wrote (an alert), then close below."""
        if session.error is None:
            session.error = error
        self._send_cipher(session)
        if not session.gone:
            self.inner.close(session.peer)
        self._release_held(session)

    def _dropped(self, session: TlsSession, error: BarknetError | None) -> None:
        """The transport below reported the peer broken and dropped it."""
        session.gone = True
        if session.got_close_notify and session.notify_sent:
            # The peer said goodbye and hung up before ours arrived (EPIPE,
            # ECONNRESET): nothing was lost, so this is no error.
            session.goodbye_lost = True
        elif session.error is None:
            session.error = error

    # ---------------------------------------------------------------- events
    def _on_inner_event(self, event: IOEvent) -> None:
        kind, peer = event.kind, event.peer
        session = self._sessions.get(peer)
        if kind is EventKind.READABLE:
            if session is not None:
                self._on_readable(session)
        elif kind is EventKind.WRITABLE:
            if session is not None:
                self._on_writable(session)
        elif kind is EventKind.ACCEPTED:
            side = True if self.server_side is None else self.server_side
            # A server's first step waits for the ClientHello: asked before it,
            # OpenSSL sets up its handshake buffers (about 20 KiB more per peer)
            # for a peer that may never send a byte. A client speaks first.
            self._open(peer, side, self.server_hostname, start=not side)
        elif kind is EventKind.CONNECTED:
            if session is None:
                self._open(peer, bool(self.server_side), self.server_hostname, start=True)
            else:
                self._handshake(session)
        elif kind is EventKind.CLOSED:
            if session is None or not self._hold_closed(session, event):
                self._closed(peer, session, event)
        else:
            self._emit(event)

    def _hold_closed(self, session: TlsSession, event: IOEvent) -> bool:
        """The transport below let the peer go (both directions ended there, say)
        while what it sent is still here for you: plaintext OpenSSL holds, or its
        close_notify. As FramedTransport does for frames, that comes first: the
        CLOSED waits until you have read to the end (or closed the peer)."""
        if (
            event.status is IOStatus.ERROR
            or session.error is not None
            or session.closing
            or session.handshaking
            or session.eof_read
            or not session.waiting()
        ):
            return False
        session.gone = session.inner_eof = True  # nothing more comes from below
        session.held_closed = event
        session.totals_below = self.inner.counters(session.peer)
        self._kick(session)
        return True

    def _release_held(self, session: TlsSession, *, closed_by_you: bool = False) -> None:
        """You read to the end of what was held (or closed the peer: then it says
        OK): its CLOSED now, through call_soon (never from inside your call)."""
        event, session.held_closed = session.held_closed, None
        if event is not None:
            if closed_by_you:
                event = IOEvent(EventKind.CLOSED, session.peer, IOStatus.OK)
            self._watcher.call_soon(self._closed, session.peer, session, event)  # type: ignore[union-attr]

    def _closed(self, peer: Peer, session: TlsSession | None, event: IOEvent) -> None:
        """The peer's CLOSED for you, saying what TLS knows of the end."""
        if session is None:
            self._emit(event)  # a peer we never saw open (e.g. a failed connect)
            return
        if self._sessions.get(peer) is session:
            self._sessions.pop(peer)
        self._stop_lingering(session)
        if session.timer is not None:
            session.timer.cancel()
        if session.error is not None:
            event = IOEvent(EventKind.CLOSED, peer, IOStatus.ERROR, session.error)
        elif session.goodbye_lost:
            status = IOStatus.OK if session.closing else IOStatus.EOF
            event = IOEvent(EventKind.CLOSED, peer, status)
        elif session.closing and event.status is IOStatus.EOF:
            # (You closed it; below, both directions ended: the peer's FIN came
            # after ours, where its close_notify was awaited.)
            event = IOEvent(EventKind.CLOSED, peer, IOStatus.OK)
        elif (
            event.status is IOStatus.OK
            and session.eof_read
            and session.eof_down
            and not session.closing
        ):
            event = IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)
        if session.totals_below is None:
            self._emit(event)  # (the transport below answers for its counters)
            return
        self._leaving[peer] = session.totals_below
        try:
            self._emit(event)
        finally:
            del self._leaving[peer]  # (its counters: in the CLOSED callback too)

    def counters(self, peer: Peer | None = None) -> IOCounters:
        if peer is not None:
            session = self._sessions.get(peer)
            held = self._leaving.get(peer) if session is None else session.totals_below
            if held is not None:  # (a CLOSED held here: the transport below forgot it)
                return dataclasses.replace(held)
        return self.inner.counters(peer)

    def _handshake_deadline(self, session: TlsSession) -> None:
        session.timer = None
        mine = self._sessions.get(session.peer) is session
        if mine and session.handshaking and not session.gone:
            # A peer that stayed silent this long is not waited for again: a graceful
            # close below would linger for its EOF, and CLOSED would come that much
            # later than handshake_timeout. So it is aborted (no alert: it is not
            # listening), and CLOSED(ERROR) follows at once. A handshake that failed
            # before (its alert sent, the close below lingering for the peer's EOF)
            # keeps its reason, and ends here too.
            if session.error is None:
                session.error = local_error(
                    session.peer, "HANDSHAKE_TIMEOUT", self.handshake_timeout
                )
            session.gone = True
            try:
                self.inner.abort(session.peer)
            except NotImplementedError:  # a transport below without abort
                self.inner.close(session.peer)

    def _handshake(self, session: TlsSession) -> None:
        try:
            session.sslobj.do_handshake()  # type: ignore[union-attr]
        except ssl.SSLWantReadError:
            self._send_cipher(session)
            return
        except (ssl.SSLError, ValueError) as exc:
            self._fail(session, tls_error(session.peer, "handshake", exc))
            return
        session.handshaking = False
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        self._encrypt_plain(session)  # what you wrote during the handshake goes first
        self._send_cipher(session)
        if session.error is not None:
            return
        if session.closing:  # closed during the handshake, after writing: yours no more
            self._goodbye(session)
            return
        kind = EventKind.ACCEPTED if session.server_side else EventKind.CONNECTED
        try:
            self._emit(IOEvent(kind, session.peer))
        except BaseException:
            # What waits still goes on, on the next turn: one owner exception at a time.
            self._watcher.call_soon(self._after_handshake, session)  # type: ignore[union-attr]
            raise
        self._after_handshake(session)

    def _after_handshake(self, session: TlsSession) -> None:
        """The owner heard of the peer: send what waited, say where the flow stands,
        and announce the application data that may have come with the last flight
        (nothing, if the owner closed the loop from its callback: run() returns)."""
        if self._watcher.closed:  # type: ignore[union-attr]  # attached
            return
        if self._sessions.get(session.peer) is session and not session.closing:
            self._goodbye(session)
            try:
                self._pause_if_full(session)
            except BaseException:
                self._kick(session)  # (only schedules: the exception goes out alone)
                raise
            self._flow(session)
            self._kick(session)

    def _pull(self, session: TlsSession) -> IOStatus:
        """Read one chunk of ciphertext from below into OpenSSL's incoming BIO."""
        try:
            result = self.inner.resume_read(session.peer, self._scratch)
        except TransportClosedError:  # the whole stack below was closed; CLOSED follows
            session.gone = True
            return IOStatus.ERROR
        status = result.status
        if status is IOStatus.OK:
            session.incoming.write(result.data)
            session.pulled_short = len(result.data) < len(self._scratch)
        elif status is IOStatus.EOF:
            session.inner_eof = True
            if not session.handshaking:
                # The end waits for the owner now (it may have come with data,
                # or during a write): say so, since below will not again.
                self._kick(session)
        elif status is IOStatus.ERROR:
            self._dropped(session, result.error)
        return status

    def _on_readable(self, session: TlsSession) -> None:
        if session.handshaking:
            # One chunk at a time: the handshake is a few kilobytes, and bytes past
            # it are the owner's, to be read when the owner asks.
            while session.handshaking and session.error is None:
                status = self._pull(session)
                if status is IOStatus.OK:
                    self._handshake(session)
                elif status is IOStatus.EOF:
                    self._fail(session, local_error(session.peer, "EOF_IN_HANDSHAKE"))
                    return
                else:
                    return
            return
        if session.error is not None:
            return
        if session.closing:  # yours no more: read and drop while our bytes wait to leave
            if session.owes:
                self._discard(session)
            else:
                self._await_close_notify(session)
            return
        if session.write_wants_read:
            # OpenSSL had to read before it could write: feed it, then send
            # the plaintext that waited.
            if self._pull(session) is IOStatus.OK:
                session.write_wants_read = False
                self._writable_again(session)
            if self._sessions.get(session.peer) is not session:
                return
        if not session.reading:
            self.inner.suspend_read(session.peer)
            return
        session.readable_turn = self._watcher.turns  # type: ignore[union-attr]
        try:
            self._emit(session.readable)
        finally:  # (even after a callback that raised: what waits is announced later)
            self._kick(session)

    def _kick(self, session: TlsSession) -> None:
        if session.kick_due or not session.reading or session.closing or not session.waiting():
            return
        session.kick_due = True
        self._watcher.call_soon(self._replay_readable, session)  # type: ignore[union-attr]

    def _replay_readable(self, session: TlsSession) -> None:
        watcher = self._watcher
        assert watcher is not None
        if self._sessions.get(session.peer) is not session or session.error is not None:
            session.kick_due = False
            return
        if session.readable_turn == watcher.turns:
            # This turn said READABLE already (the socket's): once a turn, so the
            # repeat is the next turn's (callbacks queued now run there).
            watcher.call_soon(self._replay_readable, session)
            return
        session.kick_due = False
        if session.reading and not session.closing and session.waiting():
            session.readable_turn = watcher.turns
            try:
                self._emit(session.readable)
            finally:
                self._kick(session)

    def _on_writable(self, session: TlsSession) -> None:
        drained = self._send_cipher(session)
        if session.notify_sent:  # our close_notify is out or on its way
            if drained:
                self._after_drained(session)
            return
        if not session.closing:  # (closed during the handshake: _handshake goes on)
            self._flow(session)

    def _flow(self, session: TlsSession) -> None:
        """Bytes left: at ``low_water``, ``RESUME_WRITING`` if paused, then
        ``WRITABLE`` if a write of yours was refused (and again on later turns,
        see :meth:`_repeat_writable`)."""
        if session.held > self.low_water or session.error is not None or session.closing:
            return  # (closing: yours no more, no flow events for it)
        peer = session.peer
        if session.paused:
            session.paused = False
            try:
                self._emit(IOEvent(EventKind.RESUME_WRITING, peer))
            except BaseException:
                self._repeat_writable(session)  # a WRITABLE that was due comes next turn
                raise
            if self._sessions.get(peer) is not session or session.held > self.low_water:
                return  # (gone, or the owner's writes from RESUME_WRITING filled us again)
        if self._writable_wanted(session) and not session.writable_due:
            session.writable_turn = self._watcher.turns  # type: ignore[union-attr]
            try:
                self._emit(IOEvent(EventKind.WRITABLE, peer))
            finally:  # (even after a callback that raised: it repeats until suspend_write)
                self._repeat_writable(session)

    @staticmethod
    def _writable_wanted(session: TlsSession) -> bool:
        """Does the owner wait for ``WRITABLE`` (refused once, not suspended since),
        and could it write now?"""
        return (
            session.want_write
            and session.can_encrypt
            and not (session.closing or session.write_eof)
        )

    def _repeat_writable(self, session: TlsSession) -> None:
        """``WRITABLE`` repeats until ``suspend_write``, as a socket's does: on the
        next turn if there is room then. Without room (more than ``low_water``
        held) nothing is scheduled: the transport below owes us its ``WRITABLE``
        for the ciphertext it refused, and that one brings ours (no busy loop)."""
        if (
            self._sessions.get(session.peer) is not session
            or session.writable_due
            or session.held > self.low_water
            or not self._writable_wanted(session)
        ):
            return
        session.writable_due = True
        self._watcher.call_soon(self._writable_due, session)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- reads
    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        """Decrypt what is here into ``buffer`` (or new bytes), reading ciphertext
        from below while OpenSSL needs more and the buffer has room.

        ``EOF`` means the peer sent ``close_notify``. A peer that closed without
        it gets ``ERROR`` with ``TlsError(reason="TRUNCATED")`` and is closed.
        """
        session = self._open_session(peer)
        if session.error is not None:
            return ReadResult(b"", IOStatus.ERROR, session.error)
        if session.handshaking:
            session.reading = True  # (the handshake reads below anyway)
            return _WOULD_BLOCK_READ
        if not session.reading:
            session.reading = True
            if not (session.gone or session.inner_eof or session.got_close_notify):
                # suspend_read stopped the reading below, and only a read there starts
                # it again: the plaintext OpenSSL holds may fill this whole call
                # without one (what it reads waits in OpenSSL's buffer meanwhile).
                self._pull(session)
        if session.got_close_notify:
            return self._read_eof(session)
        if buffer is None:
            size = max_len or READ_SIZE
            plaintext = self._plaintext if size <= READ_SIZE else bytearray(size)
            view = memoryview(plaintext)[:size]
        else:
            view = memoryview(buffer)[offset:]
            if max_len is not None:
                view = view[:max_len]
            if not len(view):
                raise ValueError("resume_read was given no room to read into")
        got = self._decrypt_into(session, view)
        if got:
            self._kick(session)
            data = view[:got] if buffer is not None else bytes(view[:got])
            return ReadResult(data, IOStatus.OK)
        if session.error is not None:
            return ReadResult(b"", IOStatus.ERROR, session.error)
        if session.got_close_notify:
            return self._read_eof(session)
        if session.inner_eof:
            error = local_error(peer, "TRUNCATED")
            self._fail(session, error)
            return ReadResult(b"", IOStatus.ERROR, error)
        return _WOULD_BLOCK_READ

    def _decrypt_into(self, session: TlsSession, view: memoryview) -> int:
        sslobj = session.sslobj
        assert sslobj is not None
        got, room = 0, len(view)
        early = session.early
        if early:  # (set aside when we said goodbye: see TlsSession.say_goodbye)
            got = min(room, len(early))
            view[:got] = early[:got]
            del early[:got]
        session.pulled_short = False
        while got < room:
            # Everything we had is out? If our last read from below came back
            # short, the socket is empty: stop, as a socket's short read would (if
            # more arrives, the loop says so). Else read below before asking
            # OpenSSL, which would only say "want read" (an exception).
            idle = got > 0 and not sslobj.pending() and not session.incoming.pending
            if idle and (session.pulled_short or not self._feed(session)):
                break
            try:
                # With a buffer, read() answers a count (typeshed says bytes).
                n = cast(int, sslobj.read(room - got, view[got:]))
            except ssl.SSLWantReadError:
                if not self._feed(session):
                    break
                continue
            except ssl.SSLZeroReturnError:
                n = 0  # their close_notify, once ours went out too
            except ssl.SSLError as exc:
                self._fail(session, tls_error(session.peer, "read", exc))
                break
            if n == 0:  # Python's read answers the peer's close_notify with 0 bytes
                session.got_close_notify = True
                if not session.gone:
                    # The last thing we need from the peer: stop watching the
                    # socket (the FIN that follows would wake us every turn).
                    self.inner.suspend_read(session.peer)
                break
            got += n
        self._send_written_while_reading(session)
        return got

    def _send_written_while_reading(self, session: TlsSession) -> None:
        """OpenSSL may write while it reads: an alert, its refusal of a
        renegotiation (or, as a client, the new handshake a server asked for).
        That goes now: left for the owner's next write, it would keep a peer that
        waits for it waiting, for ever if the owner only reads. (Its answer to a
        TLS 1.3 KeyUpdate is not among these: OpenSSL sends it just before our
        next record of data, as RFC 8446 allows, and the peer does not wait for
        it.)"""
        if session.outgoing.pending and session.error is None:
            self._send_cipher(session)
        if session.notify_waits and session.error is None:
            self._goodbye(session)  # the renegotiation may be over now

    def _feed(self, session: TlsSession) -> bool:
        """OpenSSL needs the rest of a record: pull a chunk from below. False if
        none came (would block, EOF, or broken)."""
        if session.inner_eof or session.error is not None:
            return False
        if self._pull(session) is not IOStatus.OK:
            return False
        if session.write_wants_read:
            session.write_wants_read = False
            self._watcher.call_soon(self._writable_again, session)  # type: ignore[union-attr]
        return True

    def _writable_due(self, session: TlsSession) -> None:
        if session.writable_turn == self._watcher.turns:  # type: ignore[union-attr]
            # This turn had its WRITABLE: the next one waits for the next turn
            # (callbacks queued now run there, not in this turn).
            self._watcher.call_soon(self._writable_due, session)  # type: ignore[union-attr]
            return
        session.writable_due = False
        self._writable_again(session)

    def _writable_again(self, session: TlsSession) -> None:
        """OpenSSL read what it needed: encrypt and send what waited for it."""
        if self._sessions.get(session.peer) is not session or session.error is not None:
            return
        self._encrypt_plain(session)
        self._send_cipher(session)
        self._goodbye(session)
        self._flow(session)

    def _read_eof(self, session: TlsSession) -> ReadResult:
        session.eof_read = True
        self._close_if_both_ended(session)
        self._release_held(session)
        return ReadResult(b"", IOStatus.EOF)

    def suspend_read(self, peer: Peer | None = None) -> None:
        if peer is not None:
            sessions = [self._open_session(peer)]
        else:  # the peers you have (a server's are yours from ACCEPTED, after the
            # handshake; a client's from connect), not those closing: they keep reading
            sessions = [
                each
                for each in self._sessions.values()
                if not each.closing and not (each.handshaking and each.server_side)
            ]
        for session in sessions:
            session.reading = False
            # A handshake must go on reading: once it is done, the first READABLE
            # from below finds the owner not reading and stops it (_on_readable).
            # A failed peer is being closed below already (its CLOSED is on the way).
            if not (session.gone or session.handshaking or session.error is not None):
                self.inner.suspend_read(session.peer)

    # --------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        """Take ``data`` while this layer holds at most ``high_water`` bytes for
        ``peer``, encrypt it and send the records.

        ``sent`` counts *plaintext* bytes taken; they are yours to forget (what
        OpenSSL cannot encrypt yet, during the handshake, waits here as a copy).
        The call that takes the held bytes over ``high_water`` replays
        ``PAUSE_WRITING`` (during the handshake, not before ``CONNECTED``: then
        right after it, if still owed); past the mark nothing more is taken (``WOULD_BLOCK``,
        the rest stays yours), and once the transport below took enough to bring
        the held bytes down to ``low_water``, ``RESUME_WRITING`` and then
        ``WRITABLE`` follow; ``WRITABLE`` repeats on each later turn with room
        until you ``suspend_write(peer)``.
        """
        session = self._open_session(peer)
        if session.error is not None:
            return WriteResult(0, IOStatus.ERROR, session.error)
        if session.write_eof:
            raise TransportClosedError(
                f"you called write_eof({peer}): nothing more can be sent", peer=peer
            )
        buffers = [data] if isinstance(data, Buffer) else data
        taken, refused = 0, False
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            got = self._take(session, view)
            taken += got
            if got < len(view):
                refused = True
                break
        self._send_cipher(session)
        if session.error is not None:
            return WriteResult(taken, IOStatus.ERROR, session.error)
        if refused:
            session.want_write = True
        if (refused or session.paused) and not session.inner_waiting and not session.writable_due:
            # The transport below took every record (its socket drained in
            # between, or this write took what was held down to nothing), so it
            # will not replay WRITABLE for us, and its WRITABLE is what brings
            # RESUME_WRITING and ours: say them ourselves, on the next turn, or
            # an owner that waits for them waits forever.
            session.writable_due = True
            self._watcher.call_soon(self._writable_due, session)  # type: ignore[union-attr]
        self._pause_if_full(session)
        return WriteResult(taken, IOStatus.WOULD_BLOCK if refused else IOStatus.OK)

    def _pause_if_full(self, session: TlsSession) -> None:
        """``PAUSE_WRITING`` once more than ``high_water`` is held; not before the
        owner heard ``CONNECTED`` (plaintext written during the handshake waits
        here): the pause then comes right after it."""
        if session.held > self.high_water and not session.paused and not session.handshaking:
            session.paused = True
            self._emit(IOEvent(EventKind.PAUSE_WRITING, session.peer))

    def _take(self, session: TlsSession, view: memoryview) -> int:
        """Encrypt (or, if OpenSSL cannot yet, copy) ``view`` while at most
        ``high_water`` bytes are held; returns how many bytes were taken."""
        sslobj = session.sslobj
        assert sslobj is not None
        position, size = 0, len(view)
        while position < size and session.error is None:
            held = session.held
            if held > self.high_water:
                self._send_cipher(session)  # room, if the transport below takes some
                held = session.held
                if held > self.high_water or session.error is not None:
                    break
            # Enough to cross the high-water mark (so one write can fill this
            # layer), in whole records: OpenSSL makes one record per 16 KiB of a
            # write, so a piece that ended mid-record would cut a record short
            # and send its rest as a record of its own (one more record's
            # overhead, 22 bytes in TLS 1.3). Still at most one record past the mark.
            wanted = max(self.high_water + 1 - held, RECORD_SIZE)
            piece = view[position : position + -(-wanted // RECORD_SIZE) * RECORD_SIZE]
            if not session.can_encrypt:
                session.plain += piece
                position += len(piece)
                continue
            try:
                position += sslobj.write(piece)
            except ssl.SSLWantReadError:
                if self._pull(session) is not IOStatus.OK:
                    session.write_wants_read = True  # the rest waits as plaintext
            except ssl.SSLError as exc:
                self._fail(session, tls_error(session.peer, "write", exc))
        return position

    def _encrypt_plain(self, session: TlsSession) -> None:
        """Encrypt the plaintext that waited for the handshake or for a read."""
        while session.plain and session.error is None:
            if session.handshaking or session.write_wants_read:
                return
            try:
                session.encrypt_plain()
            except ssl.SSLWantReadError:
                if self._pull(session) is not IOStatus.OK:
                    session.write_wants_read = True
            except ssl.SSLError as exc:
                self._fail(session, tls_error(session.peer, "write", exc))

    def _send_cipher(self, session: TlsSession) -> bool:
        if session.eof_down:
            # Our FIN went out below: nothing can follow it. What OpenSSL wrote
            # since (an alert, an answer to a renegotiation request) is dropped;
            # offered below, it would be refused as a write after write_eof.
            session.outgoing.read()
            session.cipher.clear()
            return True
        try:
            return self._write_cipher(session)
        except TransportClosedError:  # the whole stack below was closed; CLOSED follows
            session.gone = True
            return False

    def _write_cipher(self, session: TlsSession) -> bool:
        """Write OpenSSL's output and what is left of earlier records down.

        Returns True when nothing is left here. Leftovers wait for the transport
        below to replay ``WRITABLE``.
        """
        outgoing, cipher = session.outgoing, session.cipher
        if session.gone:
            return False
        if outgoing.pending:
            fresh = outgoing.read()
            if not cipher:
                result = self.inner.resume_write(fresh, session.peer)
                if result.status is IOStatus.ERROR:
                    self._dropped(session, result.error)
                    return False
                if result.sent == len(fresh):
                    self._inner_done_writing(session)
                    return True
                cipher += memoryview(fresh)[result.sent :]
                session.inner_waiting = True
                return False
            cipher += fresh
        if not cipher:
            self._inner_done_writing(session)
            return True
        result = self.inner.resume_write(cipher, session.peer)
        if result.status is IOStatus.ERROR:
            self._dropped(session, result.error)
            return False
        del cipher[: result.sent]
        if cipher:
            session.inner_waiting = True
            return False
        self._inner_done_writing(session)
        return True

    def _inner_done_writing(self, session: TlsSession) -> None:
        if session.inner_waiting:
            session.inner_waiting = False
            if not session.gone:
                self.inner.suspend_write(session.peer)

    def suspend_write(self, peer: Peer) -> None:
        """Stop replaying ``WRITABLE``; records already encrypted still leave."""
        self._open_session(peer).want_write = False

    # ------------------------------------------------------------ inspection
    def _session(self, peer: Peer) -> TlsSession:
        session = self._sessions.get(peer)
        if session is None:
            raise TransportClosedError(
                f"{peer} is closed (or never belonged to {self!r})", peer=peer
            )
        return session

    def _open_session(self, peer: Peer) -> TlsSession:
        """The session of a peer you may still do I/O with: from ``close(peer)`` on,
        I/O calls raise ``TransportClosedError``, as on every transport."""
        session = self._session(peer)
        if session.closing:
            raise TransportClosedError(f"you called close({peer}): it is closed", peer=peer)
        return session

    @property
    def peers(self) -> list[Peer]:
        """The peers whose handshake finished and that you have not closed."""
        return [p for p, s in self._sessions.items() if not (s.handshaking or s.closing)]

    def write_buffer_size(self, peer: Peer) -> int:
        """Bytes held for ``peer`` and compared with the water marks: plaintext
        not yet encrypted plus ciphertext not yet taken by the transport below."""
        session = self._sessions.get(peer)
        return 0 if session is None else session.held

    def cipher_info(self, peer: Peer) -> dict[str, Any]:
        """What was negotiated with ``peer``: version, cipher, and the peer's certificate."""
        return self._session(peer).info()

    def __repr__(self) -> str:
        handshaking = sum(s.handshaking for s in self._sessions.values())
        held = sum(s.held for s in self._sessions.values())
        return (
            f"<TlsTransport over {self.inner!r}, {len(self._sessions)} sessions "
            f"({handshaking} handshaking), {held} bytes held>"
        )
