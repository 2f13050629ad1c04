"""Twisted's ``Int32StringReceiver`` as benchmark server and client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import HOST, MAX_FRAME, Session, _now


# ----------------------------------------------------------------- twisted
def _twisted_protocol_class() -> Any:
    from twisted.protocols.basic import Int32StringReceiver

    class Framed(Int32StringReceiver):
        MAX_LENGTH = MAX_FRAME

        def __init__(self) -> None:
            self.on_frame: Callable[[bytes], None] | None = None
            self.paused = False
            self.on_resume: Callable[[], None] | None = None

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            if self.factory_session is not None:
                self.on_frame = self.factory_session(self.sendString).frame

        factory_session: Any = None

        def stringReceived(self, string: bytes) -> None:
            self.on_frame(string)  # type: ignore[misc]

        # IPushProducer, so a bulk sender stops when the transport's buffer is full
        def pauseProducing(self) -> None:
            self.paused = True

        def resumeProducing(self) -> None:
            self.paused = False
            if self.on_resume is not None:
                self.on_resume()

        def stopProducing(self) -> None:
            self.paused = True

    return Framed


def _serve_twisted(ready: Callable[[int], None]) -> None:
    from twisted.internet import protocol, reactor

    framed = _twisted_protocol_class()
    framed.factory_session = Session
    factory = protocol.Factory.forProtocol(framed)
    port = reactor.listenTCP(0, factory, interface=HOST)
    ready(port.getHost().port)
    reactor.run(installSignalHandlers=False)


def _twisted_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.python.failure import Failure

    framed = _twisted_protocol_class()
    results: list[Any] = []
    failure: list[Failure] = []

    def pingpong(proto: Any, payload: bytes, count: int, warm: int) -> Any:
        samples: list[int] = []
        done: defer.Deferred[list[int]] = defer.Deferred()
        t0 = [0, 0]  # [start of this round trip, round trips done]

        def on_echo(data: bytes) -> None:
            t = _now()
            i = t0[1] = t0[1] + 1
            if i > warm:
                samples.append(t - t0[0])
            if i < warm + count:
                t0[0] = _now()
                proto.sendString(payload)
            else:
                done.callback(samples)

        proto.on_frame = on_echo
        proto.sendString(b"echo")
        t0[0] = _now()
        proto.sendString(payload)
        return done

    @defer.inlineCallbacks
    def bulk(proto: Any, payload: bytes, count: int) -> Any:
        finished: defer.Deferred[bytes] = defer.Deferred()
        left = [count]

        def pump() -> None:
            while left[0] and not proto.paused:
                left[0] -= 1
                proto.sendString(payload)

        proto.on_frame, proto.on_resume = finished.callback, pump
        t0 = _now()
        proto.sendString(f"sink {count}".encode())
        pump()
        assert (yield finished) == b"ok"
        return _now() - t0

    @defer.inlineCallbacks
    def all_tasks() -> Any:
        for kind, size, count, warm in tasks:
            place(kind)
            proto = yield connectProtocol(TCP4ClientEndpoint(reactor, HOST, port), framed())
            payload = b"x" * size
            if kind == "pingpong":
                results.append((yield pingpong(proto, payload, count, warm)))
            else:
                proto.transport.registerProducer(proto, True)
                yield bulk(proto, payload, warm)
                results.append((yield bulk(proto, payload, count)))
                proto.transport.unregisterProducer()
            proto.transport.loseConnection()

    def stop(result: Any) -> None:
        if isinstance(result, Failure):
            failure.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: all_tasks().addBoth(stop))
    reactor.run(installSignalHandlers=False)
    if failure:
        failure[0].raiseException()
    return results
