"""The promises of a transport that queues: water marks, ``DRAINED``, a bounded close.

A framing layer keeps what the socket did not take, so it must tell its owner
when to stop writing and when to start again (``PAUSE_WRITING`` past
``high_water``, ``RESUME_WRITING`` back at ``low_water``, alternating) and
when everything queued has gone (``DRAINED``), and its close must not wait for
ever on a queue the peer never takes (``linger_timeout``). Neither a byte
stream, which queues nothing, nor the exercise's transport, which has no water
marks, makes these promises, so the checks here sit at their own level, ``"queueing"``:
``run_checks(make, levels=("queueing",))`` runs them, and nothing runs them
unasked.
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import LingerTimeoutError
from ..events import EventKind, IOEvent, IOStatus
from .checks import Check, Maker
from .contract import _ContractLab, _expect_bytes, _expect_only_closed_after

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

        def paused() -> bool:
            return any(kind == "PAUSE_WRITING" for kind, _ in flow)

        # Bounded: four times high_water (and some), far past where it must pause.
        for _ in range(4 * high // len(message) + 64):
            if paused():
                break
            client.send(peer, message)
            sent += message
        if not paused():
            raise AssertionError(
                f"no PAUSE_WRITING while {transport.write_buffer_size(peer):,} bytes waited "
                f"for a peer that read nothing (high_water={high:,}): the flow events were "
                f"{flow[:3]}"
            )
        (server_peer,) = server.opened
        server.take = True

        def read_all() -> bool:
            server.read(server_peer)
            return len(server.received(server_peer)) >= len(sent)

        lab.run_until(read_all, "the peer to read everything sent")
        lab.run_until(lambda: flow and flow[-1][0] == "DRAINED", "DRAINED once all was sent")
        _expect_bytes(server.received(server_peer), bytes(sent), "the peer that read late")
        marks = [(kind, queued) for kind, queued in flow if kind != "DRAINED"]
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


def check_close_gives_up_on_a_queue_never_taken(make: Maker) -> None:
    """(A transport that queues, over TCP with ``linger_timeout=0.3``.) The owner
    queues 2 MiB for a peer that reads nothing, then closes it: no DRAINED (nor
    any event but CLOSED) comes after the close, and CLOSED(ERROR) with a
    LingerTimeoutError comes once the linger timeout ran out, not never."""
    small = {"sndbuf": 4096, "rcvbuf": 4096}
    with _ContractLab(make, client_kw={**small, "linger_timeout": 0.3}, server_kw=small) as lab:
        server = lab.server
        server.take = False  # the queue is never taken
        client, peer = lab.client()
        lab.run_until(lambda: peer in client.opened and server.opened, "the connection")
        for _ in range(128):
            client.send(peer, bytes(16 * 1024))
        for _ in range(5):
            lab.ew.run_once(0.01)
        closed_at = len(client.events)
        client.transport.close(peer)
        lab.run_until(lambda: peer in client.closed, "CLOSED after the linger timeout")
        _expect_only_closed_after(client, peer, closed_at)
        event = client.closed[peer]
        if event.status is not IOStatus.ERROR or not isinstance(event.error, LingerTimeoutError):
            raise AssertionError(
                "a peer that never took the queue should end with CLOSED(ERROR, "
                f"LingerTimeoutError) once linger_timeout ran out, got {event}"
            )


#: The checks for a transport that queues (level ``"queueing"``).
QUEUEING_CHECKS: list[Check] = [
    Check("water marks and DRAINED", check_water_marks_and_drained, "queueing"),
    Check(
        "close gives up on a queue the peer never takes",
        check_close_gives_up_on_a_queue_never_taken,
        "queueing",
    ),
]
