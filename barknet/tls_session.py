"""One peer's TLS state, with no I/O: what :class:`~barknet.tls.TlsTransport` keeps per peer.

Theory of operation
-------------------
A :class:`TlsSession` is OpenSSL used as a sans-I/O codec, like the frame
decoder: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO`` buffers, plus the
bytes this layer holds on your behalf and the flags that say where the peer
stands. It never calls a transport and never replays an event; the transport
in :mod:`barknet.tls` does that, and asks the session what to do.

What it holds for you is counted in one place, :attr:`TlsSession.held`:

* ``plain``: plaintext you handed over that OpenSSL cannot encrypt yet (the
  handshake is still running, or OpenSSL must read from the peer before it may
  write). It is a copy: once ``resume_write`` took bytes, they are no longer
  yours to keep.
* ``cipher`` and ``outgoing``: records OpenSSL produced that the transport
  below has not taken yet.

Both count against the transport's water marks, since both are memory a slow
reader makes you spend. Ciphertext the peer sent and the owner has not read is
*not* held here beyond one read: reads pull from below only when you read.

:func:`tls_error` turns an ``ssl.SSLError`` into the one typed error the owner
sees, :class:`~barknet.errors.TlsError`, naming OpenSSL's reason.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from .errors import BarknetError, TlsError
from .events import EventKind, IOCounters, IOEvent, Peer

if TYPE_CHECKING:
    from .reactor import TimerHandle

__all__ = ["RECORD_SIZE", "TlsSession", "local_error", "tls_error"]

#: The most plaintext one TLS record carries.
RECORD_SIZE = 16 * 1024


def tls_error(peer: Peer, stage: str, exc: BaseException) -> TlsError:
    """The ``TlsError`` for an ``ssl`` exception at ``stage`` ("handshake", "read" ...).

    ``reason`` is OpenSSL's name for what went wrong, or the exception's type
    when OpenSSL gave none; a failed certificate check adds OpenSSL's
    ``verify_message``. The exception itself becomes ``__cause__``.
    """
    reason = getattr(exc, "reason", None) or type(exc).__name__
    verify = getattr(exc, "verify_message", None)
    detail = f" ({verify})" if verify else ""
    error = TlsError(
        f"TLS {stage} with {peer} failed: {reason}{detail}",
        peer=peer,
        reason=reason,
        verify_message=verify,
    )
    error.__cause__ = exc
    return error


def local_error(peer: Peer, reason: str, seconds: float | None = None) -> TlsError:
    """The ``TlsError`` for what this layer found itself, with no ``ssl`` exception:

    * ``TRUNCATED``: the connection ended without the peer's ``close_notify``;
    * ``EOF_IN_HANDSHAKE``: it ended before the handshake did;
    * ``HANDSHAKE_TIMEOUT``: the handshake took longer than ``seconds``.
    """
    if reason == "TRUNCATED":
        what = "closed the connection without close_notify: the stream may have been cut short"
    elif reason == "EOF_IN_HANDSHAKE":
        what = "closed the connection during the TLS handshake"
    else:
        what = f"did not finish the TLS handshake within {seconds:g} s"
    return TlsError(f"{peer} {what}", peer=peer, reason=reason)


class TlsSession:
    """Per-peer TLS state: the OpenSSL object, its two memory BIOs, what is held, flags."""

    __slots__ = (
        "cipher",
        "closing",
        "discarded",
        "early",
        "eof_down",
        "eof_read",
        "error",
        "gone",
        "goodbye_lost",
        "got_close_notify",
        "handshaking",
        "held_closed",
        "incoming",
        "inner_eof",
        "inner_waiting",
        "kick_due",
        "linger_timer",
        "notify_sent",
        "notify_waits",
        "outgoing",
        "paused",
        "peer",
        "plain",
        "pulled_short",
        "readable",
        "readable_turn",
        "reading",
        "server_side",
        "sslobj",
        "timer",
        "totals_below",
        "want_write",
        "writable_due",
        "writable_turn",
        "write_eof",
        "write_wants_read",
    )

    def __init__(self, peer: Peer, server_side: bool) -> None:
        self.peer = peer
        self.server_side = server_side
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj: ssl.SSLObject | None = None
        self.timer: TimerHandle | None = None  # the handshake deadline
        self.linger_timer: TimerHandle | None = None  # close(peer)'s wait for held bytes
        self.discarded = 0  # plaintext bytes read and dropped since close(peer)
        self.readable = IOEvent(EventKind.READABLE, peer)
        self.handshaking = True
        self.plain = bytearray()  # plaintext taken that OpenSSL could not encrypt yet
        self.cipher = bytearray()  # ciphertext the transport below has not taken yet
        #: Plaintext OpenSSL had decrypted and you had not read when we said
        #: goodbye (see say_goodbye): yours before anything else.
        self.early = bytearray()
        self.paused = False  # PAUSE_WRITING was replayed and not yet resumed
        self.inner_waiting = False  # the transport below owes us a WRITABLE
        self.want_write = False  # the owner was told WOULD_BLOCK: it wants WRITABLE
        self.write_wants_read = False  # OpenSSL must read before it can write
        self.reading = True  # the owner has not suspended reading
        self.pulled_short = False  # (within one read) the last pull got less than asked
        self.kick_due = False  # a level-triggered READABLE is scheduled
        self.readable_turn = -1  # the loop turn of the latest READABLE replayed
        self.writable_due = False  # a WRITABLE of our own is scheduled (see resume_write)
        self.writable_turn = -1  # the loop turn of the latest WRITABLE replayed
        self.got_close_notify = False  # the peer ended its side in TLS
        self.inner_eof = False  # the transport below reported EOF
        self.eof_read = False  # the owner has read our EOF
        self.write_eof = False  # the owner called write_eof (maybe before the handshake)
        self.notify_sent = False  # our close_notify is in ``cipher`` or gone
        #: A handshake the peer started (a TLS 1.2 renegotiation) held our
        #: close_notify back: it goes once that handshake is over.
        self.notify_waits = False
        self.eof_down = False  # inner.write_eof was called
        self.closing = False  # the owner called close(peer)
        self.error: BarknetError | None = None
        self.gone = False  # the transport below dropped the peer (its CLOSED is coming)
        #: Its CLOSED from below, held while what the peer sent is still here for
        #: you (see TlsTransport._hold_closed).
        self.held_closed: IOEvent | None = None
        #: The counters below, taken then: the transport below forgets the peer.
        self.totals_below: IOCounters | None = None
        self.goodbye_lost = False  # it broke on our close_notify, after the peer's

    def wrap(self, context: ssl.SSLContext, hostname: str | None) -> None:
        """Make the ``SSLObject`` (raises ``ssl.SSLError``/``ValueError`` for a bad setup)."""
        self.sslobj = context.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=self.server_side,
            server_hostname=None if self.server_side else hostname,
        )

    @property
    def held(self) -> int:
        """Bytes held for the peer: plaintext not yet encrypted, plus ciphertext
        not yet taken by the transport below (in ``cipher`` or still in OpenSSL's
        ``outgoing`` buffer). This is what the water marks compare."""
        return len(self.plain) + len(self.cipher) + self.outgoing.pending

    @property
    def owes(self) -> bool:
        """Closing: something of ours has yet to go, bytes held (``held``) or a
        ``close_notify`` a renegotiation holds back (``notify_waits``)."""
        return bool(self.held) or self.notify_waits

    @property
    def can_encrypt(self) -> bool:
        """May new plaintext go to OpenSSL now (rather than wait in ``plain``)?

        Not during the handshake, not while OpenSSL waits to read before it
        writes, and not while older plaintext waits (order is kept)."""
        return not (self.handshaking or self.write_wants_read or self.plain)

    def waiting(self) -> bool:
        """Is something here for the owner to read (level-triggered READABLE)?

        Decrypted bytes, ciphertext not yet shown to OpenSSL, or an unread end:
        the peer's ``close_notify``, or an EOF from below without it (which the
        owner's next read reports as a truncation). The EOF below is often found
        by a read that also returned data, and the transport below then stops
        watching the socket, so nothing but this answer wakes the owner for it.
        Half a record is not: when OpenSSL answers "want read" it has taken all
        of ``incoming`` into its own buffer, so nothing here looks readable
        until more ciphertext arrives (and the socket below says so).
        """
        if self.early:
            return True
        if self.got_close_notify:
            return not self.eof_read
        pending = self.sslobj.pending()  # type: ignore[union-attr]
        return bool(pending or self.incoming.pending or self.inner_eof)

    def encrypt_plain(self) -> None:
        """Encrypt the plaintext that waited (all of it: a record costs only ~22
        bytes more than its plaintext, so ``held`` barely moves).

        Raises ``ssl.SSLWantReadError`` (what is left keeps waiting) or
        ``ssl.SSLError``.
        """
        plain = self.plain
        while plain:
            written = self.sslobj.write(plain)  # type: ignore[union-attr]
            del plain[:written]

    def say_goodbye(self) -> None:
        """Put our ``close_notify`` in ``outgoing`` (once), keeping what the peer
        sent that you have not read yet.

        ``unwrap()`` does not stop at sending ours: it asks OpenSSL once more,
        to find the peer's ``close_notify``, and OpenSSL then reads what waits
        in ``incoming``. A record of data there (or one it had opened and you
        had not read to the end) breaks the session
        (``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``), and the peer's bytes with it,
        though after a ``write_eof`` you still read. So the plaintext OpenSSL
        holds is taken out first (``early``), and the ciphertext it has not
        looked at is set aside during the call and put back after it.

        In the middle of a handshake the peer started (a server asking a TLS 1.2
        client to renegotiate), OpenSSL refuses to say goodbye
        (``SHUTDOWN_WHILE_IN_INIT``): then nothing is sent, ``notify_waits``
        says so, and the transport asks again after each read until the
        handshake is over. A bare FIN instead would read as a truncation.
        """
        if self.notify_sent:
            return
        self.notify_sent = True
        sslobj = self.sslobj
        assert sslobj is not None
        try:
            held = sslobj.pending()
            if held:
                self.early += sslobj.read(held)
        except ssl.SSLError:
            pass  # (nothing to keep: unwrap below meets the same trouble)
        unread = self.incoming.read()
        try:
            sslobj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # it sent ours and would wait for theirs: we do not wait here
        except ssl.SSLError as exc:
            if exc.reason == "SHUTDOWN_WHILE_IN_INIT":
                self.notify_sent, self.notify_waits = False, True  # (see above)
            # Otherwise a session that cannot say goodbye still closes.
        else:
            self.notify_waits = False
        finally:
            self.incoming.write(unread)

    def info(self) -> dict[str, Any]:
        """What was negotiated: version, cipher, and the peer's certificate."""
        sslobj = self.sslobj
        assert sslobj is not None
        cipher = sslobj.cipher()
        return {
            "version": sslobj.version(),
            "cipher": cipher[0] if cipher else None,
            "server_hostname": sslobj.server_hostname,
            "peer_certificate": sslobj.getpeercert(),
        }
