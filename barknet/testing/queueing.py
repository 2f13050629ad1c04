"""The promises of a transport that queues: water marks and ``DRAINED``.

A framing layer keeps what the socket did not take, so it must tell its owner
when to stop writing and when to start again (``PAUSE_WRITING`` past
``high_water``, ``RESUME_WRITING`` back at ``low_water``, alternating), and
when everything queued has gone (``DRAINED``). Neither a byte stream, which
queues nothing, nor the exercise's transport, which has no water marks, makes
these promises, so the check here sits at its own level, ``"queueing"``:
``run_checks(make, levels=("queueing",))`` runs it, and nothing runs it
unasked.
"""

from __future__ import annotations

import random
from typing import Any

from ..events import EventKind, IOEvent
from .checks import Check, Maker
from .contract import _ContractLab, _expect_bytes

__all__ = ["QUEUEING_CHECKS"]


def check_water_marks_and_drained(make: Maker) -> None:
    """(A transport that queues: ``high_water``, ``low_water``, ``write_buffer_size``.)
    A sender writes 16 KiB messages to a peer that reads nothing, until
    PAUSE_WRITING; then the peer reads everything. PAUSE_WRITING comes with more
    than high_water queued, RESUME_WRITING with at most low_water, the two
    alternate starting with PAUSE, DRAINED comes only with nothing queued (and
    does come), and every byte arrives in order."""
    with _ContractLab(make, client_kw={"sndbuf": 4096}, server_kw={"rcvbuf": 4096}) as lab:
        server = lab.server
        server.take = False  # nothing read: the queue must fill
        client, peer = lab.client()
        transport: Any = client.transport
        for name in ("high_water", "low_water", "write_buffer_size"):
            if not hasattr(transport, name):
                raise AssertionError(f"this check is for a transport that queues: no {name}")
        high, low = transport.high_water, transport.low_water
        flow: list[tuple[str, int]] = []  # (event, bytes queued when it came)

        def on_client(event: IOEvent) -> None:
            if event.kind in (
                EventKind.PAUSE_WRITING,
                EventKind.RESUME_WRITING,
                EventKind.DRAINED,
            ):
                flow.append((event.kind.name, transport.write_buffer_size(peer)))

        client.on_event = on_client
        lab.run_until(lambda: peer in client.opened and server.opened, "the connection")
        message, sent = random.Random(8).randbytes(16 * 1024), bytearray()
        for _ in range(1000):  # bounded: a transport that never pauses queues 16 MiB
            if any(kind == "PAUSE_WRITING" for kind, _ in flow):
                break
            client.send(peer, message)
            sent += message
        (server_peer,) = server.opened
        server.take = True

        def read_all() -> bool:
            server.read(server_peer)
            return len(server.received(server_peer)) >= len(sent)

        lab.run_until(read_all, "the peer to read everything sent")
        lab.run_until(lambda: flow and flow[-1][0] == "DRAINED", "DRAINED once all was sent")
        _expect_bytes(server.received(server_peer), bytes(sent), "the peer that read late")
        marks = [(kind, queued) for kind, queued in flow if kind != "DRAINED"]
        if not marks or marks[0][0] != "PAUSE_WRITING":
            raise AssertionError(
                f"no PAUSE_WRITING while {len(sent):,} bytes waited for a peer that read "
                f"nothing (high_water={high:,}): the first flow events were {flow[:3]}"
            )
        for i, (kind, queued) in enumerate(marks):
            want = ("PAUSE_WRITING", "RESUME_WRITING")[i % 2]
            if kind != want:
                raise AssertionError(f"{want} expected as flow event {i}, got {marks[:6]}")
            if kind == "PAUSE_WRITING" and queued <= high:
                raise AssertionError(
                    f"PAUSE_WRITING came with {queued:,} bytes queued, not past "
                    f"high_water ({high:,})"
                )
            if kind == "RESUME_WRITING" and queued > low:
                raise AssertionError(
                    f"RESUME_WRITING came with {queued:,} bytes still queued, above "
                    f"low_water ({low:,})"
                )
        early = [queued for kind, queued in flow if kind == "DRAINED" and queued]
        if early:
            raise AssertionError(
                f"DRAINED came with {early[0]:,} bytes still queued: it means everything "
                "queued was written"
            )


#: The checks for a transport that queues (level ``"queueing"``).
QUEUEING_CHECKS: list[Check] = [
    Check("water marks and DRAINED", check_water_marks_and_drained, "queueing"),
]
