"""Soak: a thousand concurrent loopback connections, chopped up at random on
both sides, each frame checked by its digest.

The sizes are skewed (most frames small, a few up to 1 MiB) so the whole run
moves tens of megabytes, not gigabytes, and ends in seconds on two cores.
"""

from __future__ import annotations

import hashlib
import random
import resource
from collections.abc import Iterator

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOEvent, IOStatus, Peer, TcpTransport
from barknet.testing.faults import ChunkingTransport

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]

CONNECTIONS = 1000
MiB = 1024 * 1024
#: Two descriptors per connection (both ends live in this process), plus slack.
FDS_NEEDED = 2 * CONNECTIONS + 200


@pytest.fixture
def enough_fds() -> Iterator[None]:
    """Raise the soft open-files limit to what the soak needs, within the hard
    limit, and put it back afterwards; skip where the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FDS_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
            pytest.skip(
                f"the soak needs {FDS_NEEDED} open files; the hard limit "
                f"(RLIMIT_NOFILE) here is {hard} and only root can raise it"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def frame_size(rng: random.Random) -> int:
    """0 B to 1 MiB, skewed small: mean about 13 KiB."""
    r = rng.random()
    if r < 0.80:
        return rng.randint(0, 2048)
    if r < 0.98:
        return rng.randint(2048, 64 * 1024)
    if r < 0.998:
        return rng.randint(64 * 1024, 512 * 1024)
    return rng.randint(512 * 1024, MiB)


def random_caps(rng: random.Random) -> dict[str, int]:
    """Per-connection caps between 256 B and 256 KiB, log-uniform."""
    return {
        "max_read": int(2 ** rng.uniform(8, 18)),
        "max_write": int(2 ** rng.uniform(8, 18)),
    }


def digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def test_thousand_connections_lose_reorder_and_corrupt_nothing(ew: EventWatcher, enough_fds):
    rng = random.Random(20261128)
    server = FramedTransport(
        ChunkingTransport(TcpTransport(backlog=CONNECTIONS), would_block=0.05, seed=1),
        max_frame_size=MiB,
    )
    client = FramedTransport(
        ChunkingTransport(TcpTransport(), would_block=0.05, seed=2), max_frame_size=MiB
    )
    sent: dict[Peer, list[bytes]] = {}  # digests, in the order sent
    got: dict[Peer, list[bytes]] = {}
    errors: list[IOEvent] = []
    open_at_server: set[Peer] = set()
    stats = {"most_open": 0, "frames": 0, "bytes": 0, "echoed": 0}

    def on_server(event: IOEvent) -> None:
        kind, peer = event.kind, event.peer
        if kind is EventKind.ACCEPTED:
            server.inner.limit(peer, **random_caps(rng))
            open_at_server.add(peer)
            stats["most_open"] = max(stats["most_open"], len(open_at_server))
        elif kind is EventKind.READABLE:
            while (r := server.resume_read(peer)).status is IOStatus.OK:
                server.resume_write(r.data, peer)
        elif kind is EventKind.CLOSED:
            open_at_server.discard(peer)
            if event.status is IOStatus.ERROR:
                errors.append(event)

    def on_client(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := client.resume_read(event.peer)).status is IOStatus.OK:
                got[event.peer].append(digest(r.data))
                stats["echoed"] += 1
        elif event.kind is EventKind.CLOSED and event.status is IOStatus.ERROR:
            errors.append(event)

    try:
        server.attach(ew, on_server)
        client.attach(ew, on_client)
        address = server.bind()
        # The extremes, at least once each, then the skewed mix.
        sizes = [[0, MiB, 1]] + [
            [frame_size(rng) for _ in range(rng.randint(1, 5))] for _ in range(CONNECTIONS - 1)
        ]
        for frames in sizes:
            peer = client.connect(address)
            client.inner.limit(peer, **random_caps(rng))
            sent[peer], got[peer] = [], []
            for size in frames:
                payload = rng.randbytes(size)
                sent[peer].append(digest(payload))
                client.resume_write(payload, peer)
                stats["frames"] += 1
                stats["bytes"] += size
        ew.run_until(lambda: errors or stats["echoed"] >= stats["frames"], timeout=50)
        assert errors == []
        assert stats["most_open"] == CONNECTIONS  # all of them open at the same time
        lost = sum(len(sent[p]) - len(got[p]) for p in sent)
        wrong = [p for p in sent if got[p] != sent[p]]
        assert (lost, wrong) == (0, [])
        injected = server.inner.injected, client.inner.injected
        assert all(i["capped_reads"] and i["capped_writes"] and i["would_block"] for i in injected)
    finally:
        client.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)
