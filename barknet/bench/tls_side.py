"""The TLS rows of the benchmark: barknet over TLS beside an asyncio Protocol with ``ssl=``.

Theory of operation
-------------------
Same wire format, same server commands (:class:`barknet.bench.Session`), same
fairness rules as :mod:`barknet.bench` (two processes, pinned, allocator
warmed, implementations interleaved, medians over repetitions), with TLS in
both implementations:

* ``barknet-tls``: ``FramedTransport(TlsTransport(TcpTransport()))``;
* ``asyncio-tls``: the benchmark's careful asyncio ``Protocol``, with
  ``loop.create_server(..., ssl=)`` and ``loop.create_connection(..., ssl=)``
  (asyncio's own ``SSLProtocol`` over ``MemoryBIO``: the same OpenSSL, the
  same design, written by someone else).

Two figures: the 16 B ping-pong round trip (p50, µs) and one-way bulk of
16 MiB frames (MB/s). Each comes with the ratio barknet / asyncio from the same
run: above 1 is slower for latency, faster for throughput.

The certificate is a throwaway self-signed one for ``127.0.0.1``, made with
the ``openssl`` command into a temporary directory (the standard library
cannot make certificates); the client trusts exactly that certificate and
checks the address, so verification costs what it costs in real use.

Run it with ``python -m barknet bench --tls`` (after the other rows) or alone
with ``python -m barknet.bench.tls_side [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .asyncio_side import _asyncio_client as _asyncio_plain_or_tls
from .asyncio_side import _make_protocol_class
from .barknet_side import _BarknetClient
from .common import (
    CHILD_TIMEOUT,
    COALESCE,
    FULL,
    HOST,
    MAX_FRAME,
    QUICK,
    Plan,
    Session,
    _pin,
    _warm_allocator,
)
from .runner import _percentile, _size_name, machine_info, placement

__all__ = ["TLS_IMPLS", "format_tls_table", "main", "make_certificate", "run_tls"]

TLS_IMPLS = ("barknet-tls", "asyncio-tls")


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1 in ``directory``, by ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS benchmark needs the openssl command (apt-get install openssl)")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [
            *(
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _server_context(certdir: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.path.join(certdir, "cert.pem"), os.path.join(certdir, "key.pem"))
    return context


def _client_context(certdir: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.path.join(certdir, "cert.pem"))


# ---------------------------------------------------------------- the two sides
def _serve(impl: str, certdir: str, ready: Callable[[int], None]) -> None:
    context = _server_context(certdir)
    if impl == "barknet-tls":
        from .. import EventKind, EventWatcher, FramedTransport, TcpTransport
        from ..tls import TlsTransport

        with EventWatcher() as ew:
            server = FramedTransport(  # (one echo per turn: no coalescing)
                TlsTransport(TcpTransport(HOST, 0), context), max_frame_size=MAX_FRAME
            )
            sessions: dict[Any, Session] = {}
            # Looked up once, as in the plain server (an enum hook call each on 3.10/3.11).
            readable = EventKind.READABLE

            def on_event(ev: Any) -> None:
                peer = ev.peer
                if ev.kind is readable:
                    session = sessions[peer]
                    for data in server.read_frames(peer):  # as the plain server does
                        if not session.frame(data) and type(data) is bytearray:
                            server.recycle(data, peer)
                elif ev.kind is EventKind.ACCEPTED:
                    sessions[peer] = Session(lambda p: server.resume_write(p, peer))
                elif ev.kind is EventKind.CLOSED:
                    sessions.pop(peer, None)

            server.attach(ew, on_event)
            ready(server.bind()[1])
            ew.run()
        return
    import asyncio

    loop = asyncio.new_event_loop()
    protocol_class = _make_protocol_class()

    def factory() -> Any:
        proto = protocol_class()
        proto.on_frame = Session(proto.send).frame
        return proto

    listener = loop.run_until_complete(loop.create_server(factory, HOST, 0, ssl=context))
    ready(listener.sockets[0].getsockname()[1])
    loop.run_forever()


class _BarknetTlsClient(_BarknetClient):
    """The benchmark's barknet client, with TLS under the framing layer."""

    def __init__(
        self, ew: Any, port: int, size: int, context: ssl.SSLContext, coalesce: bool
    ) -> None:
        self.context = context
        super().__init__(ew, port, size, coalesce=coalesce)

    def make_transport(self, port: int) -> Any:
        from .. import FramedTransport, TcpTransport
        from ..tls import TlsTransport

        return FramedTransport(
            TlsTransport(TcpTransport(HOST, port), self.context),
            max_frame_size=MAX_FRAME,
            coalesce=self.coalesce,
        )


def _barknet_client(port: int, certdir: str, tasks: list[list[Any]], place: Any) -> list[Any]:
    from .. import EventWatcher

    context = _client_context(certdir)
    results: list[Any] = []
    with EventWatcher() as ew:
        for kind, size, count, warm in tasks:
            place(kind)
            client = _BarknetTlsClient(ew, port, size, context, COALESCE and kind == "bulk")
            try:
                if kind == "pingpong":
                    results.append(client.pingpong(count, warm))
                else:
                    client.bulk(warm)
                    results.append(client.bulk(count))
            finally:
                client.close()
    return results


def _asyncio_client(port: int, certdir: str, tasks: list[list[Any]], place: Any) -> list[Any]:
    """The careful asyncio Protocol of the main benchmark, with ``ssl=``."""
    return _asyncio_plain_or_tls(
        "asyncio-protocol", port, tasks, place, ssl=_client_context(certdir)
    )


def _child_main(argv: Sequence[str]) -> int:
    """``server IMPL CERTDIR CPUS`` or ``client IMPL JSON``."""
    role, impl = argv[0], argv[1]
    _warm_allocator()
    if role == "server":
        _pin(0, [int(c) for c in argv[3].split(",") if c])
        _serve(impl, argv[2], lambda port: print(port, flush=True))
        return 0
    spec = json.loads(argv[2])

    def place(kind: str) -> None:
        client_cpus, server_cpus = spec["placement"][kind]
        _pin(0, client_cpus)
        _pin(spec["server_pid"], server_cpus)

    client = _barknet_client if impl == "barknet-tls" else _asyncio_client
    results = client(spec["port"], spec["certdir"], spec["tasks"], place)
    with open(spec["result_path"], "w") as f:
        json.dump(results, f)
    return 0


def _one_session(impl: str, certdir: str, tasks: list[list[Any]], where: Any) -> list[Any]:
    module = [sys.executable, "-m", "barknet.bench.tls_side"]
    cpus = ",".join(map(str, where["pingpong"][1]))
    server = subprocess.Popen(
        [*module, "server", impl, certdir, cpus], stdout=subprocess.PIPE, text=True
    )
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            raise RuntimeError(f"the {impl} server did not start")
        result_path = os.path.join(certdir, f"{impl}.json")
        spec = {
            "port": int(line),
            "server_pid": server.pid,
            "tasks": tasks,
            "placement": where,
            "certdir": certdir,
            "result_path": result_path,
        }
        proc = subprocess.run(
            [*module, "client", impl, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the {impl} client failed:\n{proc.stderr}")
        with open(result_path) as f:
            return json.load(f)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()  # type: ignore[union-attr]


# ------------------------------------------------------------------ the run
def tls_tasks(plan: Plan) -> list[list[Any]]:
    """The 16 B ping-pong and 16 MiB bulk of ``plan`` (or its smallest and largest)."""
    ping = min(plan.pingpong)
    bulk = max(plan.bulk)
    return [["pingpong", *ping], ["bulk", *bulk]]


def run_tls(plan: Plan, *, out: TextIO | None = None) -> list[dict[str, Any]]:
    """Run both TLS implementations, interleaved; one record per figure and impl,
    each with ``ratio_to_asyncio`` from the same run."""
    out = sys.stdout if out is None else out
    where, sentence = placement()
    tasks = tls_tasks(plan)
    values: dict[tuple[str, str, int], list[float]] = {}

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"barknet bench, TLS rows ({plan.name}): {', '.join(TLS_IMPLS)}; {plan.reps} reps")
    # Where and when, as the other stored runs say it: a stored TLS run is quoted
    # beside the main table, and must be seen to come from the same machine.
    info = machine_info(sentence)
    say(
        f"  machine: {info['cpus']} CPUs, {info['cpu_model']}, Python {info['python']}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    say(f"  placement: {sentence}; TLS: {ssl.OPENSSL_VERSION}, self-signed P-256 certificate")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="barknet-bench-tls-") as certdir:
        make_certificate(certdir)
        for rep in range(plan.reps):
            order = TLS_IMPLS[rep % 2 :] + TLS_IMPLS[: rep % 2]
            for impl in order:
                results = _one_session(impl, certdir, tasks, where)
                (_, ping_size, *_), (_, bulk_size, bulk_count, _) = tasks
                p50 = _percentile(results[0], 0.50)
                rate = bulk_count * bulk_size / (results[1] / 1e9) / 1e6
                values.setdefault((impl, "pingpong_p50_us", ping_size), []).append(p50)
                values.setdefault((impl, "bulk_MBps", bulk_size), []).append(rate)
                say(
                    f"  [{rep + 1}/{plan.reps}] {impl:<12} {_size_name(ping_size)} p50 "
                    f"{p50:.1f} µs, {_size_name(bulk_size)} {rate:.0f} MB/s"
                )
    say(f"  done in {time.monotonic() - started:.0f} s")
    medians = {key: statistics.median(v) for key, v in values.items()}
    records = []
    for (impl, metric, size), value in medians.items():
        baseline = medians[("asyncio-tls", metric, size)]
        records.append(
            {
                "impl": impl,
                "metric": metric,
                "size_bytes": size,
                "value": value,
                "unit": "µs" if metric == "pingpong_p50_us" else "MB/s",
                "ratio_to_asyncio": value / baseline,
                "reps": values[(impl, metric, size)],
                "plan": plan.name,
            }
        )
    return records


def format_tls_table(records: list[dict[str, Any]]) -> str:
    """One row per figure: barknet-tls, asyncio-tls, and barknet / asyncio."""
    rows: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        rows.setdefault((r["metric"], r["size_bytes"]), {})[r["impl"]] = r
    lines = ["TLS figure (unit)".ljust(34) + "barknet-tls".rjust(14) + "asyncio-tls".rjust(14)]
    for (metric, size), cells in rows.items():
        ours, theirs = cells["barknet-tls"], cells["asyncio-tls"]
        what = "round trip p50" if metric == "pingpong_p50_us" else "bulk"
        label = f"{what} {_size_name(size)} ({ours['unit']})"
        lines.append(
            label.ljust(34)
            + f"{ours['value']:.1f} ×{ours['ratio_to_asyncio']:.2f}".rjust(14)
            + f"{theirs['value']:.1f}".rjust(14)
        )
    lines.append("×N: barknet-tls / asyncio-tls in this run (µs: lower is better; MB/s: higher)")
    return "\n".join(lines)


def main(*, quick: bool = False, json_path: str | None = None, out: TextIO | None = None) -> int:
    """Run the TLS rows, print their table; with ``json_path``, add the records to
    the list already in that file (or start one)."""
    out = sys.stdout if out is None else out
    records = run_tls(QUICK if quick else FULL, out=out)
    print("\n" + format_tls_table(records), file=out)
    if json_path:
        existing: list[dict[str, Any]] = []
        if os.path.exists(json_path):
            with open(json_path) as f:
                existing = json.load(f)
        with open(json_path, "w") as f:
            json.dump(existing + records, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        sys.exit(_child_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m barknet.bench.tls_side")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.exit(main(quick=args.quick, json_path=args.json))
