"""Tests for barknet.testing.trace: the tracing transport, its renderings, and reactor traces."""

from __future__ import annotations

import socket

import matplotlib
import pytest

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    IOStatus,
    Peer,
    TcpTransport,
    encode_frame,
)
from barknet.testing.trace import (
    LoopTrace,
    Trace,
    TracingTransport,
    hex_view,
    plot_loop_timeline,
    plot_timeline,
)

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(scope="module", autouse=True)
def _fonts_loaded() -> None:
    """matplotlib keeps its font files open once used: open them before any
    test's leak check starts counting descriptors."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().set_title("warm-up")
    fig.tight_layout()


def test_a_read_with_nothing_there_is_recorded_as_would_block(ew) -> None:
    a, b = socket.socketpair()
    trace = Trace()
    t = TracingTransport(TcpTransport(), trace, side="reader")
    t.attach(ew, lambda ev: None)
    try:
        peer = t.adopt(a)
        result = t.resume_read(peer)
        assert result.status is IOStatus.WOULD_BLOCK
        (record,) = trace.records
        assert (record.peer, record.call, record.returned) == ("reader.1", "recv", 0)
        assert record.status is IOStatus.WOULD_BLOCK and record.would_block
        assert record.asked == 256 * 1024  # TcpTransport's default read_size
    finally:
        t.close()
        b.close()


def test_writes_and_reads_are_recorded_with_asked_and_returned(ew) -> None:
    a, b = socket.socketpair()
    trace = Trace()
    t = TracingTransport(TcpTransport(), trace, side="x")
    t.attach(ew, lambda ev: None)
    try:
        pa, pb = t.adopt(a), t.adopt(b)
        assert t.resume_write([b"ab", b"cd"], pa).sent == 4
        buf = bytearray(10)
        assert bytes(t.resume_read(pb, buf, 2, 3).data) == b"abc"
        w, r = trace.records
        assert (w.call, w.asked, w.returned, w.status, w.direction) == (
            "sendmsg",
            4,
            4,
            IOStatus.OK,
            "out",
        )
        assert (r.call, r.asked, r.returned, r.short, r.direction) == (
            "recv_into",
            3,
            3,
            False,
            "in",
        )
        assert (w.peer, r.peer) == ("x.1", "x.2")
    finally:
        t.close()


def test_tracing_under_framing_changes_nothing_the_owner_sees(ew) -> None:
    trace = Trace(capture=1024)
    got: list[bytes] = []
    server = FramedTransport(TracingTransport(TcpTransport(), trace, "server"))
    client = FramedTransport(TracingTransport(TcpTransport(), trace, "client"))

    def on_server(ev) -> None:
        if ev.kind is EventKind.READABLE:
            while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                server.resume_write(bytes(r.data), ev.peer)

    def on_client(ev) -> None:
        if ev.kind is EventKind.READABLE:
            while (r := client.resume_read(ev.peer)).status is IOStatus.OK:
                got.append(bytes(r.data))

    server.attach(ew, on_server)
    client.attach(ew, on_client)
    try:
        peer = client.connect(server.bind())
        payloads = [b"one", b"", b"three" * 100]
        for p in payloads:
            client.resume_write(p, peer)
        ew.run_until(lambda: len(got) == 3, timeout=5)
        assert got == payloads
        sent, _ = trace.stream("client", "out")
        assert sent == b"".join(encode_frame(p) for p in payloads)
        echoed, _ = trace.stream("server", "out")
        assert echoed == sent
        assert trace.summary()["client out"]["frames"] == 3
        assert trace.summary()["client in"]["frames"] == 3
    finally:
        client.close()
        server.close()


def test_frame_headers_are_found_even_when_split_across_calls() -> None:
    trace = Trace()
    peer = Peer()
    stream = encode_frame(b"hi") + encode_frame(b"") + encode_frame(b"xyz")
    for i in range(len(stream)):  # one byte per call: the worst chopping there is
        trace.add("s", peer, "recv", 1, stream[i : i + 1], IOStatus.OK, 0.0)
    header_bytes = [r.offset for r in trace.records if r.headers]
    assert header_bytes == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13]
    ends = [r.offset + 1 for r in trace.records if r.frame_ends]
    assert ends == [6, 10, 17]


def test_a_table_without_times_prints_the_same_for_the_same_calls() -> None:
    def make() -> str:
        trace = Trace()
        peer = Peer()
        trace.add("c", peer, "send", 9, encode_frame(b"hello"), IOStatus.OK, 0.0)
        trace.add("c", peer, "send", 100, b"\0\0\0\x03ab", IOStatus.WOULD_BLOCK, 0.5)
        trace.add("c", peer, "send", 1, b"", IOStatus.WOULD_BLOCK, 0.9)
        return trace.table()

    text = make()
    assert text == make()
    lines = text.splitlines()
    assert lines[0].split() == [
        "#",
        "peer",
        "call",
        "asked",
        "got",
        "status",
        "frame",
        "headers",
        "at",
    ]
    assert lines[1].split() == ["0", "c.1", "send", "9", "9", "ok", "0-3"]
    assert lines[2].split() == ["1", "c.1", "send", "100", "6", "short", "0-3"]
    assert lines[3].split() == ["2", "c.1", "send", "1", "0", "EAGAIN"]


# ---------------------------------------------------------------- hex view
@pytest.mark.parametrize("payloads", [[b"a"], [b"", b""], [b"hello", b"", b"x" * 40, b"end"]])
def test_hex_view_marks_exactly_four_header_bytes_per_frame(payloads) -> None:
    view = hex_view(b"".join(encode_frame(p) for p in payloads))
    html = view._repr_html_()
    assert html.count('class="hdr"') == 4 * len(payloads)
    text = str(view)
    assert text.count("[") == text.count("]") == len(payloads)
    hex_only = " ".join(line.split(None, 1)[1] for line in text.splitlines()[1:])
    bracketed = hex_only.split("[")[1:]
    assert all(len(part.split("]")[0].split()) == 4 for part in bracketed)


def test_hex_view_of_a_trace_draws_a_bar_where_each_call_ended() -> None:
    trace = Trace()
    peer = Peer()
    frame = encode_frame(b"abcdef")
    trace.add("s", peer, "recv", 64, frame[:3], IOStatus.OK, 0.0)
    trace.add("s", peer, "recv", 64, frame[3:], IOStatus.OK, 0.1)
    view = hex_view(trace, "s", "in")
    assert view.cuts == [3]
    assert str(view).splitlines()[1] == "00000000  [00 00 00 | 06] 61 62 63 64 65 66"
    assert view._repr_html_().count("border-left:3px solid #c0392b") == 2  # legend + one cut


def test_a_stream_cannot_be_rebuilt_from_calls_larger_than_the_capture() -> None:
    trace = Trace(capture=4)
    trace.add("s", Peer(), "recv", 64, encode_frame(b"abcdef"), IOStatus.OK, 0.0)
    with pytest.raises(ValueError, match="capture"):
        trace.stream("s", "in")


# ------------------------------------------------------------------ plots
def test_timeline_draws_one_row_per_peer_and_direction() -> None:
    trace = Trace()
    p, q = Peer(), Peer()
    trace.add("c", p, "send", 9, encode_frame(b"hello"), IOStatus.OK, 0.0)
    trace.add("s", q, "recv", 64, encode_frame(b"hello"), IOStatus.OK, 0.001)
    trace.add("s", q, "recv", 64, b"", IOStatus.WOULD_BLOCK, 0.002)
    fig = plot_timeline(trace)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c.1 send", "s.1 recv"]
    labels = ax.get_legend_handles_labels()[1]
    assert "EAGAIN" in labels and "frame header" in labels


# ----------------------------------------------------------- reactor trace
def test_a_timer_is_traced_once_as_a_timer_not_also_as_a_soon_callback() -> None:
    seen: list[tuple[str, str]] = []

    def due() -> None:
        pass

    with EventWatcher() as ew:
        ew.tracer = lambda kind, what: seen.append((kind, getattr(what, "__name__", "?")))
        ew.call_later(0.0, due)
        ew.run_once(1.0)
    assert seen == [("timer", "due")]


def test_loop_trace_records_in_order_and_restores_the_previous_tracer() -> None:
    def first() -> None:
        pass

    def second() -> None:
        pass

    def previous(kind, what) -> None:
        pass

    with EventWatcher() as ew:
        ew.tracer = previous
        trace = LoopTrace()
        with trace.watching(ew):
            ew.call_soon(first)
            ew.call_later(0.0, second)
            ew.run_once(0.5)
            ew.run_once(0.5)
        assert ew.tracer is previous
    assert [(r.kind, r.name) for r in trace.records] == [("soon", "first"), ("timer", "second")]
    assert "first" in trace.table() and " ms" in trace.table(times=True)
    fig = plot_loop_timeline(trace)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["first", "second"]
