"""benchmarks/sharing.py: how client and server share one CPU, per round trip.

One test runs it for real, tiny, and checks that the counters the child read around
its round trips make sense; the others feed it made-up /proc text and counters to
pin what each figure is. None asserts a duration.
"""

from __future__ import annotations

import pytest

from barknet.bench import sharing

pytestmark = pytest.mark.usefixtures("no_leaks")

STATUS = """Name:\tpython
State:\tS (sleeping)
Threads:\t1
voluntary_ctxt_switches:\t120
nonvoluntary_ctxt_switches:\t7
"""


def test_counters_come_from_the_first_schedstat_field_and_the_two_switch_lines() -> None:
    assert sharing.cpu_and_switches("5000 999 3\n", STATUS) == {
        "cpu_ns": 5000,  # the time on the CPU, not the time spent waiting for it
        "waited": 120,  # voluntary: it slept
        "preempted": 7,  # involuntary: switched out while runnable
    }


def _counters(cpu: tuple[int, int], switches: tuple[int, int, int, int], wall: int) -> dict:
    return {
        "client_cpu_ns": cpu[0],
        "server_cpu_ns": cpu[1],
        "client_waited": switches[0],
        "client_preempted": switches[1],
        "server_waited": switches[2],
        "server_preempted": switches[3],
        "wall_ns": wall,
    }


def test_each_figure_is_what_its_counter_moved_by_per_round_trip() -> None:
    before = _counters((1_000_000, 2_000_000), (10, 20, 30, 40), 5_000_000)
    # 100 round trips: the client used 1.2 ms more, the server 0.8 ms, in 2.5 ms of wall time.
    after = _counters((2_200_000, 2_800_000), (30, 100, 110, 60), 7_500_000)
    s = sharing.per_round_trip("barknet", 21.0, 100, before, after)
    assert s.p50_us == 21.0
    assert s.client_cpu_us == pytest.approx(12.0)
    assert s.server_cpu_us == pytest.approx(8.0)
    assert s.cpu_us == pytest.approx(20.0)
    assert s.busy == pytest.approx(0.8)  # 2.0 ms of CPU in 2.5 ms
    assert (s.client_waited, s.client_preempted) == (pytest.approx(0.2), pytest.approx(0.8))
    assert (s.server_waited, s.server_preempted) == (pytest.approx(0.8), pytest.approx(0.2))
    line = s.line()
    assert line.startswith("barknet ") and "p50  21.0 µs" in line and "busy 80%" in line
    assert "client waited 0.20 preempted 0.80, server waited 0.80 preempted 0.20" in line


def test_a_tiny_real_run_reads_both_processes_around_its_round_trips() -> None:
    s = sharing.measure_one("raw", 300)
    assert s.impl == "raw" and s.p50_us > 0
    # Both processes ran during the round trips, and took turns: each round trip
    # puts each of them to sleep or switches it out at least about once.
    assert s.client_cpu_us > 0 and s.server_cpu_us > 0
    # Pinned to one CPU before the first reading: at most that CPU's time (a
    # reading taken before the pinning once gave 1.77, the other CPU's time too).
    assert 0 < s.busy <= 1.1
    assert s.client_waited + s.client_preempted > 0.5
    assert s.server_waited + s.server_preempted > 0.5


def test_main_prints_one_line_per_repetition_and_implementation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--impls", "raw,barknet", "--repetitions", "2", "--round-trips", "200"]
    assert sharing.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("16-byte ping-pong, server and client on CPU ")
    assert out[1].startswith("machine: ")
    assert [line.split()[0] for line in out[2:]] == ["raw", "barknet", "barknet", "raw"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--impls", "raw,nope"],
        ["--impls", "raw,raw"],
        ["--impls", ","],
        ["--repetitions", "0"],
        ["--round-trips", "0"],
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        sharing.main(argv)
    assert refused.value.code == 2
    assert "ping-pong" not in capsys.readouterr().out
