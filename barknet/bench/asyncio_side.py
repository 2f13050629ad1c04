"""asyncio streams, a careful asyncio ``Protocol``, and uvloop running that Protocol."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from .common import HEADER, HOST, MAX_FRAME, Session, _now, batch_for


# ----------------------------------------------------------------- asyncio
def _new_loop(impl: str) -> Any:
    import asyncio

    if impl == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _make_protocol_class() -> Any:
    import asyncio

    class FramedProtocol(asyncio.Protocol):
        """A careful length-prefix Protocol: one growing buffer, one offset, no
        rescans; each frame is copied out once."""

        def __init__(self, on_frame: Callable[[Any], None] | None = None) -> None:
            self.buf = bytearray()
            self.on_frame = on_frame
            self.paused = False
            self.on_resume: Callable[[], None] | None = None
            self.transport: Any = None
            self.closed = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            start, end = 0, len(buf)
            on_frame, unpack_from = self.on_frame, HEADER.unpack_from
            while end - start >= 4:
                (size,) = unpack_from(buf, start)
                stop = start + 4 + size
                if stop > end:
                    break
                with memoryview(buf) as view:
                    frame = bytes(view[start + 4 : stop])
                start = stop
                on_frame(frame)  # type: ignore[misc]
            if start:
                del buf[:start]

        def send(self, payload: Any) -> None:
            self.transport.write(HEADER.pack(len(payload)) + payload)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            if self.on_resume is not None:
                self.on_resume()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.closed.done():
                self.closed.set_result(exc)

    return FramedProtocol


def _serve_asyncio(impl: str, ready: Callable[[int], None]) -> None:
    import asyncio

    loop = _new_loop(impl)
    asyncio.set_event_loop(loop)

    async def handle_stream(reader: Any, writer: Any) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(lambda p: writer.write(HEADER.pack(len(p)) + p))
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(4))
                data = await reader.readexactly(size)
                if session.frame(data):
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def start() -> Any:
        if impl == "asyncio-streams":
            return await asyncio.start_server(handle_stream, HOST, 0, limit=MAX_FRAME)
        protocol_class = _make_protocol_class()

        def factory() -> Any:
            proto = protocol_class()
            proto.on_frame = Session(proto.send).frame
            return proto

        return await loop.create_server(factory, HOST, 0)

    server = loop.run_until_complete(start())
    ready(server.sockets[0].getsockname()[1])
    loop.run_forever()


def _asyncio_client(
    impl: str,
    port: int,
    tasks: list[list[Any]],
    place: Callable[[str], None],
    ssl: Any = None,
) -> list[Any]:
    """The client side of ``impl`` (streams, or the Protocol over asyncio or uvloop);
    with ``ssl`` (a client SSLContext), the Protocol speaks TLS (the ``--tls`` rows)."""
    import asyncio

    loop = _new_loop(impl)
    asyncio.set_event_loop(loop)

    async def streams_task(kind: str, size: int, count: int, warm: int) -> Any:
        reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_FRAME)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"x" * size  # (framed when sent, as by every other client but raw's)

        async def read_frame() -> bytes:
            (n,) = HEADER.unpack(await reader.readexactly(4))
            return await reader.readexactly(n)

        try:
            if kind == "pingpong":
                writer.write(HEADER.pack(4) + b"echo")
                samples = []
                for i in range(warm + count):
                    t0 = _now()
                    writer.write(HEADER.pack(size) + payload)
                    await writer.drain()
                    await read_frame()
                    if i >= warm:
                        samples.append(_now() - t0)
                return samples
            elapsed = 0
            for n in (warm, count):
                command = f"sink {n}".encode()
                t0 = _now()
                writer.write(HEADER.pack(len(command)) + command)
                for _ in range(n):
                    writer.write(HEADER.pack(size) + payload)
                    await writer.drain()
                assert await read_frame() == b"ok"
                elapsed = _now() - t0
            return elapsed
        finally:
            writer.close()
            await writer.wait_closed()

    async def protocol_task(kind: str, size: int, count: int, warm: int) -> Any:
        protocol_class = _make_protocol_class()
        _, proto = await loop.create_connection(protocol_class, HOST, port, ssl=ssl)
        payload = b"x" * size
        # Each frame is framed when it is sent (proto.send packs the header), as
        # barknet's client and every server do, not built once before the run.
        send, writelines = proto.send, proto.transport.writelines
        try:
            if kind == "pingpong":
                samples: list[int] = []
                done = loop.create_future()
                t0 = [0, 0]

                def on_echo(data: bytes) -> None:
                    t = _now()
                    i = t0[1] = t0[1] + 1
                    if i > warm:
                        samples.append(t - t0[0])
                    if i < warm + count:
                        t0[0] = _now()
                        send(payload)
                    elif not done.done():
                        done.set_result(None)

                proto.on_frame = on_echo
                proto.send(b"echo")
                t0[0] = _now()
                send(payload)
                await done
                return samples
            elapsed = 0
            batch = batch_for(size)
            for n in (warm, count):
                finished = loop.create_future()
                left = [n]

                def pump(left: list[int] = left) -> None:
                    # Small frames in batches, one writelines call each, as
                    # barknet's client does with write_frames (same batch size).
                    pack = HEADER.pack
                    while left[0] and not proto.paused:
                        k = min(batch, left[0])
                        left[0] -= k
                        writelines([pack(size) + payload for _ in range(k)])

                proto.on_frame = lambda data, f=finished: f.done() or f.set_result(data)
                proto.on_resume = pump
                t0_bulk = _now()
                proto.send(f"sink {n}".encode())
                pump()
                assert await finished == b"ok"
                elapsed = _now() - t0_bulk
            return elapsed
        finally:
            proto.transport.close()
            await proto.closed

    async def all_tasks() -> list[Any]:
        results = []
        for kind, size, count, warm in tasks:
            place(kind)
            task = streams_task if impl == "asyncio-streams" else protocol_task
            results.append(await task(kind, size, count, warm))
        return results

    try:
        return loop.run_until_complete(all_tasks())
    finally:
        loop.close()
