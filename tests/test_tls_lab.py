"""The TLS experiments of notebook 09: summaries that repeat exactly and say true things."""

from __future__ import annotations

import re

import pytest

from barknet.course import tls_lab

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_handshake_timeline_is_one_round_trip_then_the_echo() -> None:
    text = tls_lab.handshake_timeline()
    assert text == tls_lab.handshake_timeline()  # the same bytes on every run
    lines = text.splitlines()
    assert lines[0].startswith("TLSv1.3 with ")
    steps = [re.match(r"\s*\d+\. (\w+) +wrote +(\d+) bytes: (.*)", line) for line in lines[1:-1]]
    assert all(steps), lines
    sides = [m.group(1) for m in steps]  # type: ignore[union-attr]
    assert sides[:3] == ["client", "server", "client"]  # hello, flight, Finished
    assert steps[0].group(3) == "handshake"  # type: ignore[union-attr]  # the ClientHello
    assert "change_cipher_spec" in steps[1].group(3)  # type: ignore[union-attr]
    # The echo of the 5-byte frame: 4 + 5 bytes, +1 content type, +16 tag, +5 header.
    assert steps[-1].group(1) == "server" and steps[-1].group(2) == "31"  # type: ignore[union-attr]
    client_total = sum(int(m.group(2)) for m in steps if m.group(1) == "client")  # type: ignore[union-attr]
    assert f"client wrote {client_total} bytes" in lines[-1]


def test_frames_before_and_after_tls_show_prefixes_then_opaque_records() -> None:
    text = tls_lab.frames_before_and_after((b"hello", b"barknet!"))
    assert text == tls_lab.frames_before_and_after((b"hello", b"barknet!"))
    assert "00 00 00 05 | 68 65 6c 6c 6f" in text
    # One record per frame, sized frame + 17: 9 + 17 = 26 (0x1a), 12 + 17 = 29 (0x1d).
    assert "17 03 03 00 1a | .. 26 bytes: application_data" in text
    assert "17 03 03 00 1d | .. 29 bytes: application_data" in text
    assert "68 65 6c 6c 6f" not in text.split("after TLS")[1]  # no plaintext on the wire


def test_chunked_records_arrive_in_pieces_and_leave_whole() -> None:
    text = tls_lab.chunked_records(max_read=7)
    assert text == tls_lab.chunked_records(max_read=7)
    assert "17 03 03 00 2a | .. 42 bytes" in text  # 4 + 21 + 17 = 42
    assert "in 7 pieces: 7 + 7 + 7 + 7 + 7 + 7 + 5 = 47 bytes" in text
    assert "the owner got one frame of 21 bytes: b'one frame, many reads'" in text


@pytest.mark.parametrize(
    ("case", "client_says", "server_says"),
    [
        ("wrong hostname", "Hostname mismatch", "SSLV3_ALERT_BAD_CERTIFICATE"),
        ("untrusted", "self-signed certificate", "TLSV1_ALERT_UNKNOWN_CA"),
    ],
)
def test_verification_failure_reaches_both_owners_as_one_closed(
    case: str, client_says: str, server_says: str
) -> None:
    text = tls_lab.verification_failure(case)
    assert text == tls_lab.verification_failure(case)
    assert "client owner saw: CLOSED\n    TlsError, reason CERTIFICATE_VERIFY_FAILED" in text
    assert client_says in text
    assert f"server owner saw: CLOSED\n    TlsError, reason {server_says}" in text
    assert "Peer#" not in text and "127.0.0.1:" not in text


def test_records_in_pieces_shows_which_reads_brought_each_record() -> None:
    text = tls_lab.records_in_pieces(size=40_000, max_read=4096)
    assert text == tls_lab.records_in_pieces(size=40_000, max_read=4096)  # for nbval
    lines = text.splitlines()
    # The 4-byte prefix (its own buffer from FramedTransport) in a record of its own,
    # then the payload in records of at most 16 KiB of plaintext (+ 17 bytes each).
    assert lines[0] == "one 40,000-byte frame left the client as 4 records (40,092 bytes):"
    assert "17 03 03 00 15 | .. 21 bytes" in lines[1]
    assert lines[2] == "  2 × 17 03 03 40 11 | .. 16401 bytes: application_data"
    assert "in 10 reads:" in text  # 40,092 bytes, 4 KiB at a time
    assert "record 2 (16,406 bytes): reads 1-5" in text
    assert "record 4 (7,254 bytes): reads 9-10" in text
    assert lines[-1] == "the owner got one frame of 40,000 bytes, intact"


@pytest.mark.parametrize(("size", "max_read"), [(16, 256), (65536, 65536), (2048, 1024)])
def test_records_in_pieces_reads_add_up_to_the_records(size: int, max_read: int) -> None:
    text = tls_lab.records_in_pieces(size=size, max_read=max_read)
    total = int(re.search(r"\(([\d,]+) bytes\):", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    reads = int(re.search(r"in (\d+) reads?:", text).group(1))  # type: ignore[union-attr]
    assert reads == -(-total // max_read)  # every read but the last one full
    spans = re.findall(r"record \d+ \(([\d,]+) bytes\)", text)
    assert sum(int(s.replace(",", "")) for s in spans) == total
    assert text.endswith(f"one frame of {size:,} bytes, intact")


@pytest.mark.parametrize("size", [2**k for k in range(4, 17)])  # every size on the slider
def test_record_count_follows_the_rule_notebook_09_gives_at_every_slider_size(size: int) -> None:
    # Notebook 09's answer: up to 2 KiB, one record (prefix glued to the payload);
    # from 4 KiB on, the prefix alone, then one record per 16 KiB of payload. A TLS
    # layer that cut the payload at its high-water mark instead of at whole records
    # sent a 64 KiB frame as 6 records (the last 25 bytes in one of their own).
    text = tls_lab.records_in_pieces(size=size, max_read=65536)
    records = int(re.search(r"as (\d+) records?", text).group(1))  # type: ignore[union-attr]
    expected = 1 if size <= 2048 else 1 + -(-size // 16384)
    assert records == expected, text


def test_records_widget_reruns_the_experiment_when_a_slider_moves(capsys) -> None:
    pytest.importorskip("ipywidgets")
    box = tls_lab.records_widget(size=1024, max_read=256)
    size, max_read = box.children[:2]
    assert "size=1024 B, max_read=256 B" in capsys.readouterr().out
    size.value = 4096
    out = capsys.readouterr().out
    assert "size=4096 B, max_read=256 B" in out and "one 4,096-byte frame" in out
    max_read.value = 1024
    assert "in 5 reads:" in capsys.readouterr().out  # 4,096 + 4 + 22 bytes, 1 KiB a time
