"""benchmarks/pairs.py: every client against every server.

One test runs it for real in a tiny configuration and checks the table's shape and
that each server ran where it was told; the others replace the processes with
fakes to pin what is measured (size, count, placement, medians, interleaving) and
how the table reads. None asserts a duration.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from barknet.bench import pairs

pytestmark = pytest.mark.usefixtures("no_leaks")


def _matrix(lines: list[str], sides: list[str]) -> dict[tuple[str, str], float]:
    header, *rows = lines
    assert header.split()[-len(sides) :] == sides
    assert [row.split()[0] for row in rows] == sides
    return {
        (row.split()[0], client): float(cell)
        for row in rows
        for client, cell in zip(sides, row.split()[1:], strict=True)
    }


def test_every_server_answers_every_client_on_each_interpreter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sides = ["raw", "barknet"]
    # --server-python: a stand-in for another CPython that notes each start, and
    # that can find barknet through PYTHONPATH alone (no site-packages: -S; not
    # the repository as working directory: cd /).
    marker = tmp_path / "started"
    other = tmp_path / "other-python"
    other.write_text(f'#!/bin/sh\necho "$@" >> {marker}\ncd /\nexec {sys.executable} -S "$@"\n')
    other.chmod(0o755)
    argv = ["--round-trips", "40", "--repetitions", "1", "--sides", ",".join(sides)]
    assert pairs.main([*argv, "--server-python", str(other)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("16-byte round trip p50") and "median of 1 x 40" in out[0]
    assert out[1].startswith("machine: ")
    assert out[2].startswith(f"servers on {sys.executable} (Python ")
    first = _matrix(out[3:6], sides)
    assert out[6].startswith("more than its sides: raw +0.0, barknet ")
    version = ".".join(map(str, sys.version_info[:3]))
    assert out[7] == f"servers on {other} (Python {version})"
    second = _matrix(out[8:11], sides)
    assert out[11].startswith("more than its sides: raw +0.0, barknet ")
    assert len(out) == 12
    for table in (first, second):
        assert set(table) == {(s, c) for s in sides for c in sides}
        assert all(p50 > 0 for p50 in table.values())
    # The version was asked once, then only the second table's servers, one per
    # pair, ran on the other interpreter.
    started = marker.read_text().splitlines()
    assert started[0].startswith("-c ")
    assert [line.split()[3] for line in started[1:]] == ["raw", "raw", "barknet", "barknet"]


def test_the_bare_stack_is_a_side_for_round_trips_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from barknet.bench.barknet_side import _barknet_client

    # Not among the default sides, but --sides takes it, and it pairs with any other.
    assert "barknet-bare" not in pairs.SIDES
    sides = ["raw", "barknet-bare"]
    argv = ["--round-trips", "30", "--repetitions", "1", "--sides", ",".join(sides)]
    assert pairs.main(argv) == 0
    table = _matrix(capsys.readouterr().out.splitlines()[3:6], sides)
    assert set(table) == {(s, c) for s in sides for c in sides}
    assert all(p50 > 0 for p50 in table.values())
    # Its writes must leave whole, so it refuses bulk transfers before connecting,
    # and its client is connected before it returns (no write can wait for that).
    with pytest.raises(ValueError, match="only round trips"):
        _barknet_client(9, [["bulk", 64, 10, 1]], lambda kind: None, bare=True)
    from barknet import EventWatcher
    from barknet.bench.barknet_side import _BarknetClient

    with socket.create_server(("127.0.0.1", 0)) as listener, EventWatcher() as ew:
        client = _BarknetClient(ew, listener.getsockname()[1], 16, bare=True)
        assert client.connected
        client.close()


class _FakeServer:
    """Stands in for a server process: records where it was asked to run."""

    made: ClassVar[list[_FakeServer]] = []

    def __init__(self, impl: str, cpus: list[int], python: str | None = None) -> None:
        self.impl, self.cpus, self.python = impl, cpus, python
        self.port, self.closed = 4242, False
        self.proc = type("Proc", (), {"pid": 777})()
        _FakeServer.made.append(self)

    def close(self) -> None:
        self.closed = True


def test_a_pair_is_sixteen_byte_round_trips_pinned_to_one_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs: list[tuple[str, dict[str, Any]]] = []

    def run_client(impl: str, spec: dict[str, Any]) -> list[Any]:
        specs.append((impl, spec))
        return [[5000, 1000, 3000, 2000, 4000]]  # ns

    _FakeServer.made = []
    monkeypatch.setattr(pairs, "_Server", _FakeServer)
    monkeypatch.setattr(pairs, "_run_client", run_client)
    monkeypatch.setattr(pairs, "_cpu", lambda: 3)
    assert pairs.round_trip_p50("barknet", "raw", 500, "/some/python") == 3.0  # µs
    (server,) = _FakeServer.made
    assert (server.impl, server.cpus, server.python, server.closed) == (
        "barknet",
        [3],
        "/some/python",
        True,
    )
    ((impl, spec),) = specs
    assert impl == "raw"
    assert spec["port"] == 4242 and spec["server_pid"] == 777
    assert spec["tasks"] == [["pingpong", 16, 500, 50]]
    assert spec["placement"]["pingpong"] == [[3], [3]]


def test_a_failing_client_leaves_no_server_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_client(impl: str, spec: dict[str, Any]) -> list[Any]:
        raise RuntimeError("the client failed")

    _FakeServer.made = []
    monkeypatch.setattr(pairs, "_Server", _FakeServer)
    monkeypatch.setattr(pairs, "_run_client", run_client)
    with pytest.raises(RuntimeError, match="the client failed"):
        pairs.round_trip_p50("raw", "raw", 10)
    assert [s.closed for s in _FakeServer.made] == [True]


def test_tables_are_medians_of_repetitions_interleaved_across_interpreters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str, str | None]] = []

    def fake(server: str, client: str, round_trips: int, python: str | None = None) -> float:
        calls.append((server, client, python))
        repetition = sum(1 for c in calls if c == (server, client, python))
        # repetitions 1, 2, 3 give 10, 30, 20 (+100 on the other interpreter):
        # the median is the middle one, not the first, last, mean or largest.
        return [10.0, 30.0, 20.0][repetition - 1] + (100 if python else 0)

    monkeypatch.setattr(pairs, "round_trip_p50", fake)
    here, other = pairs.measure(["raw", "barknet"], 10, 3, [None, "/py"])
    assert here == dict.fromkeys(here, 20.0) and len(here) == 4
    assert other == dict.fromkeys(other, 120.0) and len(other) == 4
    # Each repetition runs every pair here, then every pair there.
    one = [(s, c) for s in ("raw", "barknet") for c in ("raw", "barknet")]
    assert calls == 3 * ([(s, c, None) for s, c in one] + [(s, c, "/py") for s, c in one])


def test_the_table_has_servers_in_rows_clients_in_columns_and_what_a_pair_adds() -> None:
    p50 = {("raw", "raw"): 10, ("raw", "bk"): 15, ("bk", "raw"): 13, ("bk", "bk"): 30}
    text = pairs.format_matrix(["raw", "bk"], p50)
    assert text.splitlines() == [
        "server \\ client    raw   bk",
        "raw               10.0 15.0",
        "bk                13.0 30.0",
        # bk's sides predict 13 + 15 - 10 = 18; its pair takes 30.
        "more than its sides: raw +0.0, bk +12.0",
    ]
    assert pairs.excess(p50, "bk") == 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sides", "raw,nope"], "unknown implementations: nope"),
        (["--sides", ","], "at least one implementation"),
        (["--sides", "raw,raw"], "each named once"),
        (["--repetitions", "0"], "must be at least 1"),
        (["--round-trips", "-5"], "must be at least 1"),
        (["--server-python", "/nonexistent/python"], "does not run"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def must_not_run(*_: Any) -> None:
        raise AssertionError("measured despite bad arguments")

    monkeypatch.setattr(pairs, "measure", must_not_run)
    with pytest.raises(SystemExit):
        pairs.main(argv)
    assert message in capsys.readouterr().err
