"""TlsTransport: the conformance suite over TLS, interop with peers we did not write,
partial I/O, half-close, backpressure, and hostile or broken peers.

Certificates are made at test time by ``trustme`` (a throwaway CA per test session).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    FrameTooLargeError,
    IOEvent,
    IOStatus,
    Peer,
    TcpTransport,
    TransportClosedError,
    TruncatedFrameError,
    WriteResult,
    encode_frame,
)
from barknet.errors import ConnectionBrokenError, LingerTimeoutError, TlsError
from barknet.interfaces import ITransport
from barknet.testing.conformance import CHECKS, Check
from barknet.testing.faults import ChunkingTransport
from barknet.testing.trace import Trace, TracingTransport
from barknet.tls import TlsTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

HOST = "127.0.0.1"


# ------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def pem_files(
    ca: trustme.CA, server_cert: trustme.LeafCert, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("pem")
    files = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for pem in server_cert.cert_chain_pems[1:]:
        pem.write_to_path(str(files["cert"]), append=True)
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    return files


# -------------------------------------------------------------- the conformance suite
def _contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


_SUITE_CA = trustme.CA()
_SERVER_CTX, _CLIENT_CTX = _contexts(_SUITE_CA)


def framed_over_tls(inner: ITransport) -> ITransport:
    return FramedTransport(TlsTransport(inner, _SERVER_CTX, client_context=_CLIENT_CTX))


def framed_over_tls_over_chunking(inner: ITransport) -> ITransport:
    """7-byte reads, 11-byte writes and injected EAGAINs under TLS: every record
    header (5 bytes) and body, and the handshake itself, arrive in pieces."""
    chunked = ChunkingTransport(inner, max_read=7, max_write=11, would_block=0.2)
    return FramedTransport(TlsTransport(chunked, _SERVER_CTX, client_context=_CLIENT_CTX))


def framed_over_tls_traced(inner: ITransport) -> ITransport:
    traced = TracingTransport(inner, Trace(capture=0, frames=False))
    return FramedTransport(TlsTransport(traced, _SERVER_CTX, client_context=_CLIENT_CTX))


# These three send plaintext from a raw socket; a TLS server rightly refuses it as a
# failed handshake. Their encrypted equivalents are below (test_*_inside_tls_*). The
# checks marked plain_wire (wire format, interleaved peers, decoder cost) also speak
# plain frames from a raw socket, for the same reason they are left out.
_RAW_PLAINTEXT_CHECKS = {"oversized length prefix", "EOF mid-header", "EOF mid-payload"}

# Three bulk checks run over plain TLS only: through 7-byte reads they take many
# seconds for nothing new (partial I/O is the whole point of the chunking stack).
_BULK_CHECKS = {
    "large message, partial I/O",
    "50 concurrent connections",
    "a frame of exactly max_frame_size",
}

TLS_CASES = [
    pytest.param(make, check, id=f"{make.__name__}-{check.name}")
    for make in (framed_over_tls, framed_over_tls_over_chunking, framed_over_tls_traced)
    for check in CHECKS
    if check.name not in _RAW_PLAINTEXT_CHECKS
    and not check.plain_wire
    and not (make is not framed_over_tls and check.name in _BULK_CHECKS)
]


@pytest.mark.parametrize(("make", "check"), TLS_CASES)
def test_framed_over_tls_passes_check(make: Callable[[ITransport], ITransport], check: Check):
    check.run(make)


def test_raw_plaintext_checks_are_refused_as_a_failed_handshake() -> None:
    """Why three checks are left out above: their raw peer does not speak TLS."""
    (check,) = [c for c in CHECKS if c.name == "EOF mid-payload"]
    with pytest.raises(AssertionError, match="TlsError"):
        check.run(framed_over_tls)


# ------------------------------------------------------------------- small helpers
class Side:
    """One transport and what its owner saw (frames or bytes per peer, events)."""

    def __init__(self, ew: EventWatcher, transport: ITransport, *, echo: bool = False) -> None:
        self.ew, self.transport, self.echo = ew, transport, echo
        self.events: list[IOEvent] = []
        self.data: dict[Peer, list[bytes]] = {}
        self.on_event: Callable[[IOEvent], None] | None = None
        #: Set it to take at most this many bytes per READABLE, in one read.
        self.read_limit: int | None = None
        self.address: tuple[str, int] = ("", 0)  # for servers
        transport.attach(ew, self._replay)

    def _replay(self, event: IOEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.READABLE and self.read_limit is not None:
            r = self.transport.resume_read(event.peer, bytearray(self.read_limit))
            if r.status is IOStatus.OK:
                self.data.setdefault(event.peer, []).append(bytes(r.data))
        elif event.kind is EventKind.READABLE:
            while (r := self.transport.resume_read(event.peer)).status is IOStatus.OK:
                self.data.setdefault(event.peer, []).append(bytes(r.data))
                if self.echo:
                    self.transport.resume_write(bytes(r.data), event.peer)
        if self.on_event is not None:
            self.on_event(event)

    def of(self, kind: EventKind, peer: Peer | None = None) -> list[IOEvent]:
        return [e for e in self.events if e.kind is kind and (peer is None or e.peer == peer)]

    def closed(self, peer: Peer | None = None) -> list[IOEvent]:
        return self.of(EventKind.CLOSED, peer)

    def got(self, peer: Peer) -> bytes:
        return b"".join(self.data.get(peer, []))


@pytest.fixture
def sides(ew: EventWatcher) -> Iterator[Callable[..., Side]]:
    made: list[Side] = []

    def make(transport: ITransport, *, echo: bool = False) -> Side:
        side = Side(ew, transport, echo=echo)
        made.append(side)
        return side

    yield make
    for side in made:
        side.transport.close()
    for _ in range(3):
        ew.run_once(0)


@pytest.fixture
def tls_server(sides, server_ctx) -> Callable[..., Side]:
    """``tls_server(framed=True, echo=True)``: a bound TLS server on loopback."""

    def make(*, framed: bool = True, echo: bool = True, **tcp: Any) -> Side:
        transport: ITransport = TlsTransport(TcpTransport(**tcp), server_ctx)
        if framed:
            transport = FramedTransport(transport)
        side = sides(transport, echo=echo)
        side.address = transport.bind()
        return side

    return make


@pytest.fixture
def tls_client(sides, client_ctx) -> Callable[..., Side]:
    """``tls_client(framed=True, **tls_options)``: a client transport (connect yourself)."""

    def make(*, framed: bool = True, context: Any = None, **options: Any) -> Side:
        tcp_options = {k: options.pop(k) for k in ("sndbuf", "rcvbuf") if k in options}
        transport: ITransport = TlsTransport(
            TcpTransport(**tcp_options), context or client_ctx, **options
        )
        if framed:
            transport = FramedTransport(transport)
        return sides(transport)

    return make


class InThread:
    """Run ``fn`` in a thread; ``result()`` joins it and re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = fn()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 10) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def _recv_exact(sock: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def _recv_frame(sock: Any) -> bytes:
    (size,) = struct.unpack("!I", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


def _blocking_tls_client(address, ctx, hostname=HOST) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=10)
    return ctx.wrap_socket(raw, server_hostname=hostname, suppress_ragged_eofs=False)


# --------------------------------------------------------------- interop: stdlib ssl
def test_blocking_stdlib_ssl_client_gets_echoes_and_a_close_notify(
    ew, tls_server, client_ctx
) -> None:
    server = tls_server()

    def client() -> bytes:
        with _blocking_tls_client(server.address, client_ctx) as sock:
            for i in range(20):
                sock.sendall(encode_frame(b"frame %d" % i * (i * 50)))
            for i in range(20):
                assert _recv_frame(sock) == b"frame %d" % i * (i * 50)
            sock.unwrap().close()  # close_notify, then TCP close
        return b"ok"

    thread = InThread(client)
    ew.run_until(lambda: thread.done and server.closed(), timeout=10)
    assert thread.result() == b"ok"
    (closed,) = server.closed()
    assert closed.status is IOStatus.EOF, closed


def test_our_close_sends_close_notify_so_the_peer_sees_a_clean_eof(
    ew, tls_server, client_ctx
) -> None:
    """suppress_ragged_eofs=False: without close_notify the stdlib raises SSLEOFError."""
    server = tls_server(echo=False)
    server.on_event = lambda e: (
        e.kind is EventKind.READABLE and server.transport.close(e.peer)  # type: ignore[func-returns-value]
    )

    def client() -> bytes:
        with _blocking_tls_client(server.address, client_ctx) as sock:
            sock.sendall(encode_frame(b"bye"))
            return sock.recv(10)

    thread = InThread(client)
    ew.run_until(lambda: thread.done, timeout=10)
    assert thread.result() == b""  # a clean TLS EOF, not SSLEOFError


def test_barknet_client_talks_to_a_blocking_stdlib_ssl_server(ew, tls_client, server_ctx) -> None:
    listener = socket.create_server((HOST, 0))

    def server() -> bytes:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
            frame = _recv_frame(tls)
            tls.sendall(encode_frame(frame.upper()))
            assert tls.recv(1) == b""  # our close_notify
            tls.unwrap()
        return frame

    thread = InThread(server)
    try:
        client = tls_client()
        peer = client.transport.connect(listener.getsockname())
        client.transport.resume_write(b"hello stdlib", peer)
        ew.run_until(lambda: client.got(peer), timeout=10)
        assert client.got(peer) == b"HELLO STDLIB"
        client.transport.close(peer)
        ew.run_until(lambda: thread.done and client.closed(peer), timeout=10)
        assert thread.result() == b"hello stdlib"
    finally:
        listener.close()


# ---------------------------------------------------------------- interop: asyncio
def test_asyncio_ssl_client_gets_echoes(ew, tls_server, client_ctx) -> None:
    server = tls_server()

    async def client() -> list[bytes]:
        reader, writer = await asyncio.open_connection(*server.address, ssl=client_ctx)
        frames = [b"", b"a", b"x" * 100_000]
        for frame in frames:
            writer.write(encode_frame(frame))
        got = []
        for _ in frames:
            (size,) = struct.unpack("!I", await reader.readexactly(4))
            got.append(await reader.readexactly(size))
        writer.close()
        await writer.wait_closed()
        return got

    thread = InThread(lambda: asyncio.run(client()))
    ew.run_until(lambda: thread.done and server.closed(), timeout=10)
    assert thread.result() == [b"", b"a", b"x" * 100_000]
    assert server.closed()[0].status is IOStatus.EOF


def test_barknet_client_talks_to_an_asyncio_ssl_server(ew, tls_client, server_ctx) -> None:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        done = asyncio.Event()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
            writer.close()
            done.set()

        srv = await asyncio.start_server(echo, HOST, 0, ssl=server_ctx)
        box["address"] = srv.sockets[0].getsockname()[:2]
        ready.set()
        await asyncio.wait_for(done.wait(), 10)
        srv.close()
        await srv.wait_closed()

    thread = InThread(lambda: asyncio.run(serve()))
    assert ready.wait(10)
    client = tls_client()
    peer = client.transport.connect(box["address"])
    payloads = [b"one", b"", b"y" * 300_000]
    for payload in payloads:
        client.transport.resume_write(payload, peer)
    ew.run_until(lambda: len(client.data.get(peer, [])) == 3, timeout=10)
    assert client.data[peer] == payloads
    client.transport.close(peer)
    ew.run_until(lambda: thread.done, timeout=10)
    thread.result()


# ---------------------------------------------------------------- interop: openssl
def _reap(process: subprocess.Popen[Any]) -> None:
    """Kill ``process`` if it still runs, wait for it, and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(10)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the openssl command is missing (.ci/run installs Debian's openssl)")
        pytest.skip("the openssl command is not installed")
    return path


def test_missing_openssl_fails_under_ci_and_skips_elsewhere(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="openssl command is missing"):
        _openssl()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _openssl()


def _s_client(
    address: tuple[str, int], pem_files: dict[str, Path], *options: str, quiet_stdout: bool = False
) -> subprocess.Popen[bytes]:
    """``openssl s_client`` connecting to ``address`` (trusting the test CA), with
    ``options``; its stdin a pipe, its output a pipe (or nowhere)."""
    output = subprocess.DEVNULL if quiet_stdout else subprocess.PIPE
    return subprocess.Popen(
        [
            _openssl(),
            "s_client",
            *("-connect", f"{address[0]}:{address[1]}", "-CAfile", str(pem_files["ca"])),
            *("-servername", "localhost", *options),
        ],
        stdin=subprocess.PIPE,
        stdout=output,
        stderr=output,
    )


def test_openssl_s_client_gets_echoes_from_a_barknet_server(ew, tls_server, pem_files) -> None:
    server = tls_server()
    frames = [b"from s_client", b"", b"z" * 5000]
    process = _s_client(server.address, pem_files, "-verify_return_error", "-quiet", "-no_ign_eof")
    try:
        process.stdin.write(b"".join(encode_frame(f) for f in frames))  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        ew.run_until(lambda: len(next(iter(server.data.values()), [])) >= 3, timeout=10)
        process.stdin.close()  # type: ignore[union-attr]
        ew.run_until(lambda: server.closed(), timeout=10)
        out = process.stdout.read()  # type: ignore[union-attr]
        err = process.stderr.read()  # type: ignore[union-attr]
        process.wait(10)
    finally:
        _reap(process)
    assert next(iter(server.data.values())) == frames
    assert out == b"".join(encode_frame(f) for f in frames), err
    (closed,) = server.closed()
    assert closed.status is IOStatus.EOF, closed  # s_client sent close_notify


def test_what_openssl_writes_while_a_server_only_reads_goes_out_at_once(
    ew, tls_server, pem_files
) -> None:
    """s_client (TLS 1.2) asks to renegotiate ("R" on its stdin) while the server
    only reads. OpenSSL writes its refusal while reading; it must leave at once,
    not with the owner's next write (this owner never writes): then s_client
    gives up and the server gets CLOSED(ERROR, TlsError). Before, the refusal
    waited in OpenSSL's buffer and both sides waited for ever."""
    server = tls_server(framed=False, echo=False)
    process = _s_client(server.address, pem_files, "-tls1_2", quiet_stdout=True)
    try:
        ew.run_until(lambda: server.of(EventKind.ACCEPTED), timeout=10)
        (accepted,) = server.of(EventKind.ACCEPTED)
        process.stdin.write(b"one\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        ew.run_until(lambda: server.got(accepted.peer) == b"one\n", timeout=10)
        process.stdin.write(b"R\n")  # type: ignore[union-attr]  # s_client: renegotiate
        process.stdin.flush()  # type: ignore[union-attr]
        ew.run_until(lambda: server.closed(), timeout=10)
        process.wait(10)
    finally:
        _reap(process)
    (closed,) = server.closed()
    assert closed.status is IOStatus.ERROR and isinstance(closed.error, TlsError), closed


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_write_eof_after_openssl_s_client_sent_all_and_hung_up_keeps_what_it_sent(
    ew, server_ctx, pem_files, version: str
) -> None:
    """s_client at the end of its input sends its data, its close_notify and its
    FIN, and closes its socket; a server that reads later and first calls
    write_eof has its close_notify answered with a reset (the shutdown below then
    fails with ENOTCONN). What s_client sent is still in the kernel: the server
    must read all of it, then EOF, and the end is clean, CLOSED(EOF)."""
    payload = b"request from s_client\n" * 100
    got = bytearray()
    statuses: list[IOStatus] = []
    server = TlsTransport(TcpTransport(), server_ctx)

    def read(peer: Peer) -> None:
        while (result := server.resume_read(peer)).status is IOStatus.OK:
            got.extend(result.data)
        statuses.append(result.status)

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.suspend_read(event.peer)  # a server busy elsewhere reads later
            statuses.append(IOStatus.OK)
        elif event.kind is EventKind.READABLE:
            read(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    closed: list[IOEvent] = []
    server.attach(ew, owner)
    host, port = server.bind()
    process = _s_client((host, port), pem_files, version, "-quiet", "-no_ign_eof")
    try:
        ew.run_until(lambda: statuses, timeout=10)  # accepted
        process.stdin.write(payload)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]  # end of input: it sends all, then goes
        process.wait(10)
        (peer,) = server.peers
        for _ in range(5):
            ew.run_once(0.02)
        server.write_eof(peer)
        for _ in range(5):
            ew.run_once(0.02)  # (our close_notify meets its closed socket: a reset)
        read(peer)
        ew.run_until(lambda: closed, timeout=10)
    finally:
        _reap(process)
        server.close()
        ew.run_once(0)
    assert bytes(got) == payload
    assert IOStatus.ERROR not in statuses and statuses[-1] is IOStatus.EOF
    assert closed[0].status is IOStatus.EOF, closed


def _s_server(
    pem_files: dict[str, Path], *options: str
) -> tuple[subprocess.Popen[bytes], int, bytearray, InThread]:
    """``openssl s_server`` on loopback for one connection, with the test
    certificate and ``options``: the process (its stdin a pipe), its port, and
    what it prints (its chatter, its errors and what it received), collected by
    a thread that ends with it."""
    process = subprocess.Popen(
        [
            _openssl(),
            "s_server",
            *("-accept", f"{HOST}:0", "-naccept", "1"),
            *("-cert", str(pem_files["cert"]), "-key", str(pem_files["key"]), *options),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    first = process.stdout.readline().decode()
    while not first.startswith("ACCEPT"):
        assert first, "openssl s_server ended before it listened"
        first = process.stdout.readline().decode()
    printed = bytearray()
    stdout = process.stdout
    reader = InThread(lambda: [printed.extend(c) for c in iter(stdout.read1, b"")])
    return process, int(first.rsplit(":", 1)[1]), printed, reader


def test_barknet_client_talks_to_openssl_s_server(ew, tls_client, pem_files) -> None:
    process, port, printed, reader = _s_server(pem_files)
    try:
        client = tls_client(server_hostname="localhost")
        peer = client.transport.connect((HOST, port))
        ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
        process.stdin.write(encode_frame(b"hello barknet"))  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        ew.run_until(lambda: client.got(peer), timeout=10)
        assert client.data[peer] == [b"hello barknet"]
        # Now s_server sits in its loop, waiting on the socket: our frame wakes it.
        client.transport.resume_write(b"hello s_server", peer)
        ew.run_until(lambda: encode_frame(b"hello s_server") in printed, timeout=10)
        client.transport.close(peer)
        ew.run_until(lambda: client.closed(peer) and reader.done, timeout=10)
        reader.result()
    finally:
        _reap(process)
    assert client.closed(peer)[0].status is IOStatus.OK


@pytest.mark.parametrize("end", ["close", "write_eof"])
def test_ending_while_the_server_renegotiates_still_sends_close_notify(
    ew, tls_client, pem_files, end
) -> None:
    # A TLS 1.2 server may ask its client to renegotiate (HelloRequest), and
    # OpenSSL, as the client, goes along. Ending in the middle of that handshake
    # must not turn into a bare FIN, which the server reads as a truncation: our
    # close_notify waits until the handshake is over.
    process, port, printed, reader = _s_server(pem_files, "-tls1_2")
    try:
        client = tls_client(framed=False, server_hostname="localhost")
        transport = client.transport
        peer = transport.connect((HOST, port))
        ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
        below = transport.inner  # type: ignore[attr-defined]
        sent = below.counters(peer).bytes_sent
        process.stdin.write(b"r\n")  # type: ignore[union-attr]  # s_server: renegotiate
        process.stdin.flush()  # type: ignore[union-attr]
        # Our answer to its HelloRequest (a new ClientHello) leaves as soon as we
        # read it: the handshake is under way, and we end our side now.
        ew.run_until(lambda: below.counters(peer).bytes_sent > sent, timeout=10)
        getattr(transport, end)(peer)
        ew.run_until(lambda: client.closed(peer) and reader.done, timeout=10)
        reader.result()
    finally:
        _reap(process)
    (closed,) = client.closed(peer)
    assert closed.error is None, closed
    assert b"DONE" in printed  # s_server read our close_notify ...
    assert b"unexpected eof" not in printed, bytes(printed)  # ... not a truncation


# ---------------------------------------------------------- partial I/O, one byte at a time
def test_frames_before_a_truncating_peer_reach_an_owner_taking_one_per_readable(
    ew, tls_server, client_ctx
) -> None:
    """A peer that ends with a bare FIN (no close_notify) right behind its frames:
    an owner that takes one frame per READABLE still gets every one, then
    CLOSED(ERROR, TlsError TRUNCATED). Everything is in the kernel before the
    server reads, so the read that completes the large frame is followed, in
    the same pump, by the one that meets the truncation."""
    server = tls_server(echo=False)
    server.read_limit = 200_000  # one frame per READABLE, copied into a buffer
    handshake = InThread(lambda: _blocking_tls_client(server.address, client_ctx))
    ew.run_until(lambda: handshake.done and server.of(EventKind.ACCEPTED), timeout=10)
    (accepted,) = server.of(EventKind.ACCEPTED)
    frames = [bytes([65 + i]) * 100 for i in range(10)] + [b"Z" * 150_000]
    with handshake.result() as sock:
        sock.sendall(b"".join(encode_frame(f) for f in frames))
        sock.shutdown(socket.SHUT_WR)  # a FIN, no close_notify: a truncation
        ew.run_until(lambda: server.closed(), timeout=10)
    assert server.data[accepted.peer] == frames
    (closed,) = server.closed()
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, TlsError) and closed.error.reason == "TRUNCATED"


def test_handshake_one_byte_at_a_time_then_frames(ew, sides) -> None:
    server_tcp, client_tcp = TcpTransport(), TcpTransport()
    server_chunks = ChunkingTransport(server_tcp, max_read=1, max_write=1)
    client_chunks = ChunkingTransport(client_tcp, max_read=1, max_write=1)
    server = sides(FramedTransport(TlsTransport(server_chunks, _SERVER_CTX)), echo=True)
    client = sides(FramedTransport(TlsTransport(client_chunks, _CLIENT_CTX)))
    address = server.transport.bind()
    peer = client.transport.connect(address)
    client.transport.resume_write(b"after a one-byte handshake", peer)
    ew.run_until(lambda: client.got(peer), timeout=20)
    assert client.data[peer] == [b"after a one-byte handshake"]
    # The server's flight (certificate included) left in well over a thousand writes.
    assert server_chunks.injected["capped_writes"] > 1000
    assert client_chunks.injected["capped_reads"] > 1000


def test_records_split_across_tiny_reads_and_writes_arrive_whole(ew, sides) -> None:
    server_chunks = ChunkingTransport(TcpTransport(), max_read=7, max_write=5, would_block=0.3)
    server = sides(FramedTransport(TlsTransport(server_chunks, _SERVER_CTX)), echo=True)
    client = sides(FramedTransport(TlsTransport(TcpTransport(), _CLIENT_CTX)))
    peer = client.transport.connect(server.transport.bind())
    payloads = [bytes([i]) * (i * 997 % 40_000) for i in range(12)]
    for payload in payloads:
        client.transport.resume_write(payload, peer)
    ew.run_until(lambda: len(client.data.get(peer, [])) == 12, timeout=20)
    assert client.data[peer] == payloads
    assert server_chunks.injected["would_block"] > 0


# ----------------------------------------------------------------- level-triggered READABLE
def test_owner_taking_a_few_bytes_per_readable_gets_them_all_without_spinning(
    ew, tls_server, tls_client
) -> None:
    server = tls_server(framed=False, echo=False)
    client = tls_client(framed=False)
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED) and server.of(EventKind.ACCEPTED), 10)
    (server_peer,) = [e.peer for e in server.of(EventKind.ACCEPTED)]
    server.read_limit = 10
    message = bytes(range(256)) * 4  # one record: after the first read, all of it is here
    client.transport.resume_write(message, peer)
    ew.run_until(lambda: len(server.got(server_peer)) == len(message), timeout=10)
    assert server.got(server_peer) == message
    readable = len(server.of(EventKind.READABLE))
    assert readable >= len(message) // 10
    for _ in range(20):
        ew.run_once(0)
    assert len(server.of(EventKind.READABLE)) == readable, "READABLE with nothing to read"


def test_reads_without_a_buffer_return_bytes_of_their_own_at_their_exact_size(
    ew, tls_server, tls_client
) -> None:
    """A read with no buffer decrypts into memory the transport keeps for the next
    such read: what it returned must be a copy, untouched by later reads."""
    server = tls_server(framed=False, echo=False)
    client = tls_client(framed=False)
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED) and server.of(EventKind.ACCEPTED), 10)
    (server_peer,) = [e.peer for e in server.of(EventKind.ACCEPTED)]
    # Read by hand below, not by the owner (the first read resumes reading, and
    # an owner that reads on READABLE would take the second message).
    server.transport.attach(ew, server.events.append)
    returned: list[Any] = []
    for message in (b"first message", b"2nd"):
        client.transport.resume_write(message, peer)
        ew.run_until(
            lambda: (
                (r := server.transport.resume_read(server_peer)).status is IOStatus.OK
                and returned.append(r.data) is None
            ),
            timeout=10,
        )
    assert returned == [b"first message", b"2nd"]
    assert [type(data) for data in returned] == [bytes, bytes]


def test_after_the_peers_close_notify_is_read_readable_stops(ew, tls_server, tls_client):
    """The peer's FIN follows its close_notify; we need nothing more from the socket,
    so it must not wake the owner turn after turn while the owner keeps the peer."""
    server = tls_server(framed=False, echo=False)
    client = tls_client(framed=False)
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
    client.transport.resume_write(b"last words", peer)
    client.transport.close(peer)
    statuses: list[IOStatus] = []

    def owner(event: IOEvent) -> None:
        server.events.append(event)
        if event.kind is EventKind.READABLE:
            while (r := server.transport.resume_read(event.peer)).status is IOStatus.OK:
                server.data.setdefault(event.peer, []).append(bytes(r.data))
            statuses.append(r.status)

    server.transport.attach(ew, owner)
    ew.run_until(lambda: IOStatus.EOF in statuses, timeout=10)
    seen = len(server.of(EventKind.READABLE))
    for _ in range(20):
        ew.run_once(0.001)
    assert len(server.of(EventKind.READABLE)) == seen
    assert b"".join(next(iter(server.data.values()))) == b"last words"


def test_half_a_record_waiting_for_its_rest_does_not_wake_the_owner(
    ew, tls_server, sides, client_ctx
) -> None:
    server = tls_server(framed=False, echo=False)
    client_tcp = TcpTransport()
    client = sides(TlsTransport(client_tcp, client_ctx))
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: server.of(EventKind.ACCEPTED), timeout=10)
    for _ in range(5):  # the client reads the session tickets
        ew.run_once(0.01)
    session = client.transport._sessions[peer]  # type: ignore[attr-defined]
    session.sslobj.write(b"x" * 1000)  # one record, which we send by hand, in two halves
    record = session.outgoing.read()
    half = len(record) // 2
    assert client_tcp.resume_write(record[:half], peer).sent == half
    for _ in range(20):
        ew.run_once(0.005)
    woken = len(server.of(EventKind.READABLE))
    assert woken <= 2, f"the owner was woken {woken} times for half a record"
    assert client_tcp.resume_write(record[half:], peer).sent == len(record) - half
    ew.run_until(lambda: server.data, timeout=10)
    assert b"".join(next(iter(server.data.values()))) == b"x" * 1000


# ------------------------------------------------------------------------- half-close
def test_write_eof_sends_close_notify_and_the_other_direction_still_works(
    ew, tls_server, tls_client
) -> None:
    server = tls_server(framed=False, echo=False)
    client = tls_client(framed=False)
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
    assert client.transport.resume_write(b"request", peer) == (7, IOStatus.OK, None)
    client.transport.write_eof(peer)
    with pytest.raises(TransportClosedError):
        client.transport.resume_write(b"more", peer)
    statuses: list[IOStatus] = []

    def server_owner(event: IOEvent) -> None:
        server.events.append(event)
        if event.kind is EventKind.READABLE:
            while (r := server.transport.resume_read(event.peer)).status is IOStatus.OK:
                server.data.setdefault(event.peer, []).append(bytes(r.data))
            statuses.append(r.status)
            if r.status is IOStatus.EOF and IOStatus.EOF not in statuses[:-1]:
                reply = b"response to " + server.got(event.peer)
                server.transport.resume_write(reply, event.peer)
                server.transport.write_eof(event.peer)

    server.transport.attach(ew, server_owner)
    ew.run_until(lambda: client.closed(peer) and server.closed(), timeout=10)
    assert client.got(peer) == b"response to request"
    # Both directions ended: each side closed itself, as a clean end.
    assert client.closed(peer)[0].status is IOStatus.EOF
    assert server.closed()[0].status is IOStatus.EOF
    assert statuses.count(IOStatus.EOF) == 1


@pytest.mark.parametrize("client_ends", [False, True], ids=["client goes on", "client ends"])
@pytest.mark.parametrize("first_read", [0, 100], ids=["nothing read", "part of a record read"])
def test_write_eof_keeps_what_the_peer_sent_before_it(
    ew, server_ctx, client_ctx, first_read: int, client_ends: bool
) -> None:
    """Our close_notify must not cost the peer's bytes already here: OpenSSL's
    shutdown, as ``unwrap()`` calls it, goes on to look for the peer's
    close_notify and breaks the session on the records it finds first
    (APPLICATION_DATA_AFTER_CLOSE_NOTIFY). Here the client's records (and its
    close_notify) arrive with the end of the handshake, before the server's
    ``write_eof``; the server must still read all of them, then EOF."""
    payload = os.urandom(6000)
    got = bytearray()
    statuses: list[IOStatus] = []
    server = TlsTransport(TcpTransport(), server_ctx)

    def server_owner(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED and not first_read:
            server.write_eof(event.peer)
        elif event.kind is EventKind.READABLE:
            if first_read and not got:
                result = server.resume_read(event.peer, max_len=first_read)
                got.extend(result.data)
                server.write_eof(event.peer)  # OpenSSL holds the rest of that record
            while (result := server.resume_read(event.peer)).status is IOStatus.OK:
                got.extend(result.data)
            statuses.append(result.status)
            if result.status is IOStatus.EOF:
                server.close(event.peer)

    server.attach(ew, server_owner)
    client = TlsTransport(TcpTransport(*server.bind()), client_ctx)

    def client_owner(event: IOEvent) -> None:
        if event.kind is EventKind.CONNECTED:
            client.resume_write(payload, event.peer)  # it leaves with our Finished
            if client_ends:
                client.write_eof(event.peer)

    client.attach(ew, client_owner)
    try:
        peer = client.connect()
        ew.run_until(lambda: len(got) >= len(payload) or IOStatus.ERROR in statuses, timeout=10)
        assert IOStatus.ERROR not in statuses and bytes(got) == payload
        if client_ends:
            ew.run_until(lambda: IOStatus.EOF in statuses, timeout=10)
        client.close(peer)
        ew.run_until(lambda: IOStatus.EOF in statuses, timeout=10)
        assert statuses.count(IOStatus.ERROR) == 0
    finally:
        client.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)


def test_unread_bytes_set_aside_at_write_eof_count_as_discarded_when_you_close(
    ew, server_ctx, client_ctx
) -> None:
    """The plaintext kept at ``write_eof`` (see the test above) is the peer's, and a
    ``close(peer)`` throws it away like anything else it sent: the
    ``LingerTimeoutError`` of a close that waited in vain counts it."""
    closed: list[IOEvent] = []
    server = TlsTransport(TcpTransport(sndbuf=4096), server_ctx, linger_timeout=0.3)

    def server_owner(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE and not closed:
            closed.append(event)  # (once)
            # The client never reads: this stays held here, and the close lingers.
            server.resume_write(b"r" * 1_000_000, event.peer)
            server.resume_read(event.peer, max_len=100)  # OpenSSL holds 5900 more
            server.write_eof(event.peer)
            server.close(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    server.attach(ew, server_owner)
    client = TlsTransport(TcpTransport(*server.bind(), rcvbuf=4096), client_ctx)

    def client_owner(event: IOEvent) -> None:
        if event.kind is EventKind.CONNECTED:
            client.resume_write(b"q" * 6000, event.peer)
            client.suspend_read(event.peer)
            # More while the server lingers: discarded too, and counted once.
            ew.call_later(0.1, client.resume_write, b"m" * 3000, event.peer)

    client.attach(ew, client_owner)
    try:
        client.connect()
        ew.run_until(lambda: len(closed) == 2, timeout=10)
        error = closed[1].error
        assert isinstance(error, LingerTimeoutError), closed[1]
        assert error.discarded == 5900 + 3000
    finally:
        client.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)


@pytest.mark.parametrize("framed", [False, True], ids=["tls", "framed over tls"])
def test_both_close_notifies_end_the_peer_at_once_though_the_client_keeps_tcp_open(
    ew, tls_server, client_ctx, framed: bool
) -> None:
    """interfaces.py: once both directions ended, the transport closes the peer
    itself, CLOSED(EOF). In TLS each direction ends with a close_notify; a
    client that answers ours with its own (``unwrap()``) and keeps the TCP
    connection open (to go on in plaintext, or just to pool it) has nothing
    more to say in this conversation, so no linger waits for its TCP FIN: the
    test's TCP linger is 60 s, and the CLOSED must not need it."""
    if framed:
        server = tls_server(framed=True, echo=False, linger_timeout=60)
        server.transport.half_close = True  # type: ignore[attr-defined]
    else:
        server = tls_server(framed=False, echo=False, linger_timeout=60)
    connecting = InThread(lambda: _blocking_tls_client(server.address, client_ctx))
    ew.run_until(lambda: connecting.done and server.of(EventKind.ACCEPTED), timeout=10)
    with contextlib.closing(connecting.result()) as sock:
        peer = server.of(EventKind.ACCEPTED)[0].peer
        server.transport.write_eof(peer)  # our close_notify
        answer = InThread(sock.unwrap)  # reads it, sends its own; TCP stays open
        ew.run_until(lambda: answer.done and server.closed(peer), timeout=10)
        plain = answer.result()
        assert server.closed(peer) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]
        plain.close()


def test_write_eof_before_the_handshake_ends_is_sent_once_it_has(
    ew, tls_server, tls_client
) -> None:
    server = tls_server(framed=False, echo=False)
    client = tls_client(framed=False)
    peer = client.transport.connect(server.address)
    client.transport.write_eof(peer)  # still connecting: nothing can be sent yet
    statuses: list[IOStatus] = []
    server.on_event = lambda e: (
        e.kind is EventKind.READABLE
        and statuses.append(server.transport.resume_read(e.peer).status)  # type: ignore[func-returns-value]
    )
    ew.run_until(lambda: IOStatus.EOF in statuses, timeout=10)
    assert client.of(EventKind.CONNECTED)  # the handshake finished first


class _HalfClosingChunks(ChunkingTransport):
    """Five-byte writes, and a ``write_eof`` that notes how much had been sent by then."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner, max_write=5)
        self.eof_after: int | None = None

    def write_eof(self, peer: Peer) -> None:
        self.eof_after = self.inner.counters(peer).bytes_sent


def test_write_eof_reaches_the_transport_below_only_after_every_record(
    ew, tls_server, sides, client_ctx
) -> None:
    server = tls_server(framed=False, echo=False)
    below = _HalfClosingChunks(TcpTransport())
    client = sides(TlsTransport(below, client_ctx))
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
    assert client.transport.resume_write(b"request", peer).sent == 7  # records queued here
    client.transport.write_eof(peer)  # close_notify queued behind them
    assert below.eof_after is None
    ew.run_until(lambda: below.eof_after is not None, timeout=10)
    for _ in range(5):
        ew.run_once(0.01)
    assert below.eof_after == below.inner.counters(peer).bytes_sent  # nothing after it
    ew.run_until(lambda: server.data, timeout=10)
    assert next(iter(server.data.values())) == [b"request"]


# ------------------------------------------------------------------------ backpressure
HIGH, LOW = 64 * 1024, 16 * 1024
#: What TlsTransport may hold past the mark: one record of plaintext, plus the
#: overhead of the records (about 22 bytes each) and a close_notify.
BOUND = HIGH + 16 * 1024 + 1024


class _SlowReaderRun:
    """A raw TLS client that writes 4 KiB chunks to a server that stops reading,
    obeying PAUSE/RESUME_WRITING and WOULD_BLOCK, then lets the server read.

    It records, from outside, what the owner sees: the flow events with the
    bytes held (``write_buffer_size``) when each came, the bytes held before
    the write that brought the pause, the most ever held, and the memory the
    process grew while the producer kept trying.
    """

    def __init__(self, ew: EventWatcher, server: Side, client: Side, *, early: bool) -> None:
        self.ew, self.server, self.client = ew, server, client
        self.flow: list[tuple[EventKind, int]] = []
        self.held_before_pause: int | None = None
        self.most_held = 0
        self.offered = b"".join(struct.pack(">I", i) * 1024 for i in range(64))  # 256 KiB
        self.position = 0
        self.blocked = False
        self.peer = client.transport.connect(server.address)
        client.on_event = self._on_client
        if not early:  # else write while the handshake still runs
            ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)

    @property
    def tls(self) -> Any:
        return self.client.transport

    @property
    def paused(self) -> bool:
        return bool(self.flow) and self.flow[-1][0] is EventKind.PAUSE_WRITING

    def _on_client(self, event: IOEvent) -> None:
        if event.kind in (EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING):
            self.flow.append((event.kind, self.tls.write_buffer_size(event.peer)))
        if event.kind is EventKind.WRITABLE:
            self.blocked = False
            self.produce()
        elif event.kind is EventKind.RESUME_WRITING:
            self.produce()

    def produce(self) -> None:
        while not self.paused and not self.blocked and self.position < len(self.offered):
            before = self.tls.write_buffer_size(self.peer)
            chunk = self.offered[self.position : self.position + 4096]
            pauses = len(self.flow)
            result = self.tls.resume_write(chunk, self.peer)
            self.position += result.sent
            self.blocked = result.status is IOStatus.WOULD_BLOCK
            if len(self.flow) > pauses and self.held_before_pause is None:
                self.held_before_pause = before
            self.most_held = max(self.most_held, self.tls.write_buffer_size(self.peer))

    def stall(self, turns: int) -> int:
        """Keep trying to write for ``turns`` loop turns; returns the memory grown."""
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for _ in range(turns):
                self.produce()
                self.ew.run_once(0.001)
                self.most_held = max(self.most_held, self.tls.write_buffer_size(self.peer))
            return tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()

    def let_the_server_read(self) -> bytes:
        (server_peer,) = [e.peer for e in self.server.of(EventKind.ACCEPTED)]
        got = self.server.data.setdefault(server_peer, [])
        while (r := self.server.transport.resume_read(server_peer)).status is IOStatus.OK:
            got.append(bytes(r.data))  # from here on READABLE does it
        self.ew.run_until(
            lambda: sum(map(len, got)) == len(self.offered) or self.client.closed(), 20
        )
        return b"".join(got)


@pytest.fixture
def slow_reader(ew, tls_server, tls_client) -> Callable[..., _SlowReaderRun]:
    def make(*, early: bool = False) -> _SlowReaderRun:
        server = tls_server(framed=False, echo=False, rcvbuf=4096)
        server.on_event = lambda e: (
            e.kind is EventKind.ACCEPTED and server.transport.suspend_read(e.peer)  # type: ignore[func-returns-value]
        )
        client = tls_client(framed=False, sndbuf=4096, high_water=HIGH, low_water=LOW)
        return _SlowReaderRun(ew, server, client, early=early)

    return make


def _check_pause_resume_and_bound(run: _SlowReaderRun) -> None:
    """PAUSE_WRITING once the bytes held cross high water, never more than one
    record past it, RESUME_WRITING at low water, and every byte arrives."""
    run.produce()
    grown = run.stall(100)
    assert run.flow and run.flow[0][0] is EventKind.PAUSE_WRITING, "no PAUSE_WRITING came"
    assert run.flow[0][1] > HIGH  # PAUSE came once the held bytes crossed the mark ...
    assert run.held_before_pause is not None and run.held_before_pause <= HIGH  # ... not before
    assert run.most_held <= BOUND, f"held {run.most_held} bytes for a peer that does not read"
    assert run.position < len(run.offered)  # the rest stayed with the producer
    assert grown < 2 * BOUND, f"{grown} bytes grew for a reader that never reads"
    received = run.let_the_server_read()
    assert received == run.offered
    kinds = [kind for kind, _ in run.flow]
    assert kinds[:2] == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING], run.flow
    assert kinds == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING] * (len(kinds) // 2)
    assert all(held <= LOW for kind, held in run.flow if kind is EventKind.RESUME_WRITING)
    assert run.most_held <= BOUND


def test_ciphertext_the_socket_has_not_taken_counts_against_the_water_marks(
    slow_reader,
) -> None:
    """After the handshake everything you write is encrypted at once: what a
    slow reader makes this layer hold is ciphertext."""
    run = slow_reader()
    _check_pause_resume_and_bound(run)


def test_plaintext_waiting_for_the_handshake_counts_against_the_water_marks(
    slow_reader,
) -> None:
    """Written before the handshake ended: the bytes wait as plaintext (a copy),
    count as held (what is past high_water is refused), and go out in order once
    the handshake is done. No flow event comes before CONNECTED (the order of
    events in interfaces.py); a pause still owed then comes right after it."""
    run = slow_reader(early=True)
    run.produce()
    assert not run.client.of(EventKind.CONNECTED)  # still handshaking ...
    assert run.blocked and not run.flow  # ... refused past the mark, with no event yet
    assert HIGH < run.tls.write_buffer_size(run.peer) <= BOUND
    run.stall(100)
    assert run.let_the_server_read() == run.offered
    kinds = [e.kind for e in run.client.events]
    flow = [kind for kind, _ in run.flow]
    assert flow, "no flow event: the slow reader should have paused the writer"
    assert kinds.index(EventKind.CONNECTED) < kinds.index(flow[0]), kinds
    assert flow == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING] * (len(flow) // 2)
    assert run.most_held <= BOUND


@pytest.mark.parametrize("counts", ["only plaintext", "only ciphertext"])
def test_an_implementation_that_counts_half_of_what_it_holds_fails_these_checks(
    slow_reader, monkeypatch, counts: str
) -> None:
    """The checks above can fail: with ``held`` counting only the plaintext, a
    slow reader never pauses the writer and everything offered piles up here;
    counting only ciphertext, writes during the handshake are never refused."""
    from barknet.tls_session import TlsSession

    if counts == "only plaintext":
        monkeypatch.setattr(TlsSession, "held", property(lambda s: len(s.plain)))
        run = slow_reader()
    else:
        monkeypatch.setattr(
            TlsSession, "held", property(lambda s: len(s.cipher) + s.outgoing.pending)
        )
        run = slow_reader(early=True)
    with pytest.raises(AssertionError):
        _check_pause_resume_and_bound(run)


def test_framing_over_tls_gives_one_pause_resume_signal_and_bounded_memory(
    ew, tls_server, tls_client
) -> None:
    """FramedTransport over TlsTransport, a producer that obeys PAUSE/RESUME_WRITING
    and a server that stops reading. The owner sees the framing layer's signal
    only (TLS's own is not passed up): PAUSE and RESUME alternate, and what grows
    is the framing queue (its water marks) plus what TLS may hold (BOUND), however
    long the producer keeps trying. Once the server reads, RESUME_WRITING comes
    and every frame arrives."""
    server = tls_server(echo=False, rcvbuf=8192)
    server.on_event = lambda e: (
        e.kind is EventKind.ACCEPTED and server.transport.suspend_read(e.peer)  # type: ignore[func-returns-value]
    )
    client = tls_client(sndbuf=8192, high_water=HIGH, low_water=LOW)
    framed, tls = client.transport, client.transport.inner  # type: ignore[attr-defined]
    peer = framed.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
    flow: list[EventKind] = []
    frames: list[bytes] = []
    most = {"framed": 0, "tls": 0}

    def produce() -> None:
        while not (flow and flow[-1] is EventKind.PAUSE_WRITING) and len(frames) < 400:
            frames.append(struct.pack(">I", len(frames)) * 4096)  # 16 KiB frames
            framed.resume_write(frames[-1], peer)
            most["framed"] = max(most["framed"], framed.write_buffer_size(peer))
            most["tls"] = max(most["tls"], tls.write_buffer_size(peer))

    def on_client(event: IOEvent) -> None:
        if event.kind in (EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING):
            flow.append(event.kind)
        if event.kind is EventKind.RESUME_WRITING:
            produce()

    client.on_event = on_client
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        produce()
        for _ in range(200):
            ew.run_once(0.001)
            produce()
        grown = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert flow == [EventKind.PAUSE_WRITING]
    assert len(frames) < 20  # the producer was held back, not 400 frames queued
    assert most["tls"] <= BOUND
    assert most["framed"] <= 64 * 1024 + 4 + 16 * 1024  # its high water + one frame
    # Framing's high water + one frame + BOUND, plus bookkeeping.
    assert grown < 512 * 1024, f"{grown} bytes grew for a reader that never reads"
    (server_peer,) = [e.peer for e in server.of(EventKind.ACCEPTED)]
    got = server.data.setdefault(server_peer, [])
    while (r := server.transport.resume_read(server_peer)).status is IOStatus.OK:
        got.append(bytes(r.data))
    ew.run_until(lambda: len(got) == len(frames) == 400, timeout=20)
    assert got == frames
    assert flow[:2] == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING]
    assert flow == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING] * (len(flow) // 2)
    assert most["tls"] <= BOUND


# ---------------------------------------------------------- SSLWantReadError during writes
def test_write_that_must_read_first_waits_for_the_peer_then_goes_out(
    ew, tls_server, tls_client
) -> None:
    server = tls_server(echo=False)
    client = tls_client()
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED) and server.of(EventKind.ACCEPTED), 10)
    for _ in range(5):  # let the client read the server's session tickets
        ew.run_once(0.01)
    tls = client.transport.inner  # type: ignore[attr-defined]
    session = tls._sessions[peer]

    class WantsToReadOnce:
        """OpenSSL's answer when it needs the peer's bytes before it can write
        (renegotiation in TLS 1.2, post-handshake messages)."""

        def __init__(self, real: Any) -> None:
            self.real, self.refused = real, False

        def write(self, data: Any) -> int:
            if not self.refused:
                self.refused = True
                raise ssl.SSLWantReadError("needs to read first")
            return self.real.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    session.sslobj = WantsToReadOnce(session.sslobj)
    result = client.transport.resume_write(b"held back", peer)
    assert result == (4 + 9, IOStatus.OK, None)  # taken: the frame waits as plaintext
    assert tls.write_buffer_size(peer) == 4 + 9
    for _ in range(5):
        ew.run_once(0.01)
    (server_peer,) = [e.peer for e in server.of(EventKind.ACCEPTED)]
    assert not server.data.get(server_peer)  # nothing could go out yet
    server.transport.resume_write(b"the peer speaks", server_peer)
    ew.run_until(lambda: server.data.get(server_peer), timeout=10)
    assert server.data[server_peer] == [b"held back"]
    assert client.data[peer] == [b"the peer speaks"]


class _RefusesOnce(ChunkingTransport):
    """Passes writes through, except the first one after ``refuse_next()``, which it
    answers with WOULD_BLOCK, as a socket that was full for a moment would."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self.refusing = False

    def refuse_next(self) -> None:
        self.refusing = True

    def resume_write(self, data: Any, peer: Peer) -> WriteResult:
        if self.refusing:
            self.refusing = False
            return WriteResult(0, IOStatus.WOULD_BLOCK)
        return super().resume_write(data, peer)


def test_a_refused_write_gets_writable_even_when_the_records_then_all_left_at_once(
    ew, tls_server, sides, client_ctx
) -> None:
    """The race behind a benchmark that hung: TlsTransport fills past high_water, the
    transport below refuses once, so the owner's write is refused; then, in the same
    call, the transport below takes every record. Nothing is left below to replay
    WRITABLE, so TlsTransport must say it itself, or the owner waits forever."""
    server = tls_server(framed=False, echo=False)
    below = _RefusesOnce(TcpTransport())
    client = sides(TlsTransport(below, client_ctx))
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.of(EventKind.CONNECTED), timeout=10)
    below.refuse_next()
    result = client.transport.resume_write(b"x" * (4 * HIGH), peer)
    assert result.status is IOStatus.WOULD_BLOCK and 0 < result.sent < 4 * HIGH
    assert client.transport.write_buffer_size(peer) == 0  # everything it held left
    ew.run_until(lambda: client.of(EventKind.WRITABLE, peer), timeout=5)
    rest = client.transport.resume_write(b"x" * (4 * HIGH - result.sent), peer)
    assert rest.status is IOStatus.OK or client.of(EventKind.WRITABLE, peer)


# ----------------------------------------------------------------- negative cases
def _good_client_keeps_working(ew, client: Side, peer: Peer, word: bytes) -> None:
    before = len(client.data.get(peer, []))
    client.transport.resume_write(word, peer)
    ew.run_until(lambda: len(client.data.get(peer, [])) > before, timeout=10)
    assert client.data[peer][-1] == word
    assert not client.closed(peer)


@pytest.fixture
def busy_server(ew, tls_server, tls_client) -> tuple[Side, Side, Peer]:
    """A TLS echo server with one good framed client that has had one echo."""
    server = tls_server()
    good = tls_client()
    peer = good.transport.connect(server.address)
    _good_client_keeps_working(ew, good, peer, b"before")
    return server, good, peer


def _the_bad_one(server: Side, *, handshake_failed: bool = False) -> IOEvent:
    """The one peer the server closed; with ``handshake_failed``, also check that
    its owner never heard of it before (ACCEPTED comes only after a handshake)."""
    closed = server.closed()
    assert len(closed) == 1, closed
    if handshake_failed:
        assert closed[0].peer not in [e.peer for e in server.of(EventKind.ACCEPTED)]
    return closed[0]


def test_wrong_hostname_fails_the_handshake_on_both_sides(ew, busy_server, tls_client):
    server, good, good_peer = busy_server
    client = tls_client(server_hostname="wrong.example")
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.closed(peer) and server.closed(), timeout=10)
    (event,) = client.closed(peer)
    assert event.status is IOStatus.ERROR and isinstance(event.error, TlsError)
    assert event.error.reason == "CERTIFICATE_VERIFY_FAILED"
    assert "Hostname mismatch" in (event.error.verify_message or "")
    assert "wrong.example" in str(event.error)
    assert not client.of(EventKind.CONNECTED)
    bad = _the_bad_one(server, handshake_failed=True)
    assert isinstance(bad.error, TlsError) and "ALERT" in bad.error.reason
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_untrusted_certificate_fails_verification(ew, busy_server, tls_client) -> None:
    server, good, good_peer = busy_server
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # trusts some other CA only
    client = tls_client(context=stranger)
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.closed(peer) and server.closed(), timeout=10)
    (event,) = client.closed(peer)
    assert isinstance(event.error, TlsError)
    assert event.error.reason == "CERTIFICATE_VERIFY_FAILED"
    assert "unable to get local issuer certificate" in (event.error.verify_message or "")
    assert isinstance(_the_bad_one(server, handshake_failed=True).error, TlsError)
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_client_verifies_by_default(ew, busy_server, sides) -> None:
    """No context given: the system's CAs, which do not include this test's CA."""
    server, good, good_peer = busy_server
    client = sides(FramedTransport(TlsTransport(TcpTransport())))
    peer = client.transport.connect(server.address)
    ew.run_until(lambda: client.closed(peer), timeout=10)
    assert client.closed(peer)[0].error.reason == "CERTIFICATE_VERIFY_FAILED"  # type: ignore[union-attr]
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_plaintext_client_to_a_tls_server_is_closed_with_a_tls_error(ew, busy_server) -> None:
    server, good, good_peer = busy_server
    with socket.create_connection(server.address, timeout=5) as raw:
        raw.sendall(encode_frame(b"hello, is this framing?"))
        ew.run_until(lambda: server.closed(), timeout=10)
    bad = _the_bad_one(server, handshake_failed=True)
    assert bad.status is IOStatus.ERROR and isinstance(bad.error, TlsError)
    assert bad.error.reason == "WRONG_VERSION_NUMBER"
    _good_client_keeps_working(ew, good, good_peer, b"after")


def _evil_tls_client(address, ctx, script: Callable[[ssl.SSLSocket], None]) -> InThread:
    def run() -> None:
        sock = _blocking_tls_client(address, ctx)
        try:
            script(sock)
        finally:
            sock.close()

    return InThread(run)


def _cut_tcp(sock: ssl.SSLSocket, raw_bytes: bytes = b"") -> None:
    """Close the TCP connection under a TLS session, with no close_notify.

    Call it with nothing unread (else the kernel resets instead of closing)."""
    plain = socket.socket(fileno=sock.detach())
    if raw_bytes:
        plain.sendall(raw_bytes)
    plain.close()


def test_peer_closing_without_close_notify_is_truncation_not_eof(
    ew, busy_server, client_ctx
) -> None:
    server, good, good_peer = busy_server

    def script(sock: ssl.SSLSocket) -> None:
        sock.sendall(encode_frame(b"a whole frame"))
        assert _recv_frame(sock) == b"a whole frame"  # session tickets read on the way
        _cut_tcp(sock)

    thread = _evil_tls_client(server.address, client_ctx, script)
    ew.run_until(lambda: thread.done and len(server.closed()) == 1, timeout=10)
    thread.result()
    bad = _the_bad_one(server)
    assert bad.status is IOStatus.ERROR, bad
    assert isinstance(bad.error, TlsError) and bad.error.reason == "TRUNCATED"
    assert [b"a whole frame"] in server.data.values()  # what came whole was delivered
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_peer_dropping_mid_record_is_truncation(ew, busy_server, client_ctx) -> None:
    server, good, good_peer = busy_server

    def script(sock: ssl.SSLSocket) -> None:
        sock.sendall(encode_frame(b"ping"))
        assert _recv_frame(sock) == b"ping"  # session tickets read on the way
        # An application-data record header announcing 64 bytes, then 10 of them.
        _cut_tcp(sock, b"\x17\x03\x03\x00\x40" + bytes(10))

    thread = _evil_tls_client(server.address, client_ctx, script)
    ew.run_until(lambda: thread.done and server.closed(), timeout=10)
    thread.result()
    bad = _the_bad_one(server)
    assert isinstance(bad.error, TlsError) and bad.error.reason == "TRUNCATED"
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_oversized_length_prefix_inside_tls_is_a_framing_error(
    ew, busy_server, client_ctx
) -> None:
    server, good, good_peer = busy_server

    def script(sock: ssl.SSLSocket) -> None:
        sock.sendall(b"\xff\xff\xff\xff")
        with contextlib.suppress(ssl.SSLError, OSError):
            sock.recv(1)  # the server closes us

    thread = _evil_tls_client(server.address, client_ctx, script)
    ew.run_until(lambda: server.closed(), timeout=10)
    bad = _the_bad_one(server)
    assert isinstance(bad.error, FrameTooLargeError) and bad.error.size == 0xFFFFFFFF
    ew.run_until(lambda: thread.done, timeout=10)
    thread.result()
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_close_notify_mid_frame_is_a_truncated_frame(ew, busy_server, client_ctx) -> None:
    server, good, good_peer = busy_server

    def script(sock: ssl.SSLSocket) -> None:
        sock.sendall(struct.pack("!I", 100) + b"x" * 10)
        # A clean TLS end, in the middle of a frame. The server aborts a peer that
        # broke the framing (abort(peer): no linger, no close_notify back), so our
        # wait for its close_notify may end in a plain EOF.
        with contextlib.suppress(ssl.SSLEOFError):
            sock.unwrap()

    thread = _evil_tls_client(server.address, client_ctx, script)
    ew.run_until(lambda: thread.done and server.closed(), timeout=10)
    thread.result()
    bad = _the_bad_one(server)
    assert isinstance(bad.error, TruncatedFrameError)
    assert (bad.error.part, bad.error.received, bad.error.expected) == ("payload", 10, 100)
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_peer_reset_during_the_handshake_is_one_closed_error(ew, busy_server) -> None:
    server, good, good_peer = busy_server
    raw = socket.create_connection(server.address, timeout=5)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sendall(b"\x16\x03\x01\x00\x80")  # the start of a ClientHello record
    raw.close()  # RST
    ew.run_until(lambda: server.closed(), timeout=10)
    bad = _the_bad_one(server)
    assert bad.status is IOStatus.ERROR and isinstance(bad.error, ConnectionBrokenError)
    _good_client_keeps_working(ew, good, good_peer, b"after")


def test_silent_peer_is_closed_at_the_handshake_deadline(ew, sides, server_ctx) -> None:
    # A long linger below: CLOSED must come at the handshake's deadline, not after
    # a graceful close has waited that long for the silent peer's EOF.
    tcp = TcpTransport(linger_timeout=60)
    server = sides(FramedTransport(TlsTransport(tcp, server_ctx, handshake_timeout=0.2)))
    with socket.create_connection(server.transport.bind(), timeout=5):
        ew.run_until(lambda: server.closed(), timeout=10)  # connected, and says nothing
    (event,) = server.closed()
    assert isinstance(event.error, TlsError) and event.error.reason == "HANDSHAKE_TIMEOUT"
    assert not server.of(EventKind.ACCEPTED)


# ------------------------------------------------------------------------ SNI and info
def test_sni_carries_server_hostname_and_ip_addresses_are_verified(
    ew, sides, server_ctx, client_ctx
) -> None:
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sslobj, name, ctx: names.append(name)
    server = sides(FramedTransport(TlsTransport(TcpTransport(), server_ctx)), echo=True)
    address = server.transport.bind()
    by_name = sides(
        FramedTransport(TlsTransport(TcpTransport(), client_ctx, server_hostname="localhost"))
    )
    by_ip = sides(FramedTransport(TlsTransport(TcpTransport(), client_ctx)))
    p1 = by_name.transport.connect(address)
    p2 = by_ip.transport.connect(address)
    ew.run_until(
        lambda: by_name.of(EventKind.CONNECTED) and by_ip.of(EventKind.CONNECTED), timeout=10
    )
    assert sorted(names, key=str) == [None, "localhost"]  # no SNI for an IP address
    info = by_ip.transport.inner.cipher_info(p2)  # type: ignore[attr-defined]
    assert info["version"] == "TLSv1.3" and info["server_hostname"] == HOST
    assert by_name.transport.inner.cipher_info(p1)["server_hostname"] == "localhost"  # type: ignore[attr-defined]


def test_adopt_needs_a_side_and_then_handshakes_over_a_socketpair(ew, sides) -> None:
    with pytest.raises(ValueError, match="server_side"):
        TlsTransport(TcpTransport(), _SERVER_CTX).adopt(None)
    left, right = socket.socketpair()
    server = sides(FramedTransport(TlsTransport(TcpTransport(), _SERVER_CTX, server_side=True)))
    client = sides(
        FramedTransport(
            TlsTransport(TcpTransport(), _CLIENT_CTX, server_side=False, server_hostname=HOST)
        )
    )
    sp = server.transport.adopt(left)  # type: ignore[attr-defined]
    cp = client.transport.adopt(right)  # type: ignore[attr-defined]
    client.transport.resume_write(b"over a socketpair", cp)
    ew.run_until(lambda: server.data.get(sp), timeout=10)
    assert server.data[sp] == [b"over a socketpair"]
    assert server.of(EventKind.ACCEPTED) and client.of(EventKind.CONNECTED)


# ------------------------------------------------------------------------------- cli
@contextlib.contextmanager
def _serve_tls(pem_files, *options: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:  # type: ignore[no-untyped-def]
    """``python -m barknet serve --tls`` with the test certificate (and ``options``):
    the process, and the host and port from its first line; reaped after."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "barknet", "serve", *options, "--tls"),
            *("--certfile", str(pem_files["cert"]), "--keyfile", str(pem_files["key"])),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening on "), line
        host, port = line.split()[-1].rsplit(":", 1)
        yield process, host, int(port)
    finally:
        _reap(process)


def test_serve_with_tls_echoes_over_tls_and_stops_on_sigterm(pem_files, client_ctx) -> None:
    with _serve_tls(pem_files) as (process, host, port):
        with _blocking_tls_client((host, port), client_ctx) as sock:
            sock.sendall(encode_frame(b"echo me over tls"))
            assert _recv_frame(sock) == b"echo me over tls"
            sock.unwrap().close()
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(encode_frame(b"plaintext"))
            assert raw.recv(100) is not None
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "TlsError" in err and "WRONG_VERSION_NUMBER" in err


def test_serve_with_tls_closes_a_peer_that_never_starts_its_handshake_after_the_idle_timeout(
    pem_files,
) -> None:
    """A TCP client that connects and says nothing never becomes a TLS peer (no
    ACCEPTED): --idle-timeout bounds its handshake too, not the 60 s default."""
    with _serve_tls(pem_files, "--idle-timeout", "0.3") as (process, host, port):
        with socket.create_connection((host, port), timeout=10) as silent:
            assert silent.recv(100) == b""  # closed by the server, long before 60 s
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "did not finish the TLS handshake within 0.3 s" in err, err


@pytest.mark.parametrize("early", [False, True], ids=["after the handshake", "during it"])
def test_one_large_write_to_a_peer_that_does_not_read_takes_at_most_the_bound(
    slow_reader, early: bool
) -> None:
    """One resume_write of 1 MiB: the layer takes whole records up to the mark and
    one record past it at most, and refuses the rest (the producer keeps it)."""
    run = slow_reader(early=early)
    big = bytes(1 << 20)
    result = run.tls.resume_write(big, run.peer)
    assert 0 < result.sent < len(big)
    assert result.status is IOStatus.WOULD_BLOCK
    held = run.tls.write_buffer_size(run.peer)
    assert HIGH < held <= BOUND, held
    for _ in range(20):  # nothing reads: what is held stays bounded as the loop turns
        run.ew.run_once(0.005)
        assert run.tls.write_buffer_size(run.peer) <= BOUND


def test_a_close_while_openssl_s_server_asks_to_renegotiate_still_ends_within_its_bounds(
    ew, client_ctx, pem_files
) -> None:
    """TLS 1.2 s_server, told ``R``, asks us to renegotiate (TlsTransport does not).
    We then close: our close_notify and FIN go, and s_server's answer (an alert)
    arrives while its close_notify is awaited, with OpenSSL wanting to write after
    our FIN. That write cannot go; the peer must still end: one CLOSED, well within
    the linger timeout, with no loop spinning on a peer nobody closes."""
    with socket.socket() as probe:  # (s_server needs a port number: a free one)
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    command = [_openssl(), "s_server", "-accept", str(port), "-tls1_2"]
    command += ["-cert", str(pem_files["cert"]), "-key", str(pem_files["key"])]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    tls = TlsTransport(TcpTransport(linger_timeout=2), client_ctx)
    events: list[IOEvent] = []

    def owner(event: IOEvent) -> None:
        events.append(event)
        if event.kind is EventKind.READABLE:
            while tls.resume_read(event.peer).status is IOStatus.OK:
                pass

    tls.attach(ew, owner)
    try:
        banner = b""
        while b"ACCEPT" not in banner:
            banner += process.stdout.readline()  # type: ignore[union-attr]
            assert banner and process.poll() is None, banner
        peer = tls.connect((HOST, port))
        ew.run_until(lambda: events, timeout=10)
        assert events[0].kind is EventKind.CONNECTED, events
        for line in (b"R\n", b"data\n"):  # a renegotiation request, then data
            process.stdin.write(line)  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
            for _ in range(20):
                ew.run_once(0.025)
        turns = ew.turns
        tls.close(peer)
        ew.run_until(lambda: events[-1].kind is EventKind.CLOSED, timeout=1.5)
        assert ew.turns - turns < 1000  # (a spinning loop turns ~100k times a second)
    finally:
        tls.close()
        ew.run_once(0)
        _reap(process)
    assert [e.kind for e in events].count(EventKind.CLOSED) == 1
