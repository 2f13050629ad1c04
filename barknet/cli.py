"""Command-line entry points: ``python -m barknet serve`` and ``python -m barknet bench``.

Theory of operation
-------------------
``serve`` is the smallest useful program built on the package: one
:class:`~barknet.reactor.EventWatcher`, one ``FramedTransport(TcpTransport())``
that echoes every frame to its sender. Its first line on stdout is
``listening on HOST:PORT`` (flushed at once), so a script or a test can start
it with ``--port 0`` and read where it landed. What happens to peers goes to
stderr, one line each: a peer that breaks the framing rules (an oversized
length prefix, a stream that stops mid-frame) is closed and reported, and the
server carries on with everyone else.

A server must not let one peer decide what it costs. So the echo obeys the
water marks: on ``PAUSE_WRITING`` (more than ``high_water`` bytes of replies
queued for that peer, because it does not read them) it stops reading that
peer, and on ``RESUME_WRITING`` it reads again; a client that sends and never
reads is slowed down by its own full socket buffers, not stored in our memory.
Replies are coalesced (``coalesce=True``): of a burst of frames read in one
turn, the first reply leaves at once and the rest together at the turn's end,
in one system call. ``--frame-timeout`` closes a peer that starts a
frame and stalls; ``--idle-timeout`` closes a peer that does nothing at all
(no byte through its socket either way: a large frame sent slowly, or a reply
taken slowly while some of it still waits in our queue, is not idleness),
and bounds every other wait for a peer too: a TLS handshake, and a close's
wait for the peer to take its replies and to end its side.

Logging cannot stop the server either: lines go to stderr through a bounded
buffer, written only when the descriptor can take them without blocking. When
nobody reads the pipe, lines beyond the buffer are dropped and counted (a later
line says how many); when the pipe is closed, logging stops and the server
carries on.

Stopping on Ctrl-C or SIGTERM needs care. Python runs a signal handler in the
main thread between two bytecodes, which for us means *after* the ``select``
call the loop is sleeping in; PEP 475 then restarts that ``select`` with its
old timeout, so a handler that only sets a flag would not be seen until some
socket woke the loop. The standard cure (asyncio uses it too) is
:func:`signal.set_wakeup_fd`: the interpreter's C-level handler writes the
signal number into a socket the loop watches, the ``select`` returns, and the
loop's own callback stops it. The process then closes every connection and
exits with status 0.

``bench`` lives in :mod:`barknet.bench`; this module only parses its options.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import TextIO

from .errors import TransportClosedError
from .events import EventKind, IOEvent, IOStatus, Peer
from .framed import FramedTransport
from .framing import DEFAULT_MAX_FRAME_SIZE
from .interfaces import LINGER_TIMEOUT, ITransport
from .reactor import EventWatcher
from .tcp import TcpTransport
from .tls import HANDSHAKE_TIMEOUT, TlsTransport

__all__ = ["LineLog", "main", "serve"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A pipe takes a write of up to PIPE_BUF bytes whole once select says writable.
_PIPE_BUF = select.PIPE_BUF


class LineLog:
    """Log lines to a stream without ever blocking the loop or raising into it.

    Lines wait in a buffer of at most ``limit`` bytes and are written only
    when ``select`` says the descriptor can take them (at most ``PIPE_BUF``
    bytes per write, which a pipe then accepts without blocking); with a
    ``watcher``, the rest goes out when the descriptor becomes writable. A
    line that does not fit in the buffer is dropped and counted in
    ``dropped``; the next line that fits says how many were lost. An error
    from the descriptor (a closed pipe: ``BrokenPipeError``; a closed
    descriptor) ends logging for good: later lines are only counted.

    Caveat: a terminal stopped with Ctrl-S is "writable" to ``select`` yet
    blocks a write; a log to a terminal you freeze can still stall the loop.
    """

    def __init__(
        self, stream: TextIO | None, watcher: EventWatcher | None = None, limit: int = 64 * 1024
    ) -> None:
        self.stream = stream
        self.watcher = watcher
        self.limit = limit
        self.pending = bytearray()
        self.dropped = 0
        self.broken = stream is None  # no stderr at all (started with it closed)
        self._reported = 0
        self._watching = False
        self.fd: int | None = None
        if stream is not None:
            try:
                self.fd = stream.fileno()
                stream.flush()  # whatever Python buffered goes first
            except (OSError, ValueError, AttributeError):
                self.fd = None  # a StringIO or the like: it never blocks

    def __call__(self, message: str) -> None:
        if self.broken:
            self.dropped += 1
            return
        self._note_drops()
        line = (message + "\n").encode("utf-8", "replace")
        if len(self.pending) + len(line) > self.limit:
            self.dropped += 1
            return
        self.pending += line
        self.flush()

    def _note_drops(self) -> None:
        """Say how many lines were lost, as soon as that fits in the buffer."""
        if self.dropped > self._reported:
            note = f"({self.dropped - self._reported} log lines dropped: stderr was not read)\n"
            if len(self.pending) + len(note) <= self.limit:
                self.pending += note.encode()
                self._reported = self.dropped

    def flush(self) -> None:
        """Write what the descriptor takes now, without blocking."""
        if self.broken:
            return  # (nothing waits: lines are only counted once logging ended)
        if self.fd is None:
            self._write_text()
            return
        while self.pending:
            try:
                _, writable, _ = select.select([], [self.fd], [], 0)
                if not writable:
                    self._watch()
                    return
                written = os.write(self.fd, self.pending[:_PIPE_BUF])
            except BlockingIOError:
                self._watch()
                return
            except (OSError, ValueError):
                self._give_up()
                return
            del self.pending[:written]
            if not self.pending and self.dropped > self._reported:
                self._note_drops()  # all out: now there is room to say what was lost
        self._unwatch()

    def _write_text(self) -> None:
        assert self.stream is not None
        try:
            self.stream.write(self.pending.decode("utf-8", "replace"))
            self.stream.flush()
        except (OSError, ValueError):
            self._give_up()
            return
        self.pending.clear()

    def _give_up(self) -> None:
        self.dropped += self.pending.count(b"\n")
        self.pending.clear()
        self.broken = True
        self._unwatch()

    def _watch(self) -> None:
        if self.watcher is not None and not self._watching and self.fd is not None:
            try:
                self.watcher.watch_write(self.fd, self.flush)
                self._watching = True
            except (OSError, ValueError):
                pass  # not pollable (a regular file is always writable anyway)

    def _unwatch(self) -> None:
        if self._watching and self.watcher is not None and self.fd is not None:
            self._watching = False
            if not self.watcher.closed:
                self.watcher.unwatch_write(self.fd)


def _unsent(tcp: TcpTransport, peer: Peer) -> int:
    """Bytes the kernel still holds for ``peer``, sent or not but not yet
    acknowledged (``SIOCOUTQ``, Linux's ``TIOCOUTQ`` on a socket); 0 where the
    system cannot say, and then only our own sends show a reply moving."""
    try:
        import fcntl  # (POSIX only)
        import termios

        raw = fcntl.ioctl(tcp.socket_of(peer).fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (ImportError, AttributeError, OSError, TransportClosedError):
        return 0
    return int.from_bytes(raw, sys.byteorder, signed=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
    frame_timeout: float | None = None,
    idle_timeout: float | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Run a framed echo server until SIGINT or SIGTERM; return the exit status (0).

    With ``tls`` (a server context holding the certificate), every peer speaks
    TLS: ``FramedTransport(TlsTransport(TcpTransport(), tls))``.

    Call it from the main thread: that is the only thread that may install
    signal handlers.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    with EventWatcher() as watcher:
        log = LineLog(err, watcher)
        # With --idle-timeout, no wait of ours lasts longer than it either: not a
        # close's (for a peer to take its replies, then to end its side: every
        # layer takes TCP's linger_timeout), nor a TLS handshake's.
        linger = _at_most(LINGER_TIMEOUT, idle_timeout)
        tcp = TcpTransport(host, port, linger_timeout=linger)
        inner: ITransport = tcp
        if tls is not None:
            handshake = _at_most(HANDSHAKE_TIMEOUT, idle_timeout)
            inner = TlsTransport(inner, tls, handshake_timeout=handshake)
        server = FramedTransport(
            inner,
            max_frame_size=max_frame_size,
            frame_timeout=frame_timeout,
            coalesce=True,
        )
        paused: set[Peer] = set()  # peers whose replies wait: we stopped reading them
        last_seen: dict[Peer, float] = {}  # when bytes last moved, either way
        #: bytes received, sent, and still in the kernel's send queue, at that time
        moved: dict[Peer, tuple[int, int, int]] = {}
        idled: set[Peer] = set()  # closed for idling

        def echo(peer: Peer) -> None:
            # Echo until nothing waits, or until PAUSE_WRITING (raised inside
            # resume_write) says this peer's replies pile up.
            while peer not in paused and (r := server.resume_read(peer)).status is IOStatus.OK:
                server.resume_write(r.data, peer)

        def on_event(event: IOEvent) -> None:
            kind, peer = event.kind, event.peer
            if kind is EventKind.READABLE:
                echo(peer)
            elif kind is EventKind.PAUSE_WRITING:
                paused.add(peer)
                server.suspend_read(peer)  # the peer's bytes wait in the kernel
            elif kind is EventKind.RESUME_WRITING:
                paused.discard(peer)
                echo(peer)  # resume_read reads again
            elif kind is EventKind.ACCEPTED:
                last_seen[peer], moved[peer] = watcher.time(), (0, 0, 0)
                log(f"{peer} connected")
            elif kind is EventKind.CLOSED:
                paused.discard(peer)
                last_seen.pop(peer, None)
                moved.pop(peer, None)
                idle = peer in idled
                idled.discard(peer)
                if event.status is IOStatus.ERROR:
                    log(f"{peer} closed: {type(event.error).__name__}: {event.error}")
                else:
                    why = ", idle" if idle else ""
                    log(f"{peer} closed ({event.status.value}{why})")

        def sweep() -> None:
            """Close the peers that moved no byte either way for ``idle_timeout``.

            Bytes, not frames: a peer that uploads one large frame slowly, or
            takes a large reply slowly, is busy though no whole frame passes.
            Our own sends are not enough to see the second: the kernel holds up
            to megabytes of a reply and says the socket is writable again only
            once half of that has gone, which a slow reader takes longer than
            the timeout to do. So the kernel's send queue counts too (Linux):
            while the peer takes bytes from it, it shrinks. The close is
            graceful (the peer still reads all of it, then our EOF), and
            bounded by ``idle_timeout`` (see above)."""
            assert idle_timeout is not None
            now = watcher.time()
            for peer in list(last_seen):
                counters = server.counters(peer)
                now_moved = (counters.bytes_received, counters.bytes_sent, _unsent(tcp, peer))
                if now_moved != moved[peer]:
                    last_seen[peer], moved[peer] = now, now_moved
                elif now - last_seen[peer] >= idle_timeout:
                    del last_seen[peer]  # (its CLOSED comes later)
                    idled.add(peer)
                    server.close(peer)
            watcher.call_later(idle_timeout / 4, sweep)

        server.attach(watcher, on_event)
        if idle_timeout is not None:
            watcher.call_later(idle_timeout / 4, sweep)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        caught: list[int] = []
        old_handlers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
        old_wakeup_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            for sig in _STOP_SIGNALS:
                # The Python-level handler only replaces the default action (exit
                # without cleaning up, or KeyboardInterrupt); the wake-up fd does the work.
                signal.signal(sig, lambda signum, frame: caught.append(signum))

            def on_signal() -> None:
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(512)
                watcher.stop()

            watcher.watch_read(wake_r.fileno(), on_signal)
            try:
                bound_host, bound_port = server.bind()
            except OSError as exc:  # a name that does not resolve, a port in use...
                if err is not None:  # (started with stderr closed: the status says it)
                    print(
                        f"python -m barknet serve: cannot listen on {host}:{port}: {exc}", file=err
                    )
                return 2
            print(f"listening on {bound_host}:{bound_port}", file=out, flush=True)
            watcher.run()
            names = ", ".join(signal.Signals(s).name for s in caught) or "a stop request"
            log(f"stopping on {names}")
        finally:
            signal.set_wakeup_fd(old_wakeup_fd)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if not watcher.closed:
                watcher.unwatch(wake_r.fileno())
            wake_r.close()
            wake_w.close()
            server.close()
            # Let the CLOSED events queued by close() run before the watcher goes.
            watcher.run_once(0)
            log.watcher = None  # from here on, write what fits and let the rest go
            log.flush()
    return 0


def _at_most(default: float, idle_timeout: float | None) -> float:
    return default if idle_timeout is None else min(default, idle_timeout)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError("must be a number of seconds > 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0 to 65535 (0: any free port)")
    return value


def _size(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        if args.certfile or args.keyfile:
            raise SystemExit("--certfile and --keyfile need --tls")
        return None
    if not args.certfile:
        raise SystemExit("--tls needs --certfile (and --keyfile unless the key is in it)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except OSError as exc:  # (ssl.SSLError is one: a file that is not PEM)
        raise SystemExit(f"--certfile/--keyfile: cannot load them: {exc}") from None
    return context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m barknet", description="barknet command-line tools"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_serve = commands.add_parser("serve", help="run a framed echo server")
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p_serve.add_argument("--port", type=_port, default=0, help="port to bind (0: any free port)")
    p_serve.add_argument(
        "--max-frame-size",
        type=_size,
        default=DEFAULT_MAX_FRAME_SIZE,
        help=f"largest payload accepted, in bytes ({DEFAULT_MAX_FRAME_SIZE})",
    )
    p_serve.add_argument(
        "--frame-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="close a peer that starts a frame and then sends nothing for this long (off)",
    )
    p_serve.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="close a peer that sends and takes nothing for this long; no close or "
        "TLS handshake then waits longer either (off)",
    )

    p_serve.add_argument("--tls", action="store_true", help="speak TLS (needs the next two)")
    p_serve.add_argument("--certfile", metavar="F", help="PEM certificate chain, for --tls")
    p_serve.add_argument("--keyfile", metavar="F", help="PEM private key, for --tls")

    p_bench = commands.add_parser(
        "bench", help="compare barknet with raw sockets, asyncio, uvloop and Twisted"
    )
    p_bench.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    p_bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    p_bench.add_argument(
        "--impls", metavar="LIST", help="comma-separated implementations to run (default: all)"
    )
    p_bench.add_argument(
        "--tls", action="store_true", help="then the TLS rows: barknet vs asyncio, both with TLS"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(
            args.host,
            args.port,
            args.max_frame_size,
            frame_timeout=args.frame_timeout,
            idle_timeout=args.idle_timeout,
            tls=_tls_context(args),
        )
    from . import bench  # imported late: `serve` should start fast

    impls = args.impls.split(",") if args.impls else None
    unknown = [name for name in impls or () if name not in bench.IMPLS]
    if unknown:
        parser.error(
            f"--impls: unknown {', '.join(unknown)}; choose from {', '.join(bench.IMPLS)}"
        )
    status = bench.main(quick=args.quick, json_path=args.json, impls=impls)
    if args.tls and status == 0:
        from .bench import tls_side as bench_tls

        print(file=sys.stdout)
        status = bench_tls.main(quick=args.quick, json_path=args.json)
    return status
