"""Experiments for the TLS section of notebook 09, as plain functions.

Theory of operation
-------------------
Each function builds a small TLS client and server on one private
:class:`~barknet.reactor.EventWatcher` over loopback, with
:class:`~barknet.testing.trace.TracingTransport` (and, once,
:class:`~barknet.testing.faults.ChunkingTransport`) slipped in **under** the TLS
layer, runs the loop until the exchange is over, closes everything, and
returns a summary string meant to be printed and compared by nbval.

What stays the same from run to run, and what does not:

* The certificate is made at first use with the ``openssl`` command (the
  standard library cannot make one): RSA 2048 (its signatures always have the
  same length), serial number 1, names ``localhost`` and ``127.0.0.1``. So on
  one machine every byte count below is the same on every run; another OpenSSL
  version may send a few bytes more or less in its handshake.
* Ciphertext is different on every run (fresh keys, fresh nonces), so it is
  never printed as hex: record headers are (``17 03 03`` and a length), the
  encrypted body is shown as ``..`` with its size.
* Peer numbers and ports are never printed.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import TlsError
from ..events import EventKind, IOEvent, IOStatus, Peer
from ..framed import FramedTransport
from ..framing import encode_frame
from ..interfaces import ITransport
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from ..testing.faults import ChunkingTransport
from ..testing.trace import Trace, TracingTransport
from ..tls import TlsTransport
from .common import human_size, wait_readable_bytes

__all__ = [
    "chunked_records",
    "frames_before_and_after",
    "handshake_timeline",
    "lab_contexts",
    "record_summary",
    "records_in_pieces",
    "records_widget",
    "verification_failure",
]

#: TLS record content types, by the first byte of a record header.
RECORD_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}

_contexts: dict[str, ssl.SSLContext] = {}


def lab_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate, and a client context
    that trusts exactly that certificate (made once per process)."""
    if not _contexts:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("these experiments need the openssl command (apt install openssl)")
        with tempfile.TemporaryDirectory(prefix="barknet-tls-lab-") as where:
            cert, key = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
            subprocess.run(
                [
                    *(
                        openssl,
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-set_serial",
                        "1",
                    ),
                    *("-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"),
                    *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                ],
                check=True,
                capture_output=True,
            )
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(cert, key)
            client = ssl.create_default_context(cafile=cert)
        _contexts["server"], _contexts["client"] = server, client
    return _contexts["server"], _contexts["client"]


def record_summary(data: bytes) -> list[str]:
    """Split ``data`` (one direction of a TLS stream) into records, one line each:
    type, header bytes in hex, body size. A cut-off last record is said so."""
    lines, at = [], 0
    while at + 5 <= len(data):
        kind, size = data[at], int.from_bytes(data[at + 3 : at + 5], "big")
        header = data[at : at + 5].hex(" ")
        have = min(size, len(data) - at - 5)
        name = RECORD_TYPES.get(kind, f"type {kind}")
        cut = "" if have == size else f" (only {have} here)"
        lines.append(f"{header} | .. {size} bytes{cut}: {name}")
        at += 5 + size
    return lines


class _Pair:
    """A TLS client and server on one loop, each with a tracer under its TLS layer."""

    def __init__(
        self,
        *,
        server_inner: Callable[[ITransport], ITransport] = lambda t: t,
        client_hostname: str | None = None,
        client_context: ssl.SSLContext | None = None,
    ) -> None:
        server_ctx, client_ctx = lab_contexts()
        self.ew = EventWatcher()
        self.trace = Trace(capture=1 << 20, frames=False)
        self.events: dict[str, list[IOEvent]] = {"client": [], "server": []}
        self.frames: dict[str, list[bytes]] = {"client": [], "server": []}
        self.tcps = [TcpTransport(), TcpTransport()]
        server_tls = TlsTransport(
            server_inner(TracingTransport(self.tcps[0], self.trace, "server")), server_ctx
        )
        client_tls = TlsTransport(
            TracingTransport(self.tcps[1], self.trace, "client"),
            client_context or client_ctx,
            server_hostname=client_hostname,
        )
        self.server = FramedTransport(server_tls)
        self.client = FramedTransport(client_tls)
        self.server.attach(self.ew, lambda e: self._on(e, "server", self.server))
        self.client.attach(self.ew, lambda e: self._on(e, "client", self.client))
        self.peer: Peer = self.client.connect(self.server.bind())

    def _on(self, event: IOEvent, side: str, transport: FramedTransport) -> None:
        self.events[side].append(event)
        if event.kind is EventKind.READABLE:
            while (r := transport.resume_read(event.peer)).status is IOStatus.OK:
                self.frames[side].append(bytes(r.data))
                if side == "server":
                    transport.resume_write(r.data, event.peer)  # echo

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        self.ew.run_until(condition, timeout)

    def writes(self, since: int = 0) -> list[tuple[str, bytes]]:
        """Every write that moved bytes, in order: (side, bytes)."""
        return [
            (r.side, r.data)
            for r in self.trace.records[since:]
            if r.direction == "out" and r.returned
        ]

    def close(self) -> None:
        self.client.close()
        self.server.close()
        for _ in range(3):
            self.ew.run_once(0)
        self.ew.close()

    def __enter__(self) -> _Pair:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _kinds(data: bytes) -> str:
    names = [line.rsplit(": ", 1)[1] for line in record_summary(data)]
    counted: list[str] = []
    for name in dict.fromkeys(names):
        n = names.count(name)
        counted.append(name if n == 1 else f"{n} × {name}")
    return ", ".join(counted)


def handshake_timeline() -> str:
    """Which side wrote how many bytes when, from ``connect`` to the first echo.

    A TLS 1.3 handshake is one round trip: the client's hello, the server's
    whole flight (hello, certificate, its signature, Finished), the client's
    Finished. Everything after the server's hello is already encrypted, so it
    shows as ``application_data`` records (the ``change_cipher_spec`` is a
    no-op kept for middleboxes). The client may send its first frame right
    after its Finished; the server, once it has read that Finished, sends two
    session tickets (for resuming later), then the echo.
    """
    with _Pair() as pair:
        pair.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in pair.events["client"]))
        pair.client.resume_write(b"hello", pair.peer)
        pair.run_until(lambda: bool(pair.frames["client"]))
        info = pair.client.inner.cipher_info(pair.peer)  # type: ignore[attr-defined]
        writes = pair.writes()
    lines = [f"{info['version']} with {info['cipher']}, over loopback"]
    total = {"client": 0, "server": 0}
    for step, (side, data) in enumerate(writes, 1):
        total[side] += len(data)
        lines.append(f"{step:2}. {side:6} wrote {len(data):5} bytes: {_kinds(data)}")
    lines.append(
        f"handshake and one echoed 5-byte frame: client wrote {total['client']} bytes, "
        f"server wrote {total['server']} bytes"
    )
    return "\n".join(lines)


def frames_before_and_after(payloads: tuple[bytes, ...] = (b"hello", b"barknet!")) -> str:
    """The same frames as the framing layer hands them to TLS (length prefixes in
    plain sight) and as TLS hands them to TCP (one opaque record per frame)."""
    with _Pair() as pair:
        pair.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in pair.events["client"]))
        for _ in range(5):  # let the session tickets arrive and be read
            pair.ew.run_once(0.01)
        start = len(pair.trace.records)
        for payload in payloads:
            pair.client.resume_write(payload, pair.peer)
        pair.run_until(lambda: len(pair.frames["client"]) == len(payloads))
        sent = b"".join(data for side, data in pair.writes(start) if side == "client")
    lines = ["before TLS (what FramedTransport writes):"]
    for payload in payloads:
        frame = encode_frame(payload)
        lines.append(f"  {frame[:4].hex(' ')} | {frame[4:].hex(' ')}   {payload!r}")
    lines.append("after TLS (what TcpTransport sends; the bodies differ on every run):")
    lines += [f"  {line}" for line in record_summary(sent)]
    lines.append(
        "each record = 5-byte header + frame + 1 byte (inner content type) + 16 bytes (tag)"
    )
    return "\n".join(lines)


def chunked_records(max_read: int = 7, payload: bytes = b"one frame, many reads") -> str:
    """A ``ChunkingTransport`` under the server's TLS layer reads at most
    ``max_read`` bytes at a time: the record arrives in pieces, OpenSSL waits
    for the whole of it, the frame comes out whole."""
    chunker: list[ChunkingTransport] = []

    def chunked(inner: ITransport) -> ITransport:
        chunker.append(ChunkingTransport(inner, max_read=max_read))
        return chunker[0]

    with _Pair(server_inner=chunked) as pair:
        pair.run_until(lambda: any(e.kind is EventKind.ACCEPTED for e in pair.events["server"]))
        for _ in range(5):
            pair.ew.run_once(0.01)
        start = len(pair.trace.records)
        pair.client.resume_write(payload, pair.peer)
        pair.run_until(lambda: bool(pair.frames["server"]))
        reads = [
            r.returned
            for r in pair.trace.records[start:]
            if r.side == "server" and r.direction == "in" and r.returned
        ]
        sent = b"".join(data for side, data in pair.writes(start) if side == "client")
        got = pair.frames["server"][0]
    record = record_summary(sent)[0]
    return "\n".join(
        [
            f"the client sent one record: {record}",
            f"the server's TLS layer read it in {len(reads)} pieces: "
            + " + ".join(map(str, reads))
            + f" = {sum(reads)} bytes",
            f"the owner got one frame of {len(got)} bytes: {got!r}",
        ]
    )


def records_in_pieces(size: int = 40_000, max_read: int = 4096) -> str:
    """One frame of ``size`` bytes: which records it became, and which of the
    server's reads (at most ``max_read`` bytes each, a ``ChunkingTransport``
    under the server's TLS layer) brought each record.

    The server does not read until every record sits in its socket, so the
    reads are the same on every run: each takes ``max_read`` bytes, the last one
    what is left. A record is decrypted only once its last piece arrived.
    """
    with _Pair(server_inner=lambda inner: ChunkingTransport(inner, max_read=max_read)) as pair:
        pair.run_until(lambda: any(e.kind is EventKind.ACCEPTED for e in pair.events["server"]))
        (server_peer,) = [e.peer for e in pair.events["server"] if e.kind is EventKind.ACCEPTED]
        for _ in range(5):  # let the session tickets arrive and be read
            pair.ew.run_once(0.01)
        pair.server.suspend_read(server_peer)
        start = len(pair.trace.records)
        payload = bytes(i % 251 for i in range(size))
        pair.client.resume_write(payload, pair.peer)
        tls: Any = pair.client.inner
        pair.run_until(
            lambda: (
                not (pair.client.write_buffer_size(pair.peer) or tls.write_buffer_size(pair.peer))
            )
        )
        sent = b"".join(data for side, data in pair.writes(start) if side == "client")
        wait_readable_bytes(pair.tcps[0].socket_of(server_peer), len(sent))
        again = pair.server.resume_read(server_peer)  # read again
        if again.status is IOStatus.OK:  # the frame came at once
            pair.frames["server"].append(bytes(again.data))
        pair.run_until(lambda: bool(pair.frames["server"]))
        reads = [
            r.returned
            for r in pair.trace.records[start:]
            if r.side == "server" and r.direction == "in" and r.returned
        ]
        intact = pair.frames["server"] == [payload]
    records = record_summary(sent)
    sizes = [5 + int(line.split(".. ")[1].split(" ")[0]) for line in records]
    lines = [
        f"one {size:,}-byte frame left the client as {len(records)} "
        f"record{'s' if len(records) > 1 else ''} ({len(sent):,} bytes):"
    ]
    lines += _grouped([f"  {line}" for line in records])
    lines.append(
        f"the server's TLS layer read them {human_size(max_read)} at a time, "
        f"in {len(reads)} read{'s' if len(reads) > 1 else ''}:"
    )
    ends = [sum(reads[: i + 1]) for i in range(len(reads))]
    at = 0
    spans = []
    for number, record in enumerate(sizes, 1):
        first = next(i for i, end in enumerate(ends, 1) if end > at)
        last = next(i for i, end in enumerate(ends, 1) if end >= at + record)
        where = f"read {first}" if first == last else f"reads {first}-{last}"
        spans.append(f"  record {number} ({record:,} bytes): {where}")
        at += record
    lines += spans
    lines.append(f"the owner got one frame of {size:,} bytes, {'intact' if intact else 'DAMAGED'}")
    return "\n".join(lines)


def _grouped(lines: list[str]) -> list[str]:
    """Runs of the same line as one line with a count ("4 × ...")."""
    out: list[tuple[int, str]] = []
    for line in lines:
        if out and out[-1][1] == line:
            out[-1] = (out[-1][0] + 1, line)
        else:
            out.append((1, line))
    return [line if n == 1 else f"  {n} × {line.strip()}" for n, line in out]


def records_widget(size: int = 32 * 1024, max_read: int = 4096) -> Any:
    """Sliders for the frame size (16 B - 64 KiB) and the server's read size
    (256 B - 64 KiB) over :func:`records_in_pieces`."""
    import ipywidgets as widgets

    from .common import size_slider

    controls = {
        "size": size_slider("frame size", 16, 64 * 1024, size),
        "max_read": size_slider("server reads at most", 256, 64 * 1024, max_read),
    }
    out = widgets.Output()

    def update(_change: Any = None) -> None:
        with out:
            out.clear_output(wait=True)
            print(f"size={controls['size'].value} B, max_read={controls['max_read'].value} B")
            print(records_in_pieces(controls["size"].value, controls["max_read"].value))

    for control in controls.values():
        control.observe(update, names="value")
    update()
    return widgets.VBox([*controls.values(), out])


def verification_failure(case: str = "wrong hostname") -> str:
    """What each owner sees when the client refuses the server's certificate.

    ``case`` is ``"wrong hostname"`` (the client expects ``wrong.example``) or
    ``"untrusted"`` (the client trusts only the system's CAs).
    """
    if case == "wrong hostname":
        options: dict[str, Any] = {"client_hostname": "wrong.example"}
    elif case == "untrusted":
        options = {"client_context": ssl.create_default_context()}
    else:
        raise ValueError('case is "wrong hostname" or "untrusted"')
    with _Pair(**options) as pair:
        pair.run_until(lambda: all(_closed(pair.events[s]) for s in ("client", "server")))
        events = {side: list(pair.events[side]) for side in ("client", "server")}
    lines = [f"{case}:"]
    for side in ("client", "server"):
        kinds = ", ".join(e.kind.name for e in events[side])
        lines.append(f"  {side} owner saw: {kinds}")
        (closed,) = _closed(events[side])
        error = closed.error
        if isinstance(error, TlsError):
            lines.append(f"    {type(error).__name__}, reason {error.reason}")
            if error.verify_message:
                lines.append(f"    {error.verify_message}")
        else:
            lines.append(f"    {closed.status.name} {type(error).__name__}")
    return "\n".join(lines)


def _closed(events: list[IOEvent]) -> list[IOEvent]:
    return [e for e in events if e.kind is EventKind.CLOSED]
