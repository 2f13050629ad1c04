"""``python -m barknet serve``, driven from outside as a learner's terminal would.

The server runs in a subprocess; the tests talk to it with plain blocking
sockets (with timeouts), so they exercise the wire format and the process
behaviour, not the package's own client code.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from barknet.cli import build_parser, main

TIMEOUT = 10.0


def _read_line(proc: subprocess.Popen[bytes], stream: str) -> str:
    """One line from the child's stdout or stderr, or fail after TIMEOUT seconds."""
    pipe = getattr(proc, stream)
    ready, _, _ = select.select([pipe], [], [], TIMEOUT)
    assert ready, f"no line on {stream} within {TIMEOUT} s"
    return pipe.readline().decode()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection ended after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _stderr_until(proc: subprocess.Popen[bytes], word: str) -> str:
    """The server's stderr up to the first line holding ``word``."""
    report = ""
    deadline = time.monotonic() + TIMEOUT
    while word not in report:
        line = _read_line(proc, "stderr")
        assert line and time.monotonic() < deadline, f"no {word!r} in {report!r}"
        report += line
    return report


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(struct.pack("!I", len(payload)) + payload)
    (size,) = struct.unpack("!I", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


@contextlib.contextmanager
def _server(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], tuple[str, int]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "barknet", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Unbuffered: readline() must not pull a second line into a buffer that
        # select() cannot see, or the next wait would miss it.
        bufsize=0,
    )
    try:
        first = _read_line(proc, "stdout")
        assert first.startswith("listening on "), first
        host, port = first.split()[-1].rsplit(":", 1)
        yield proc, (host, int(port))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _stop(proc: subprocess.Popen[bytes], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    code = proc.wait(TIMEOUT)
    return code, proc.stderr.read().decode()  # type: ignore[union-attr]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_serve_echoes_frames_and_survives_a_peer_that_breaks_the_framing() -> None:
    with _server("--max-frame-size", "1024") as (proc, address):
        assert address[0] == "127.0.0.1" and address[1] > 0
        with _connect(address) as good, _connect(address) as bad:
            for payload in (b"hello", b"", b"x" * 1024, bytes(range(256))):
                assert _echo(good, payload) == payload
            # Announce 1 MiB to a server that accepts 1 KiB: it must drop this peer.
            bad.sendall(struct.pack("!I", 1 << 20) + b"abc")
            assert bad.recv(16) == b""  # closed by the server
            report = _stderr_until(proc, "FrameTooLargeError")
            assert "1048576" in report and "1024" in report
            # The first client still gets its echoes.
            assert _echo(good, b"still here") == b"still here"
        code, rest = _stop(proc, signal.SIGTERM)
        assert code == 0, rest
        assert "SIGTERM" in rest
        assert _gone(proc.pid)


def test_serve_reports_a_frame_cut_short_by_its_sender() -> None:
    with _server() as (proc, address), _connect(address) as sock:
        sock.sendall(struct.pack("!I", 100) + b"only ten b")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(16) == b""
        report = _stderr_until(proc, "TruncatedFrameError")
        assert "10 of 100" in report


def test_serve_exits_cleanly_on_ctrl_c_with_a_client_connected() -> None:
    with _server() as (proc, address), _connect(address) as sock:
        assert _echo(sock, b"ping") == b"ping"
        code, rest = _stop(proc, signal.SIGINT)
        assert code == 0, rest
        assert "SIGINT" in rest and "Traceback" not in rest
        assert sock.recv(16) == b""  # the server closed our connection on the way out


def _serve_with_stderr_closed(*args: str) -> subprocess.Popen[bytes]:
    """``python -m barknet serve`` started with file descriptor 2 closed (as by
    ``2>&-``, or a supervisor that gives it none): Python's ``sys.stderr`` is None."""
    return subprocess.Popen(
        ["/bin/sh", "-c", 'exec "$0" "$@" 2>&-', sys.executable, "-m", "barknet", "serve", *args],
        stdout=subprocess.PIPE,
        bufsize=0,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_started_with_stderr_closed_still_stops_cleanly(sig: int) -> None:
    """README: "if stderr is closed, logging stops and the server carries on", and
    Ctrl-C or SIGTERM stops it cleanly (status 0): the last flush of the log, on
    the way out, must not fail for want of a stream."""
    proc = _serve_with_stderr_closed("--port", "0")
    try:
        first = _read_line(proc, "stdout")
        host, port = first.split()[-1].rsplit(":", 1)
        with _connect((host, int(port))) as sock:
            assert _echo(sock, b"ping") == b"ping"
            proc.send_signal(sig)
            assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]


def test_serve_started_with_stderr_closed_that_cannot_listen_exits_2_and_prints_nothing() -> None:
    """The status says it (2, as with stderr open); stdout carries only what it
    promises ("listening on ..."), not the error that had nowhere to go."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        proc = _serve_with_stderr_closed("--port", str(taken.getsockname()[1]))
        out, _ = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, out) == (2, b"")


def test_cli_rejects_a_negative_frame_size() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-frame-size", "-1"])


def test_stop_called_from_a_signal_handler_wakes_a_sleeping_loop() -> None:
    """A handler runs on the loop's own thread, after the blocked select was
    interrupted; PEP 475 then restarts that select. stop() must wake it."""
    from barknet import EventWatcher

    fallback_fired = threading.Event()
    done = threading.Event()

    with EventWatcher() as ew:

        def fallback() -> None:  # keeps the test bounded if stop() fails to wake it
            if not done.wait(5.0):
                fallback_fired.set()
                ew.call_soon(ew.stop)

        old = signal.signal(signal.SIGALRM, lambda signum, frame: ew.stop())
        helper = threading.Thread(target=fallback)
        helper.start()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            ew.run()  # nothing watched but the wake-up socket, no timers: sleeps
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            done.set()
            helper.join()
    assert not fallback_fired.is_set()


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
@pytest.mark.parametrize("option", ["--idle-timeout", "--frame-timeout"])
def test_cli_rejects_a_timeout_that_is_not_a_number_of_seconds(option: str, value: str) -> None:
    # (inf reached the loop as a timer no kernel sleeps on: OverflowError, exit 1.)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", option, value])
    assert exit_.value.code == 2


def test_serve_says_why_it_cannot_listen_instead_of_a_traceback() -> None:
    import io

    from barknet.cli import serve

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        err = io.StringIO()
        assert serve("127.0.0.1", port, 1024, out=io.StringIO(), err=err) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [["serve", "--port", "70000"], ["serve", "--port", "-1"], ["bench", "--impls", "nosuch"]],
)
def test_cli_refuses_bad_arguments_with_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_cli_says_why_a_certificate_does_not_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for certfile in (str(tmp_path / "missing.pem"), str(not_pem)):
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--tls", "--certfile", certfile])
        assert "cannot load them" in str(exit_.value.code)
