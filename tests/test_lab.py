"""Tests for barknet.course: the notebook experiments do what their summaries claim,
print the same summary every run, and leave nothing behind."""

from __future__ import annotations

import dataclasses
import statistics
import sys

import matplotlib
import pytest

from barknet import course, encode_frame
from barknet.framed import FRAMES_PER_TURN

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(scope="module", autouse=True)
def _fonts_loaded() -> None:
    """matplotlib keeps its font files open once used: open them before any
    test's leak check starts counting descriptors."""
    from barknet.events import IOCounters
    from barknet.testing.trace import Trace

    # Drawn from made-up results (log axes use mathtext, which loads more fonts).
    fake = [
        course.EchoResult(
            n, 1, 2, 2, [1e-5 * n, 2e-5 * n], IOCounters(), IOCounters(), Trace(), 0.1
        )
        for n in (16, 16 * 1024 * 1024)
    ]
    course.plot_throughput(fake)
    course.plot_echo(fake[0])
    course.plot_throughput(course.throughput_sweep(sizes=(64, 4096), budget=64 * 1024))
    course.plot_benchmark(
        [
            {"impl": "raw", "metric": "bulk_MBps", "size_bytes": 16, "value": 2.0},
            {"impl": "raw", "metric": "pingpong_p50_us", "size_bytes": 16, "value": 30.0},
        ]
    )


def test_environment_check_echoes_one_frame_intact() -> None:
    report = course.check_environment(b"ping")
    assert "round trip intact: yes" in report
    assert report.splitlines()[2].endswith("b'ping'")


# ------------------------------------------------------------------ 01
def test_blocking_recv_waits_until_its_timeout_raises() -> None:
    outcome = course.blocking_recv(timeout=0.05)
    assert outcome.raised == "TimeoutError"
    assert "raised TimeoutError" in outcome.summary()


def test_nonblocking_recv_answers_eagain() -> None:
    outcome = course.nonblocking_recv()
    assert (outcome.raised, outcome.errno_name) == ("BlockingIOError", "EAGAIN")


def test_thread_per_connection_starts_one_thread_each_and_joins_them_all() -> None:
    rows = course.thread_per_connection(counts=(1, 4))
    assert [(r.connections, r.threads_started) for r in rows] == [(1, 1), (4, 4)]
    assert "4 connections: 4 threads" in course.thread_cost_summary(rows)
    assert len(course.plot_thread_cost(rows).axes) == 2


# ------------------------------------------------------------------ 02
def test_reactor_tour_dispatches_in_a_fixed_order() -> None:
    trace = course.reactor_tour()
    assert [(r.kind, r.name) for r in trace.records] == [
        ("soon", "start"),
        ("write", "socket_writable"),
        ("timer", "tick"),
        ("timer", "tick"),
        ("timer", "send_hello"),
        ("read", "socket_readable"),
        ("timer", "tick"),
        ("timer", "finish"),
    ]


def test_a_timer_never_runs_before_it_is_due_even_behind_a_slow_callback() -> None:
    _, ran_after = course.late_timer(block=0.03, due=0.01)
    assert ran_after >= 0.03  # it waited for the callback that held the loop


# ------------------------------------------------------------------ 03
def test_partial_io_with_a_tiny_send_buffer_reports_short_sends() -> None:
    result = course.partial_io(size=256 * 1024, sndbuf=4096)
    assert result.intact
    assert result.sender.short_sends > 0
    summary = result.summary().splitlines()
    assert summary[0] == "size=262144 B sndbuf=4096 B"
    assert "short sends: yes" in summary
    assert "the kernel took fewer: yes" in summary[2]
    assert "size=262144 B sndbuf=4096 B" in result.details()
    fig = course.plot_partial_io(result)
    assert len(fig.axes) == 2


def test_partial_io_with_a_small_message_sends_it_in_one_call() -> None:
    result = course.partial_io(size=1024, sndbuf=64 * 1024)
    assert result.intact
    assert result.sender.send_calls == 1 and result.sender.short_sends == 0
    assert "short sends: no" in result.summary()


def _edited_sender(keep_count: bool, give_back: bool):  # type: ignore[no-untyped-def]
    """Notebook 03's sender with one of its two lines dropped, as its cell suggests."""
    from barknet import EventKind, IOStatus

    def make(tx, message):  # type: ignore[no-untyped-def]
        sent = 0

        def on_event(event):  # type: ignore[no-untyped-def]
            nonlocal sent
            if event.kind in (EventKind.CONNECTED, EventKind.WRITABLE):
                while sent < len(message):
                    result = tx.resume_write(memoryview(message)[sent:], event.peer)
                    if keep_count:
                        sent += result.sent
                    if give_back and result.status is not IOStatus.OK:
                        return
                tx.suspend_write(event.peer)

        return on_event

    return make


def test_partial_io_stops_a_sender_that_never_returns_and_says_so() -> None:
    result = course.partial_io(size=256 * 1024, sndbuf=4096, sender=_edited_sender(True, False))
    assert result.stopped and not result.intact
    assert result.elapsed < 5
    assert result.sender.send_eagain >= course.partial_io_lab.SPIN_LIMIT - 10
    assert f"stopped: {result.stopped}" in result.summary().splitlines()
    assert "stopped" not in course.partial_io(size=1024, sndbuf=4096).summary()


def test_partial_io_ends_when_the_sender_forgets_what_was_sent() -> None:
    result = course.partial_io(size=256 * 1024, sndbuf=4096, sender=_edited_sender(False, True))
    assert not result.intact and result.stopped is None
    assert "arrived intact: no" in result.summary()


def test_nagle_trap_measures_each_variant() -> None:
    result = course.nagle_trap(rounds=2, warmup=0)
    assert list(result.medians) == list(course.partial_io_lab.NAGLE_VARIANTS)
    for name, samples in result.samples.items():
        assert len(samples) == 2 and all(s > 0 for s in samples)
        assert result.medians[name] == statistics.median(samples)
    assert [line.split("  ")[0] for line in result.summary().splitlines()] == list(result.medians)


def test_nagle_summary_calls_a_delayed_ack_slow_and_a_loopback_round_trip_fast() -> None:
    result = course.NagleResult(rounds=1, payload=100)
    result.medians = {"two writes": 0.0439, "one sendmsg": 18e-6}
    assert result.summary().splitlines() == [
        "two writes   slow: over 10 ms",
        "one sendmsg  fast: well under 10 ms",
    ]
    assert result.details() == "two writes: median 43.9 ms\none sendmsg: median 18 µs"


def test_nagle_details_print_milliseconds_from_one_millisecond_up() -> None:
    result = course.NagleResult(rounds=1, payload=100)
    result.medians = {"slow": 0.043992, "edge": 0.001, "fast": 0.000047}
    assert result.details().splitlines() == [
        "slow: median 44.0 ms",
        "edge: median 1.0 ms",
        "fast: median 47 µs",
    ]


# ------------------------------------------------------------------ 05
def test_a_large_frame_arrives_in_one_buffer_of_its_exact_size() -> None:
    result = course.big_frame(size=1024 * 1024)
    assert (result.frame_type, result.frame_len, result.intact) == ("bytearray", 1024 * 1024, True)
    assert result.bytes_copied < result.first_read <= result.scratch
    assert "received into one bytearray of exactly 1048576 bytes: yes" in result.summary()


# ------------------------------------------------------------------ 04
def test_two_sends_arrive_as_one_read() -> None:
    assert course.reads_after_sends([b"abc", b"def", b"g"]) == [b"abcdefg"]


def test_one_send_arrives_in_several_reads_through_a_small_receive_buffer() -> None:
    sent, reads = course.reads_of_one_send(size=64 * 1024, rcvbuf=4096)
    assert sent == 64 * 1024
    assert sum(reads) == sent and len(reads) > 1


def test_a_delimiter_inside_a_message_splits_it_unless_escaped() -> None:
    messages = [b"one", b"two\nlines", b"back\\slash", b"\n\\\n", b""]
    assert course.delimiter_split(messages) == [
        b"one",
        b"two",
        b"lines",
        b"back\\slash",
        b"",
        b"\\",
        b"",
        b"",
    ]
    stream = b"".join(course.delimiter_escape(m) + b"\n" for m in messages)
    assert course.delimiter_unescape(stream) == messages


def test_fixed_size_records_pad_short_messages_and_refuse_long_ones() -> None:
    records, padding = course.fixed_size_split([b"ab", b"cdef"], 4)
    assert records == [b"ab\0\0", b"cdef"] and padding == 2
    with pytest.raises(ValueError, match="does not fit"):
        course.fixed_size_split([b"too long"], 4)


def test_wire_capture_sees_exactly_the_encoded_frames() -> None:
    payloads = [b"hello", b"", b"framing!"]
    trace, got = course.wire_capture(payloads)
    assert got == payloads
    data, _ = trace.stream("client", "out")
    assert data == b"".join(encode_frame(p) for p in payloads)


# ------------------------------------------------------------------ 07
def test_echo_lab_gets_every_frame_back_intact() -> None:
    result = course.echo_lab(size=1000, clients=3, frames=4)
    assert result.intact == result.total == 12
    assert (result.client.frames_sent, result.server.frames_sent) == (12, 12)
    assert result.client.frames_received == 12
    lines = result.summary().splitlines()
    assert lines[0] == "size=1000 B clients=3 frames=4 each"
    assert lines[1] == "frames intact: 12/12"
    assert "clients=3" in result.details()
    assert len(course.plot_echo(result).axes) == 2


def test_echo_lab_fits_the_number_of_frames_to_the_byte_budget() -> None:
    assert course.echo_lab(size=1024, clients=2, budget=4096).frames == 2
    assert course.echo_lab(size=4096, clients=2, budget=1024).frames == 1


def test_echo_lab_carries_frames_larger_than_the_default_limit() -> None:
    size = 9 * 1024 * 1024  # over FramedTransport's 8 MiB default
    result = course.echo_lab(size=size, clients=1, frames=1, sndbuf=256 * 1024)
    assert result.intact == 1
    assert "short sends: yes" in result.summary()


def test_an_untraced_echo_run_still_checks_every_frame_and_feeds_the_throughput_plot() -> None:
    results = course.throughput_sweep(sizes=(64, 4096), budget=64 * 1024)
    assert [(r.size, r.frames, r.intact, len(r.trace)) for r in results] == [
        (64, 20, 20, 0),
        (4096, 16, 16, 0),
    ]
    assert all(course.echo_throughput(r) > 0 for r in results)
    assert len(course.plot_throughput(results).axes) == 2


def test_small_frames_arrive_intact_whichever_loop_reads_them() -> None:
    one_by_one, batches = course.small_frames_lab(count=5000, size=64)
    assert (one_by_one.how, batches.how) == ("take_one_by_one", "take_in_batches")
    assert one_by_one.intact == batches.intact == 5000
    # One call per frame, plus the one per READABLE that finds nothing ...
    assert one_by_one.fruitful == 5000
    assert one_by_one.calls == 5000 + one_by_one.readables
    # ... against one call per turn's worth of frames: at most FRAMES_PER_TURN
    # each (the fairness budget), and far more than one.
    assert -(-5000 // FRAMES_PER_TURN) <= batches.fruitful <= 5000 // 100
    assert batches.calls == batches.fruitful + batches.readables
    line = batches.line()
    assert "5000/5000 frames intact" in line
    assert f"{batches.fruitful} calls found frames, {5000 / batches.fruitful:.1f} each" in line
    # The notebook's answer says "never more than 512": the line checks it.
    assert (one_by_one.largest, batches.largest) == (1, FRAMES_PER_TURN)
    assert f"never more than {FRAMES_PER_TURN} in one call: yes" in line
    over = dataclasses.replace(batches, largest=FRAMES_PER_TURN + 1)
    assert f"never more than {FRAMES_PER_TURN} in one call: NO" in over.line()


def test_small_frames_lab_counts_a_frame_with_other_bytes_as_not_intact() -> None:
    from barknet.course import live_lab

    real = live_lab.take_in_batches

    def corrupting(transport, peer, handle):  # hands over each frame with its first byte changed
        return real(transport, peer, lambda frame: handle(b"!" + bytes(frame)[1:]))

    corrupting.__name__ = "corrupting"
    run = live_lab._stream(corrupting, 300, 64)
    assert run.frames == 300 and run.intact == 0


def test_a_stored_benchmark_is_summarised_without_its_numbers_and_plotted(tmp_path) -> None:
    import json

    records = [
        {"impl": impl, "metric": metric, "size_bytes": size, "value": value, "ratio_to_raw": 1.0}
        for impl, value in (("raw", 10.0), ("barknet", 20.0))
        for metric in ("pingpong_p50_us", "bulk_MBps")
        for size in (16, 1024)
    ]
    (tmp_path / "results.json").write_text(json.dumps(records))
    loaded = course.load_benchmark(str(tmp_path))
    assert loaded == records
    assert course.benchmark_summary(loaded).splitlines() == [
        "implementations: raw, barknet",
        "pingpong_p50_us: at 16 B, 1 KiB",
        "bulk_MBps: at 16 B, 1 KiB",
    ]
    fig = course.plot_benchmark(loaded)
    assert [ax.get_title() for ax in fig.axes] == [
        "latency: lower is better",
        "throughput: higher is better",
    ]


# ----------------------------------------------------------------- helpers
def test_powers_of_two_and_human_sizes() -> None:
    assert course.powers_of_two(16, 128) == [16, 32, 64, 128]
    assert [course.human_size(n) for n in (16, 2048, 16 * 1024 * 1024, 1536)] == [
        "16 B",
        "2 KiB",
        "16 MiB",
        "1.5 KiB",
    ]


def test_a_moved_slider_reruns_the_experiment_and_names_the_new_value(capsys) -> None:
    pytest.importorskip("ipywidgets")
    box = course.echo_lab_widget(size=64, clients=1)
    size_slider, clients_slider = box.children[:2]
    assert "size=64 B" in capsys.readouterr().out
    size_slider.value = 128
    assert "size=128 B" in capsys.readouterr().out
    clients_slider.value = 2
    out = capsys.readouterr().out
    assert "size=128 B" in out and "clients=2" in out

    box = course.partial_io_widget(size=1024, sndbuf=2048)
    assert "sndbuf=2048 B" in capsys.readouterr().out
    box.children[1].value = 4096
    assert "size=1024 B sndbuf=4096 B" in capsys.readouterr().out


def test_rerunning_the_benchmark_streams_progress_and_returns_its_records(tmp_path) -> None:
    json_path = tmp_path / "out.json"
    fake_bench = (
        "import json, sys; print('progress 1'); print('progress 2'); "
        "json.dump([{'impl': 'raw', 'metric': 'bulk_MBps', 'size_bytes': 64, "
        "'value': 1.0, 'ratio_to_raw': 1.0}], open(sys.argv[1], 'w'))"
    )
    lines: list[str] = []
    records = course.run_benchmark(
        [sys.executable, "-c", fake_bench, str(json_path)], str(json_path), lines.append
    )
    assert lines == ["progress 1", "progress 2"]
    assert records == [
        {"impl": "raw", "metric": "bulk_MBps", "size_bytes": 64, "value": 1.0, "ratio_to_raw": 1.0}
    ]
    with pytest.raises(RuntimeError, match="status 3"):
        course.run_benchmark([sys.executable, "-c", "raise SystemExit(3)"], str(json_path))


def test_the_benchmark_command_is_the_quick_cli_with_this_python() -> None:
    command = course.benchmark_command("/tmp/r.json", impls="raw,barknet")
    assert command[:4] == [sys.executable, "-m", "barknet", "bench"]
    assert command[4:] == ["--json", "/tmp/r.json", "--quick", "--impls", "raw,barknet"]


def test_the_benchmark_button_runs_the_quick_benchmark_and_plots_it(capsys) -> None:
    pytest.importorskip("ipywidgets")
    calls = []

    def fake_runner(command, json_path, on_line):
        calls.append(command)
        on_line("running")
        return course.load_benchmark()  # the stored run stands in for a new one

    box = course.benchmark_widget(runner=fake_runner)
    button, _ = box.children
    button.click()
    assert "--quick" in calls[0] and not button.disabled
    # Outside a kernel the Output widget captures nothing: what it would show goes
    # to stdout, the progress line and then the plot.
    shown = capsys.readouterr().out
    assert "running" in shown and "Image" in shown
    assert shown.index("running") < shown.index("Image")


def test_the_course_echo_server_stops_reading_a_peer_that_never_reads_its_echoes(ew) -> None:
    """course.common.echo_owner (the echo of check_environment and the live lab)
    obeys the water marks: a client that only sends cannot grow its queue."""
    import contextlib
    import socket

    from barknet import EventKind, FramedTransport, TcpTransport, encode_frame
    from barknet.course.common import echo_owner

    high_water = 16 * 1024
    server = FramedTransport(TcpTransport(sndbuf=4096, rcvbuf=4096), high_water=high_water)
    events: list = []
    owner = echo_owner(server)

    def on_event(event) -> None:
        events.append(event)
        owner(event)

    server.attach(ew, on_event)
    address = server.bind()
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.settimeout(5)
        sock.connect(address)
        sock.setblocking(False)
        ew.run_until(lambda: server.peers, timeout=5)
        (peer,) = server.peers
        frame = encode_frame(bytes(1000))
        wire = memoryview(frame * 2048)
        sent, worst = 0, 0
        for _ in range(4000):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(wire[sent : sent + 64 * 1024])
            ew.run_once(0)
            worst = max(worst, server.write_buffer_size(peer))
            if sent == len(wire):
                break
        assert any(e.kind is EventKind.PAUSE_WRITING for e in events)
        assert sent < len(wire) // 2
        assert worst <= high_water + len(frame)
        # Paused, it suspended reading: the loop does not wake it for the frames it
        # left waiting (no busy loop while the peer's echoes pile up).
        before = len(events)
        for _ in range(20):
            ew.run_once(0)
        assert [e.kind for e in events[before:]] == []
    finally:
        sock.close()
        server.close()
