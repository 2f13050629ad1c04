"""TransportLayer: the pass-through base of the decorator transports."""

from __future__ import annotations

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOEvent, IOStatus, TcpTransport
from barknet.interfaces import ITransport
from barknet.layer import TransportLayer, copy_message_into
from barknet.testing.conformance import CHECKS, Check


def framed_over_bare_layer(inner: ITransport) -> ITransport:
    return FramedTransport(TransportLayer(inner))


@pytest.mark.parametrize("check", CHECKS[:6], ids=[c.name for c in CHECKS[:6]])
def test_a_layer_that_overrides_nothing_is_invisible_to_framing(check: Check) -> None:
    check.run(framed_over_bare_layer)


class _CountsEvents(TransportLayer):
    """Overrides one hook, as every real layer does."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self.kinds: list[EventKind] = []

    def _on_inner_event(self, event: IOEvent) -> None:
        self.kinds.append(event.kind)
        super()._on_inner_event(event)


def test_events_reach_the_owner_through_an_overridden_hook_and_attributes_fall_through() -> None:
    seen: list[IOEvent] = []
    with EventWatcher() as ew:
        server = _CountsEvents(TcpTransport())
        server.attach(ew, seen.append)
        host, port = server.bind()
        assert server.address == (host, port)  # TcpTransport's, through the layer
        client = TcpTransport(host, port)
        client.attach(ew, lambda event: None)
        try:
            client.connect()
            ew.run_until(lambda: server.peers, timeout=5)
            assert [e.kind for e in seen] == server.kinds == [EventKind.ACCEPTED]
            assert repr(server).startswith("<_CountsEvents over <TcpTransport listening")
        finally:
            client.close()
            server.close()


def test_a_missing_attribute_is_reported_as_the_inner_transports() -> None:
    layer = TransportLayer(TcpTransport())
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = layer.no_such_thing


def test_a_message_is_copied_whole_into_the_callers_buffer_or_not_at_all() -> None:
    buffer = bytearray(b"." * 10)
    result = copy_message_into(b"abc", buffer, offset=2)
    assert bytes(result.data) == b"abc" and result.status is IOStatus.OK
    assert buffer == bytearray(b"..abc.....")
    with pytest.raises(BufferError, match="a 3-byte message does not fit in 2 bytes"):
        copy_message_into(b"xyz", buffer, offset=0, max_len=2)
    assert buffer == bytearray(b"..abc.....")  # nothing half-written


def test_a_message_is_copied_to_the_start_of_the_buffer_by_default() -> None:
    buffer = bytearray(b"." * 6)
    result = copy_message_into(b"abc", buffer)
    assert buffer == bytearray(b"abc...") and bytes(result.data) == b"abc"
