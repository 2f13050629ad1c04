"""The benchmark's machinery, and the mechanisms its targets rest on.

Nothing here asserts a duration: the first tests run the real benchmark in a
tiny configuration and check what it reports, the others count what the
targets depend on (system calls, copies, buffers) with barknet's own counters.
"""

from __future__ import annotations

import io
import json
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOStatus, TcpTransport, bench
from barknet.framing import FrameDecoder, encode_frame

pytestmark = pytest.mark.usefixtures("no_leaks")

TINY = bench.Plan(
    reps=1,
    pingpong=[(16, 30, 5)],
    bulk=[(64, 300, 30), (256 * 1024, 4, 1)],
    rss_size=1024 * 1024,
    name="tiny",
)
FIELDS = {"impl", "metric", "size_bytes", "value", "ratio_to_raw"}


def _find(records: list[dict[str, Any]], impl: str, metric: str) -> dict[str, Any]:
    (record,) = [r for r in records if r["impl"] == impl and r["metric"] == metric]
    return record


def _raw(records: list[dict[str, Any]], like: dict[str, Any]) -> dict[str, Any]:
    (record,) = [
        r
        for r in records
        if r["impl"] == "raw"
        and r["metric"] == like["metric"]
        and r["size_bytes"] == like["size_bytes"]
    ]
    return record


@pytest.fixture(scope="module")
def tiny_records() -> tuple[list[dict[str, Any]], str]:
    out = io.StringIO()
    records = bench.run(TINY, ["selectors", "barknet"], out=out)
    return records, out.getvalue()


def test_tiny_run_gives_every_metric_for_every_implementation(
    tiny_records: tuple[list[dict[str, Any]], str],
) -> None:
    records, _ = tiny_records
    assert records and all(set(r) >= FIELDS for r in records)
    seen = {(r["impl"], r["metric"], r["size_bytes"]) for r in records}
    for impl in ("raw", "selectors", "barknet"):  # raw is added: ratios are taken against it
        assert (impl, "pingpong_p50_us", 16) in seen
        assert (impl, "pingpong_p99_us", 16) in seen
        assert (impl, "frames_per_s", 64) in seen
        assert (impl, "bulk_MBps", 256 * 1024) in seen
        assert (impl, "peak_rss_ratio", 1024 * 1024) in seen
    # Python calls are counted, not timed, for the two pure-Python loops only.
    assert {(i, m) for i, m, _ in seen if m == "python_calls"} == {
        ("selectors", "python_calls"),
        ("barknet", "python_calls"),
    }
    assert len(seen) == len(records) == 3 * 5 + 2
    for r in records:
        assert r["value"] > 0
        if r["metric"] == "python_calls":
            assert r["ratio_to_raw"] is None
            continue
        assert r["ratio_to_raw"] == pytest.approx(r["value"] / _raw(records, r)["value"])
        if r["impl"] == "raw":
            assert r["ratio_to_raw"] == 1.0
    # The layers add Python calls to the hand-written loop's, never fewer.
    calls = {r["impl"]: r["value"] for r in records if r["metric"] == "python_calls"}
    assert calls["barknet"] > calls["selectors"] >= 4
    # p99 never beats p50; a raw receiver holds the frame in one buffer, not two.
    for impl in ("raw", "barknet"):
        p50 = _find(records, impl, "pingpong_p50_us")["value"]
        assert _find(records, impl, "pingpong_p99_us")["value"] >= p50
    assert _find(records, "raw", "peak_rss_ratio")["value"] < 2.0
    json.dumps(records)  # the --json file is exactly this list


def test_tiny_run_says_how_it_was_measured(
    tiny_records: tuple[list[dict[str, Any]], str],
) -> None:
    records, progress = tiny_records
    assert "placement:" in progress and "allocator:" in progress
    assert "[1/1] barknet" in progress and "[1/1] raw" in progress
    machine = records[0]["machine"]
    assert {"cpus", "cpu_model", "python", "placement", "allocator"} <= set(machine)
    table = bench.format_table(records)
    header, *rows = table.splitlines()
    assert "raw" in header and "barknet" in header
    assert any(row.startswith("round trip p50 16 B") and "×" in row for row in rows)


def test_json_option_writes_the_list_of_records(tmp_path: Any) -> None:
    path = tmp_path / "out" / "results.json"
    plan = bench.Plan(reps=1, pingpong=[(16, 5, 1)], bulk=[], rss_size=64 * 1024)
    assert bench.main(json_path=str(path), impls=["raw"], plan=plan, out=io.StringIO()) == 0
    records = json.loads(path.read_text())
    assert [r["metric"] for r in records] == [
        "pingpong_p50_us",
        "pingpong_p99_us",
        "peak_rss_ratio",
    ]


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="carrier-pigeon"):
        bench.run(TINY, ["carrier-pigeon"], out=io.StringIO())


def test_session_answers_the_three_commands() -> None:
    sent: list[bytes] = []
    session = bench.Session(lambda p: sent.append(bytes(p)))
    assert not session.frame(b"sink 2")
    assert not session.frame(b"a") and session.frame(b"b")
    assert sent == [b"ok"]
    assert session.frame(b"rss") and sent[-1] == b"ready"
    assert session.frame(bytearray(1000)) and int(sent[-1]) >= 0
    assert not session.frame(b"echo")
    assert session.frame(b"hello") and sent[-1] == b"hello"


# ------------------------------------------------------------------ mechanisms
@pytest.fixture
def pair(ew: EventWatcher) -> Iterator[tuple[Any, ...]]:
    """A framed sender and a framed receiver joined by a socketpair."""
    made: list[FramedTransport] = []
    received: list[Any] = []

    def make(**options: Any) -> tuple[FramedTransport, Any, FramedTransport, Any]:
        a, b = socket.socketpair()
        sender = FramedTransport(TcpTransport(), max_frame_size=64 << 20, **options)
        receiver = FramedTransport(TcpTransport(), max_frame_size=64 << 20)

        def on_receiver(ev: Any) -> None:
            if ev.kind is EventKind.READABLE:
                while (r := receiver.resume_read(ev.peer)).status is IOStatus.OK:
                    received.append(r.data)

        sender.attach(ew, lambda ev: None)
        receiver.attach(ew, on_receiver)
        made.extend((sender, receiver))
        return sender, sender.adopt(a), receiver, receiver.adopt(b)

    try:
        yield make, received
    finally:
        for transport in made:
            transport.close()
        ew.run_once(0)


def test_a_16_mib_frame_grows_as_it_arrives_then_reuses_the_buffer_handed_back(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, receiver, r_peer = make()
    size = 16 << 20
    payload = bytes(size)
    decoder = receiver._recv[r_peer].decoder

    def one_frame() -> int:
        tracemalloc.start()
        try:
            sender.resume_write(payload, s_peer)
            ew.run_until(lambda: len(received) == 1, timeout=30)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak = one_frame()
    (frame,) = received
    assert isinstance(frame, bytearray) and len(frame) == size and frame == payload
    # A fresh frame's body grows with the bytes (doubling, in place): one buffer of
    # the frame's size in the end and small change, and no copy beyond what landed
    # in the scratch with the header.
    assert peak < size + (1 << 20)
    assert decoder.bytes_copied < 64 * 1024
    received.clear()
    receiver.recycle(frame, r_peer)  # done with it: the next 16 MiB frame lands in it
    del frame
    copied = decoder.bytes_copied
    peak = one_frame()
    (frame,) = received
    assert len(frame) == size and frame == payload
    # One buffer of the frame's size, already ours: no growing, no final copy.
    assert peak < 1 << 20
    assert decoder.bytes_copied - copied < 64 * 1024  # only what landed in the scratch first
    counters = receiver.counters(r_peer)
    assert counters.bytes_received == 2 * (size + 4)
    assert counters.recv_calls <= 2 * size // (16 * 1024)  # reads of at least 16 KiB on average
    sent = sender.counters(s_peer)
    assert sent.bytes_sent == 2 * (size + 4) and sent.send_calls <= 2 * size // (16 * 1024)


def test_small_frames_queued_behind_a_blocked_socket_leave_together(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make()
    # A frame larger than both socket buffers blocks the socket until the
    # receiver drains; 2000 small frames queue behind it meanwhile.
    first = sender.resume_write(bytes(8 << 20), s_peer)
    assert first.status is IOStatus.WOULD_BLOCK
    before = sender.counters(s_peer).send_calls
    for i in range(2000):
        assert sender.resume_write(b"%064d" % i, s_peer).status is IOStatus.WOULD_BLOCK
    assert sender.counters(s_peer).send_calls == before  # queued, not sent
    ew.run_until(lambda: len(received) == 2001, timeout=30)
    assert [bytes(f) for f in received[1:]] == [b"%064d" % i for i in range(2000)]
    sends = sender.counters(s_peer).send_calls - before
    assert sends < 2000 / 20  # in practice a handful


def test_coalescing_sends_a_turns_worth_of_small_frames_in_one_call(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make(coalesce=True, high_water=1 << 20)
    results = [sender.resume_write(b"%064d" % i, s_peer) for i in range(1000)]
    # The first frame leaves at once (no added latency); the rest wait for the turn's end.
    assert results[0].status is IOStatus.OK and results[0].sent == 68
    assert {r.status for r in results[1:]} == {IOStatus.WOULD_BLOCK}
    assert sender.counters(s_peer).send_calls == 1
    ew.run_until(lambda: len(received) == 1000, timeout=10)
    assert [bytes(f) for f in received] == [b"%064d" % i for i in range(1000)]
    counters = sender.counters(s_peer)
    assert counters.send_calls <= 3 and counters.frames_sent == 1000
    # The next turn starts afresh: its first frame leaves at once again.
    assert sender.resume_write(b"again", s_peer).status is IOStatus.OK


def test_without_coalescing_an_idle_socket_sends_each_frame_at_once(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make()
    for i in range(10):
        result = sender.resume_write(b"%064d" % i, s_peer)
        assert result.status is IOStatus.OK and result.sent == 68
    assert sender.counters(s_peer).send_calls == 10
    ew.run_until(lambda: len(received) == 10, timeout=10)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_decoder_copying_grows_linearly_with_the_input(chunk: int) -> None:
    def copies(stream: bytes) -> int:
        decoder = FrameDecoder(buffer_size=4096)
        view, frames = memoryview(stream), 0
        for i in range(0, len(stream), chunk):
            frames += len(decoder.feed(view[i : i + chunk]))
        assert decoder.state.part == "idle"
        return decoder.bytes_copied

    unit = b"".join(encode_frame(bytes(n)) for n in (0, 1, 64, 1000, 3000, 20_000))
    small, large = unit * 4, unit * 16
    # Four times the input, about four times the copies (a buffer that re-copies
    # what it holds would give sixteen), and never more than twice the bytes fed.
    assert copies(large) <= 6 * copies(small)
    assert copies(large) <= 2 * len(large)


def test_a_large_frame_body_is_refilled_only_once_its_owner_handed_it_back() -> None:
    decoder = FrameDecoder(max_frame_size=4 << 20)
    stream = encode_frame(bytes(1 << 20))

    def allocated_while_decoding() -> tuple[Any, int]:
        tracemalloc.start()
        try:
            (frame,) = decoder.feed(stream)
            return frame, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (first,) = decoder.feed(stream)
    decoder.recycle(first)  # the owner is done with it: the next frame of that size refills it
    second, fresh = allocated_while_decoding()
    assert fresh < 256 * 1024 and len(second) == 1 << 20 and second is first
    third, fresh = allocated_while_decoding()  # `second` was not handed back: a new buffer
    assert fresh >= 1 << 20 and third is not second and len(third) == 1 << 20
    decoder.recycle(third)
    (other,) = decoder.feed(encode_frame(b"y" * (2 << 20)))  # another size: a new buffer
    assert len(other) == 2 << 20 and other[:1] == b"y" and other is not third
