"""barknet: non-blocking sockets, a reactor, layered transports and length-prefix framing.

The package the course notebooks run. Start with :class:`EventWatcher` (the
reactor), then :class:`TcpTransport` (raw bytes) and :class:`FramedTransport`
(whole frames over any transport); :mod:`barknet.framing` is the sans-I/O codec.
"""

from .errors import (
    BarknetError,
    ConnectFailedError,
    ConnectionBrokenError,
    FrameTimeoutError,
    FrameTooLargeError,
    FramingError,
    LingerTimeoutError,
    TlsError,
    TransportClosedError,
    TruncatedFrameError,
)
from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .frame_queue import FrameQueue
from .framed import FramedTransport
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode, encode_frame
from .interfaces import ITransport
from .reactor import EventWatcher, TimerHandle
from .tcp import TcpTransport
from .tls import TlsTransport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "BarknetError",
    "ConnectFailedError",
    "ConnectionBrokenError",
    "EventKind",
    "EventWatcher",
    "FrameDecoder",
    "FrameQueue",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "FramedTransport",
    "FramingError",
    "IOCounters",
    "IOEvent",
    "IOStatus",
    "ITransport",
    "LingerTimeoutError",
    "Peer",
    "ReadResult",
    "TcpTransport",
    "TimerHandle",
    "TlsError",
    "TlsTransport",
    "TransportClosedError",
    "TruncatedFrameError",
    "WriteResult",
    "encode",
    "encode_frame",
]
