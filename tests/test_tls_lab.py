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
