"""benchmarks/pairs.py: every server against every client, in a tiny configuration.

What is checked is the table's shape and that every pair really ran (each server
answered each client's frames), never a duration.
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_every_server_answers_every_client_and_the_table_has_one_cell_per_pair(
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
    assert out[0].startswith("16-byte round trip p50")
    assert out[1].startswith("machine: ")
    first = _matrix(out[3:6], sides)
    assert out[6] == f"servers on {other}"
    second = _matrix(out[7:10], sides)
    assert len(out) == 10
    for table in (first, second):
        assert set(table) == {(s, c) for s in sides for c in sides}
        assert all(p50 > 0 for p50 in table.values())
    # Only the second table's servers, one per pair, ran on the other interpreter.
    started = marker.read_text().splitlines()
    assert [line.split()[3] for line in started] == ["raw", "raw", "barknet", "barknet"]


def test_an_unknown_implementation_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        pairs.main(["--sides", "raw,nope"])
    assert "unknown implementations: nope" in capsys.readouterr().err


def test_format_matrix_puts_servers_in_rows_and_clients_in_columns() -> None:
    text = pairs.format_matrix(
        ["a", "bb"], {("a", "a"): 1, ("a", "bb"): 2, ("bb", "a"): 3, ("bb", "bb"): 4}
    )
    assert [line.split() for line in text.splitlines()] == [
        ["server", "\\", "client", "a", "bb"],
        ["a", "1.0", "2.0"],
        ["bb", "3.0", "4.0"],
    ]
