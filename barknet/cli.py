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
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import TextIO

from .events import EventKind, IOEvent, IOStatus
from .framed import FramedTransport
from .framing import DEFAULT_MAX_FRAME_SIZE
from .interfaces import ITransport
from .reactor import EventWatcher
from .tcp import TcpTransport
from .tls import TlsTransport

__all__ = ["main", "serve"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
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

    def log(message: str) -> None:
        print(message, file=err, flush=True)

    with EventWatcher() as watcher:
        inner: ITransport = TcpTransport(host, port)
        if tls is not None:
            inner = TlsTransport(inner, tls)
        server = FramedTransport(inner, max_frame_size=max_frame_size)

        def on_event(event: IOEvent) -> None:
            kind, peer = event.kind, event.peer
            if kind is EventKind.READABLE:
                while (result := server.resume_read(peer)).status is IOStatus.OK:
                    server.resume_write(result.data, peer)
            elif kind is EventKind.ACCEPTED:
                log(f"{peer} connected")
            elif kind is EventKind.CLOSED:
                if event.status is IOStatus.ERROR:
                    log(f"{peer} closed: {type(event.error).__name__}: {event.error}")
                else:
                    log(f"{peer} closed ({event.status.value})")

        server.attach(watcher, on_event)
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
            bound_host, bound_port = server.bind()
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
    return 0


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
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m barknet", description="barknet command-line tools"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_serve = commands.add_parser("serve", help="run a framed echo server")
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    p_serve.add_argument(
        "--max-frame-size",
        type=_size,
        default=DEFAULT_MAX_FRAME_SIZE,
        help=f"largest payload accepted, in bytes ({DEFAULT_MAX_FRAME_SIZE})",
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
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.max_frame_size, tls=_tls_context(args))
    from . import bench  # imported late: `serve` should start fast

    impls = args.impls.split(",") if args.impls else None
    status = bench.main(quick=args.quick, json_path=args.json, impls=impls)
    if args.tls and status == 0:
        from . import bench_tls

        print(file=sys.stdout)
        status = bench_tls.main(quick=args.quick, json_path=args.json)
    return status
