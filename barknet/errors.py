"""The errors barknet reports, as one small family.

Theory of operation
-------------------
Every failure answers two questions: *whose fault is it* and *which connection*.

* :class:`TransportClosedError` means **your** code closed the transport or the
  peer and then used it again (a local mistake; it is raised at the call).
* :class:`ConnectionBrokenError` means **the peer or the network** broke the
  connection (reset, broken pipe, refused connect). The ``OSError`` that
  revealed it is kept as ``__cause__`` and its ``errno`` as ``.errno``.
* :class:`FramingError` and its children mean the peer sent bytes that break the
  framing rules (a length prefix over the limit, a stream that ends mid-frame,
  a frame that stalls). Only that peer is closed.

Remote errors never escape the event loop: the transport closes the peer and
delivers the error to its owner inside a ``CLOSED`` event. Each message names
the peer and the byte counts involved, because "connection error" alone is
useless at 3 a.m.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BarknetError",
    "ConnectFailedError",
    "ConnectionBrokenError",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "FramingError",
    "LingerTimeoutError",
    "TlsError",
    "TransportClosedError",
    "TruncatedFrameError",
]


class BarknetError(Exception):
    """Base of every error barknet raises or reports; ``peer`` says which connection."""

    def __init__(self, message: str, *, peer: Any = None) -> None:
        super().__init__(message)
        self.peer = peer


class TransportClosedError(BarknetError):
    """You closed this transport or peer, then asked it to do I/O (or asked after
    its ``CLOSED``; or, with ``FramedTransport``'s default ``half_close=False``,
    after the peer ended and the transport closed it for you, once you had taken
    its frames and its queue had drained)."""


class ConnectionBrokenError(BarknetError):
    """The peer or the network broke the connection (reset, broken pipe, ...)."""

    def __init__(self, message: str, *, peer: Any = None, errno: int | None = None) -> None:
        super().__init__(message, peer=peer)
        self.errno = errno


class TlsError(ConnectionBrokenError):
    """The TLS layer gave up on the peer: a handshake or certificate check that
    failed, a record that did not decrypt, or a stream cut without ``close_notify``.

    ``reason`` is OpenSSL's name for it (``CERTIFICATE_VERIFY_FAILED``,
    ``WRONG_VERSION_NUMBER``, ...) or ``TRUNCATED`` for a peer that closed the
    connection without saying so in TLS; ``verify_message`` explains a failed
    certificate check (``Hostname mismatch ...``), else it is ``None``. The
    ``ssl.SSLError`` behind it, if any, is ``__cause__``.
    """

    def __init__(
        self, message: str, *, peer: Any = None, reason: str, verify_message: str | None = None
    ) -> None:
        super().__init__(message, peer=peer)
        self.reason = reason
        self.verify_message = verify_message


class LingerTimeoutError(ConnectionBrokenError):
    """After your ``close(peer)``, the peer did not finish its side (send EOF)
    within the linger timeout: the socket was closed anyway.

    Whatever you had sent may not all have reached the peer's application;
    ``discarded`` counts the bytes that arrived meanwhile and were thrown away.
    """

    def __init__(self, timeout: float, discarded: int, *, peer: Any = None) -> None:
        super().__init__(
            f"{peer} did not end its side within {timeout:g} s after close(); "
            f"{discarded} bytes it sent meanwhile were discarded",
            peer=peer,
        )
        self.timeout = timeout
        self.discarded = discarded


class ConnectFailedError(ConnectionBrokenError):
    """A non-blocking connect finished with an error (e.g. the port was closed)."""


class FramingError(BarknetError):
    """The peer's bytes do not follow the 4-byte length-prefix framing."""


class FrameTooLargeError(FramingError):
    """A length prefix (or a payload you tried to send) exceeds the frame size limit.

    Raised from the 4 header bytes alone, before any buffer for the body exists.
    """

    def __init__(
        self,
        size: int,
        limit: int,
        *,
        peer: Any = None,
        sending: bool = False,
        inflated: bool = False,
    ) -> None:
        who = "you" if sending else ("the peer" if peer is None else str(peer))
        if inflated:  # (a compressed message: nothing announced it, inflating found it)
            what = f"sent a message that inflates past the limit (stopped at {size} bytes)"
        else:
            what = f"{'tried to send' if sending else 'announced'} a {size}-byte frame"
        super().__init__(f"frame too large: {who} {what}; the limit is {limit} bytes", peer=peer)
        self.size = size
        self.limit = limit


class TruncatedFrameError(FramingError):
    """The stream ended in the middle of a frame.

    ``part`` is ``"header"`` (``received`` of 4 header bytes arrived) or
    ``"payload"`` (``received`` of ``expected`` payload bytes arrived).
    """

    def __init__(self, part: str, received: int, expected: int, *, peer: Any = None) -> None:
        where = "" if peer is None else f" from {peer}"
        super().__init__(
            f"stream{where} ended mid-{part}: got {received} of {expected} {part} bytes",
            peer=peer,
        )
        self.part = part
        self.received = received
        self.expected = expected


class FrameTimeoutError(FramingError):
    """A peer started a frame and then made no progress for longer than the deadline."""

    def __init__(self, timeout: float, received: int, expected: int, *, peer: Any = None) -> None:
        super().__init__(
            f"{peer} stalled mid-frame: no bytes for {timeout:g} s "
            f"with {received} of {expected} bytes of the frame received",
            peer=peer,
        )
        self.timeout = timeout
        self.received = received
        self.expected = expected
