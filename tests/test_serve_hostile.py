"""``python -m barknet serve`` against hostile clients, from outside, as a subprocess.

Each test asserts what the attack may cost the server in bytes (VmRSS / VmHWM
from /proc/<pid>/status) or what the server must still do (echo), never how
long anything took. Waits are bounded by socket timeouts so a hang fails fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc"
)

TIMEOUT = 10.0
KiB, MiB = 1024, 1024 * 1024


def _status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@contextlib.contextmanager
def _serve(
    *args: str, stderr: int | None = subprocess.PIPE
) -> Iterator[tuple[subprocess.Popen[bytes], tuple[str, int]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "barknet", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        bufsize=0,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "the server did not start"
        first = proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert first.startswith("listening on "), first
        host, port = first.split()[-1].rsplit(":", 1)
        yield proc, (host, int(port))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        if proc.stderr is not None:
            proc.stderr.close()


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection ended after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(struct.pack("!I", len(payload)) + payload)
    (size,) = struct.unpack("!I", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


def _frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


# --------------------------------------------------------------- backpressure
def test_a_client_that_sends_and_never_reads_leaves_server_memory_bounded() -> None:
    with _serve() as (proc, address), _connect(address) as sock:
        assert _echo(sock, b"warm") == b"warm"
        base = _status(proc.pid, "VmRSS")
        sock.setblocking(False)
        frame = _frame(bytes(64 * KiB))
        sent, stuck, budget = 0, 0, 64 * MiB
        # Send without ever reading, until the socket stays full (five 0.2 s waits
        # in a row without room) or 64 MiB went out.
        while sent < budget and stuck < 5:
            _, writable, _ = select.select([], [sock], [], 0.2)
            if not writable:
                stuck += 1
                continue
            stuck = 0
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(frame)
        grown = _status(proc.pid, "VmHWM") - base
        # The server stopped reading us: our own socket buffers filled up, and the
        # server holds about high_water (64 KiB) of replies plus one frame, not 64 MiB.
        assert sent < 32 * MiB, f"the server took {sent} bytes from a client that never reads"
        assert grown < 8 * MiB, f"server peak RSS grew by {grown} bytes"
        assert proc.poll() is None


# ------------------------------------------------------------- memory per peer
def test_100_peers_announcing_8_mib_and_sending_one_byte_cost_the_server_little() -> None:
    with _serve() as (proc, address):
        with _connect(address) as probe:
            assert _echo(probe, b"warm") == b"warm"
        base = _status(proc.pid, "VmRSS")
        socks = [_connect(address) for _ in range(100)]
        try:
            for sock in socks:
                sock.sendall(struct.pack("!I", 8 * MiB) + b"x")
            with _connect(address) as probe:  # served after the 100 (one loop, in order)
                assert _echo(probe, b"after") == b"after"
            grown = _status(proc.pid, "VmHWM") - base
        finally:
            for sock in socks:
                sock.close()
        # 100 x 8 MiB announced; what arrived is 500 bytes. Allow 64 KiB per peer
        # (a socket, its state, a 4 KiB first body) - not 8 MiB each.
        assert grown < 100 * 64 * KiB, f"server peak RSS grew by {grown} bytes"


def test_idle_connections_cost_the_server_a_small_bounded_amount_each() -> None:
    n = 500
    with _serve() as (proc, address):
        with _connect(address) as probe:
            assert _echo(probe, b"warm") == b"warm"
        base = _status(proc.pid, "VmRSS")
        socks = []
        try:
            for _ in range(n):
                sock = _connect(address)
                assert _echo(sock, b"hi") == b"hi"  # one frame, then silence
                socks.append(sock)
            grown = _status(proc.pid, "VmRSS") - base
        finally:
            for sock in socks:
                sock.close()
        # No 256 KiB scratch per connection: a few KiB of Python state each.
        assert grown / n < 16 * KiB, f"{grown / n:.0f} bytes of server RSS per idle connection"


def test_silent_tls_connections_cost_the_server_little_before_their_handshake(
    tmp_path: Path,
) -> None:
    # A TLS server's session waits for the ClientHello before OpenSSL's first
    # step: asked at accept, that step sets up the handshake's buffers, and 200
    # peers that never send a byte cost 43 KiB each instead of 10.
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def probe(address: tuple[str, int]) -> bytes:
        # Served after every connection made before it (one loop, in order).
        with context.wrap_socket(_connect(address), server_hostname="localhost") as sock:
            return _echo(sock, b"probe")

    with _serve("--tls", "--certfile", str(cert), "--keyfile", str(key)) as (proc, address):
        assert probe(address) == b"probe"
        base = _status(proc.pid, "VmRSS")
        socks: list[socket.socket] = []
        try:
            for _ in range(2):  # (in two halves: within the listen backlog of 128)
                socks += [_connect(address) for _ in range(100)]
                assert probe(address) == b"probe"
            grown = _status(proc.pid, "VmRSS") - base
        finally:
            for sock in socks:
                sock.close()
    assert grown / len(socks) < 20 * KiB, f"{grown / len(socks):.0f} bytes per silent TLS peer"


# ---------------------------------------------------------------- fairness
def test_a_peer_streaming_empty_frames_does_not_hold_up_another_peers_echo() -> None:
    count = 20_000  # 80 KB of empty frames: 40 turns' worth at 512 frames per turn
    with _serve() as (_proc, address), _connect(address) as flood, _connect(address) as polite:
        assert _echo(polite, b"warm") == b"warm"
        flood.sendall(_frame(b"") * count)
        assert _recv_exact(flood, 4) == _frame(b"")  # the server is serving the flood
        polite.sendall(_frame(b"me too"))
        assert _recv_exact(polite, 10) == _frame(b"me too")
        # Count the flood's echoes that had reached its socket by then (frames are
        # echoed in order, so this is about how many the server served before
        # ours, give or take the turns that pass while we count).
        before = 4
        flood.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while chunk := flood.recv(1 << 20):
                before += len(chunk)
        # At most 512 frames of one peer per loop turn: ours came within a few
        # turns, not after all 20,000 (which is what happens without the bound).
        assert before // 4 < count // 2, f"{before // 4} of the flood's frames went first"


# ---------------------------------------------------------------- the split
@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
def test_serve_echoes_a_frame_followed_by_an_oversized_header_however_tcp_split_them(
    together: bool,
) -> None:
    with _serve("--max-frame-size", "1024") as (_proc, address), _connect(address) as sock:
        good, bad = _frame(b"ping"), struct.pack("!I", 1 * MiB)
        if together:
            sock.sendall(good + bad)
        else:
            sock.sendall(good)
            assert _recv_exact(sock, len(good)) == good
            sock.sendall(bad)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
        assert got == (good if together else b"")  # the echo arrived, then the close


# ---------------------------------------------------------------- timeouts
def test_idle_timeout_closes_a_silent_peer_and_keeps_serving() -> None:
    with (
        _serve("--idle-timeout", "0.3") as (_proc, address),
        _connect(address) as silent,
        _connect(address) as talker,
    ):
        assert _echo(talker, b"hello") == b"hello"
        assert silent.recv(16) == b""  # closed by the server
        with _connect(address) as fresh:
            assert _echo(fresh, b"still serving") == b"still serving"


def test_idle_timeout_spares_a_peer_that_sends_one_large_frame_slowly() -> None:
    """Idle means no byte either way: a peer uploading one frame for three times
    the idle timeout, with no whole frame in between, is busy, and gets its echo."""
    payload = bytes(range(256)) * 160  # 40,960 bytes, in 20 pieces 0.05 s apart
    with _serve("--idle-timeout", "0.3") as (_proc, address), _connect(address) as sock:
        wire = _frame(payload)
        for start in range(0, len(wire), 2048):
            sock.sendall(wire[start : start + 2048])
            time.sleep(0.05)
        (size,) = struct.unpack("!I", _recv_exact(sock, 4))
        assert _recv_exact(sock, size) == payload


def test_idle_timeout_spares_a_peer_that_takes_one_large_reply_slowly() -> None:
    """Idle means no byte either way, the server's too: a peer that sends nothing
    while it reads a 6 MiB echo in 64 KiB steps 0.02 s apart (the server's
    queue outlasts the 0.1 s timeout many times, as its own socket buffer holds
    at most 4 MiB) is busy, and gets all of it."""
    payload = bytes(range(256)) * (6 * MiB // 256)
    with _serve("--idle-timeout", "0.1") as (_proc, address):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)  # (no autotuning)
        sock.settimeout(TIMEOUT)
        with sock:
            sock.connect(address)
            sock.sendall(_frame(payload))
            got = bytearray()
            while len(got) < 4 + len(payload):
                chunk = sock.recv(64 * KiB)
                if not chunk:
                    break
                got += chunk
                time.sleep(0.02)
        assert len(got) == 4 + len(payload), f"closed after {len(got):,} bytes of the reply"
        assert bytes(got[4:]) == payload


def test_idle_timeout_also_bounds_the_wait_for_replies_the_peer_never_takes() -> None:
    """A peer idle because it does not read its replies is closed gracefully, and
    that close's wait for the queue lasts the idle timeout too (not TCP's five
    seconds): the log says which bound it hit."""
    with _serve("--idle-timeout", "0.3") as (proc, address):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little for us
        sock.settimeout(TIMEOUT)
        with sock:
            sock.connect(address)
            sock.sendall(_frame(bytes(4 << 20)))  # its echo stays queued at the server
            log = b""
            while b"LingerTimeoutError" not in log:
                ready, _, _ = select.select([proc.stderr], [], [], TIMEOUT)
                assert ready, log
                log += proc.stderr.readline()  # type: ignore[union-attr]
        assert b"within 0.3 s" in log, log


def test_frame_timeout_closes_a_peer_stalled_mid_frame() -> None:
    with _serve("--frame-timeout", "0.3") as (proc, address), _connect(address) as sock:
        sock.sendall(struct.pack("!I", 100) + b"only ten b")
        assert sock.recv(16) == b""
        line = b""
        while b"FrameTimeoutError" not in line:
            ready, _, _ = select.select([proc.stderr], [], [], TIMEOUT)
            assert ready, line
            line += proc.stderr.readline()  # type: ignore[union-attr]


# ----------------------------------------------------------------- logging
def test_a_stderr_pipe_nobody_reads_does_not_stop_it_serving() -> None:
    with _serve() as (proc, address):
        # Shrink the pipe to one page (Linux): each connection logs two lines (about
        # 75 bytes), so 1,200 of them overflow it and the 64 KiB log buffer behind
        # it. Nobody reads the server's stderr meanwhile.
        fcntl.fcntl(proc.stderr.fileno(), fcntl.F_SETPIPE_SZ, 4096)  # type: ignore[union-attr]
        for _ in range(1200):
            _connect(address).close()
        with _connect(address) as sock:
            assert _echo(sock, b"still serving") == b"still serving"
        assert proc.poll() is None
        # Now read: what fitted comes out, and the next line says what was dropped.
        log = b""
        while select.select([proc.stderr], [], [], 0.5)[0]:
            chunk = proc.stderr.read(65536)  # type: ignore[union-attr]
            if not chunk:
                break
            log += chunk
        with _connect(address) as sock:
            assert _echo(sock, b"again") == b"again"
        while b"dropped" not in log and select.select([proc.stderr], [], [], TIMEOUT)[0]:
            log += proc.stderr.read(65536)  # type: ignore[union-attr]
        assert b"log lines dropped" in log


def test_a_closed_stderr_does_not_make_it_exit() -> None:
    with _serve() as (proc, address):
        proc.stderr.close()  # type: ignore[union-attr]  # the server's writes now fail: EPIPE
        for i in range(5):
            with _connect(address) as sock:
                assert _echo(sock, b"%d" % i) == b"%d" % i
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0


# ------------------------------------------------------- the log, in process
def test_line_log_drops_and_counts_lines_a_full_pipe_cannot_take_and_never_blocks() -> None:
    import os

    from barknet.cli import LineLog

    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    with os.fdopen(w, "w") as stream:
        log = LineLog(stream, limit=1024)
        for i in range(1000):  # 1000 lines of 50 bytes: far more than pipe + buffer
            log(f"line {i:04d} " + "x" * 39)  # returns at once, every time
        assert log.dropped > 0 and not log.broken
        assert len(log.pending) <= 1024
        taken = os.read(r, 1 << 16)
        assert taken.startswith(b"line 0000 ")
        log("after")  # there is room again: the count of dropped lines follows
        rest = b""
        for _ in range(100):  # bounded: each round reads what one flush wrote
            if not select.select([r], [], [], TIMEOUT)[0]:
                break
            rest += os.read(r, 1 << 16)
            log.flush()
            if b"log lines dropped" in rest:
                break
        assert b"after\n" in rest and b"log lines dropped" in rest
        os.close(r)  # nobody will ever read again: writes now fail with EPIPE
        log("into a closed pipe")  # no BrokenPipeError
        assert log.broken
        log("more")
        assert log.dropped > 0


# ------------------------------------------------------------ descriptor limit
def test_at_the_descriptor_limit_it_keeps_serving_and_recovers() -> None:
    """Out of file descriptors (EMFILE on accept), the server keeps echoing for the
    peers it has, and accepts the waiting ones once descriptors are free again.
    (That its record of accept errors stays bounded meanwhile is pinned in
    tests/test_close_contract.py: the last 8 errors and a count.)"""
    import resource

    limit = 40

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "barknet", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=low_limit,
    )
    socks: list[socket.socket] = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "the server did not start"
        host, port = proc.stdout.readline().decode().split()[-1].rsplit(":", 1)  # type: ignore[union-attr]
        address = (host, int(port))
        first = _connect(address)
        socks.append(first)
        assert _echo(first, b"before") == b"before"
        for _ in range(limit + 10):  # more than it can hold: the rest wait in the backlog
            socks.append(socket.create_connection(address, timeout=TIMEOUT))
        assert _echo(first, b"at the limit") == b"at the limit"
        assert proc.poll() is None
        for sock in socks[1:]:
            sock.close()
        del socks[1:]
        late = _connect(address)
        socks.append(late)
        assert _echo(late, b"after") == b"after"  # accepted once descriptors were free
        assert _echo(first, b"still") == b"still"
    finally:
        for sock in socks:
            sock.close()
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
