"""Server memory per connection that sends nothing more: ``python -m barknet serve``
in plain TCP and with ``--tls``, its RSS read from ``/proc/<pid>/status`` (Linux).

    .venv/bin/python benchmarks/connection_cost.py [connections]

For TLS it needs ``trustme`` (a test dependency: ``make test`` installs it) to make a
certificate. Each row opens ``connections`` connections (default 500) to a fresh
server and prints the growth of its RSS divided by their number:

* plain TCP, silent after connecting;
* TLS, silent after connecting (no ClientHello);
* TLS, silent after sending its ClientHello (a handshake stalled half way);
* TLS, handshake done, then idle.

The README's table "What one connection can cost the server" quotes these rows.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _per_connection(args: list[str], connect: Callable[[int], socket.socket], n: int) -> float:
    """KiB of server RSS per connection that ``connect(port)`` leaves open."""
    server = subprocess.Popen(
        [sys.executable, "-m", "barknet", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    socks: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[-1].rsplit(":", 1)[1])
        time.sleep(0.3)
        before = _rss_kib(server.pid)
        for _ in range(n):
            socks.append(connect(port))
        time.sleep(1.0)  # (the server accepts them meanwhile)
        return (_rss_kib(server.pid) - before) / n
    finally:
        for sock in socks:
            sock.close()
        server.terminate()
        server.wait(10)


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 500
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    where = Path(tempfile.mkdtemp())
    cert, key = where / "cert.pem", where / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    tls = ["--tls", "--certfile", str(cert), "--keyfile", str(key)]
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def silent(port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port))

    def hello_only(port: int) -> socket.socket:
        sock = silent(port)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        half = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):  # (we never read the answer)
            half.do_handshake()
        sock.sendall(outgoing.read())  # the ClientHello
        return sock

    def handshaken(port: int) -> socket.socket:
        return context.wrap_socket(silent(port), server_hostname="localhost")

    rows = [
        ("plain TCP, silent", [], silent),
        ("TLS, silent (no ClientHello)", tls, silent),
        ("TLS, stalled after its ClientHello", tls, hello_only),
        ("TLS, handshake done, idle", tls, handshaken),
    ]
    print(f"server RSS per connection, {n} connections each (KiB)")
    for name, args, connect in rows:
        print(f"  {name:36} {_per_connection(args, connect, n):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
