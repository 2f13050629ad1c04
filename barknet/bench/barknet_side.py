"""barknet's :class:`~barknet.framed.FramedTransport` as benchmark server and client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import CHILD_TIMEOUT, COALESCE, HOST, MAX_FRAME, Session, _now, batch_for


# ----------------------------------------------------------------- barknet
def _stack(bare: bool) -> tuple[Any, Any]:
    """The framed and TCP classes: barknet's own, or (``bare``, the
    ``barknet-bare`` side of ``benchmarks/pairs.py``) the bare stack of
    :mod:`barknet.bench.layers`, which keeps none of the guarantees and serves
    only round trips (its writes must leave whole)."""
    if bare:
        from .layers import BareFramedTransport, BareTcpTransport

        return BareFramedTransport, BareTcpTransport
    from barknet import FramedTransport, TcpTransport

    return FramedTransport, TcpTransport


def _serve_barknet(ready: Callable[[int], None], bare: bool = False) -> None:
    from barknet import EventKind, EventWatcher

    framed, tcp = _stack(bare)
    with EventWatcher() as ew:
        server = framed(tcp(HOST, 0), max_frame_size=MAX_FRAME)  # (one echo per turn)
        sessions: dict[Any, Session] = {}
        # Looked up once: on CPython 3.10/3.11 EventKind.READABLE costs an enum hook call.
        readable = EventKind.READABLE

        def on_event(ev: Any) -> None:
            peer = ev.peer
            if ev.kind is readable:
                # Frames in batches (read_frames), not one resume_read call each.
                # One call takes all that this turn decoded, and READABLE is
                # level-triggered (it comes again while frames wait), so one call
                # per READABLE is enough: a second would only find the list empty.
                # The peer's end, if any, comes as CLOSED: nothing else to ask.
                session = sessions[peer]
                for data in server.read_frames(peer):
                    if not session.frame(data) and type(data) is bytearray:
                        # A large frame (small ones are bytes) that was not echoed,
                        # so not kept: hand its memory back for the next one.
                        server.recycle(data, peer)
            elif ev.kind is EventKind.ACCEPTED:
                sessions[peer] = Session(lambda p: server.resume_write(p, peer))
            elif ev.kind is EventKind.CLOSED:
                sessions.pop(peer, None)

        server.attach(ew, on_event)
        ready(server.bind()[1])
        ew.run()


class _BarknetClient:
    """One connection's client side over ``FramedTransport``: ping-pong or bulk."""

    def __init__(
        self, ew: Any, port: int, size: int, bare: bool = False, coalesce: bool = False
    ) -> None:
        from barknet import EventKind

        self.kinds = EventKind
        self.readable = EventKind.READABLE  # looked up once, as in the server
        self.ew = ew
        self.bare, self.coalesce = bare, coalesce
        self.connected = False
        self.transport = self.make_transport(port)
        self.transport.attach(ew, self.on_event)
        self.peer = self.transport.connect()
        if bare:  # the bare stack cannot queue a write made before the connection is up
            ew.run_until(lambda: self.connected, timeout=CHILD_TIMEOUT)
        self.payload = b"x" * size
        self.paused = self.done = self.closing = False
        self.on_frame: Callable[[Any], None] = self.finish
        self.left = 0
        self.samples: list[int] = []
        self.t0 = self.count = self.warm = self.round_trips = 0

    def make_transport(self, port: int) -> Any:
        framed, tcp = _stack(self.bare)
        return framed(tcp(HOST, port), max_frame_size=MAX_FRAME, coalesce=self.coalesce)

    def on_event(self, ev: Any) -> None:
        kind, kinds = ev.kind, self.kinds
        if kind is self.readable:
            on_frame = self.on_frame
            for data in self.transport.read_frames(ev.peer):  # all of them (see the server)
                on_frame(data)
        elif kind is kinds.PAUSE_WRITING:
            self.paused = True
        elif kind is kinds.RESUME_WRITING:
            self.paused = False
            self.pump()
        elif kind is kinds.CONNECTED:
            self.connected = True
        elif kind is kinds.CLOSED:
            if ev.error is not None:
                raise ev.error
            if not self.closing:
                self.ew.stop()  # the server let us go before the task was done: wait() says so

    def finish(self, data: Any) -> None:
        self.done = True
        self.ew.stop()

    def wait(self) -> None:
        """Turn the loop until the task is done, which stops it (as the asyncio
        client awaits a future): no condition is checked on every turn, where
        ``run_until`` would call one and read the clock per turn, all counted in
        the round trip. A server that never answers is bounded by the parent,
        which kills this child after ``CHILD_TIMEOUT``."""
        self.ew.run()
        if not self.done:
            raise RuntimeError("the server closed the connection before the task was done")
        self.done = False

    def pingpong(self, count: int, warm: int) -> list[int]:
        self.count, self.warm, self.on_frame = count, warm, self.on_echo
        self.transport.resume_write(b"echo", self.peer)
        self.t0 = _now()
        self.transport.resume_write(self.payload, self.peer)
        self.wait()
        return self.samples

    def on_echo(self, data: Any) -> None:
        t = _now()
        done = self.round_trips = self.round_trips + 1
        if done > self.warm:
            self.samples.append(t - self.t0)
        if done < self.warm + self.count:
            self.t0 = _now()
            self.transport.resume_write(self.payload, self.peer)
        else:
            self.finish(data)

    def bulk(self, count: int) -> int:
        self.on_frame, self.left = self.finish, count
        t0 = _now()
        self.transport.resume_write(f"sink {count}".encode(), self.peer)
        self.pump()
        self.wait()
        return _now() - t0

    def pump(self) -> None:
        # Small frames in batches (write_frames: one call queues a batch; the
        # PAUSE_WRITING a batch causes stops the next one).
        write_frames, payload, peer = self.transport.write_frames, self.payload, self.peer
        batch = batch_for(len(payload))
        while self.left and not self.paused:
            k = min(batch, self.left)
            self.left -= k
            write_frames([payload] * k, peer)

    def close(self) -> None:
        self.closing = True  # (its CLOSED must not stop the loop for the next task)
        self.transport.close()
        self.ew.run_once(0)


def _barknet_client(
    port: int, tasks: list[list[Any]], place: Callable[[str], None], bare: bool = False
) -> list[Any]:
    from barknet import EventWatcher

    results: list[Any] = []
    with EventWatcher() as ew:
        for kind, size, count, warm in tasks:
            if bare and kind != "pingpong":
                raise ValueError("the bare stack serves only round trips (pingpong)")
            place(kind)
            client = _BarknetClient(ew, port, size, bare, coalesce=COALESCE and kind == "bulk")
            try:
                if kind == "pingpong":
                    results.append(client.pingpong(count, warm))
                else:
                    client.bulk(warm)
                    results.append(client.bulk(count))
            finally:
                client.close()
    return results
