"""What every experiment shares: loopback, sizes, a connected pair, tidy teardown,
and the slider scaffolding the widget cells use.

matplotlib, ipywidgets and IPython are imported inside the functions that need
them, so importing the course modules needs only the standard library."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..events import EventKind, IOEvent, IOStatus, Peer
from ..interfaces import ITransport

__all__ = [
    "as_image",
    "closing",
    "connected_pair",
    "echo_owner",
    "human_size",
    "powers_of_two",
    "size_slider",
    "slider_app",
    "wait_readable_bytes",
    "yes",
]

LOOPBACK = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB


def human_size(n: int) -> str:
    """``4096`` -> ``"4 KiB"``; exact powers of two print without decimals."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def powers_of_two(lo: int, hi: int) -> list[int]:
    """``lo, 2*lo, ... hi`` (both powers of two): the stops of a log-scale slider."""
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return out


# ----------------------------------------------------------------- plumbing
@contextlib.contextmanager
def connected_pair(
    *, rcvbuf: int | None = None, sndbuf: int | None = None, timeout: float = 5.0
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real TCP connection over loopback: ``(client, server_side)``, both blocking.

    ``rcvbuf``/``sndbuf`` are set on the listener and the client before the
    handshake (when TCP picks its window), so they hold for the whole connection.
    Both sockets are closed on the way out.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    try:
        for s in (listener, client):
            if rcvbuf is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.settimeout(timeout)
        client.settimeout(timeout)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        accepted.append(server)
        server.settimeout(None)
        client.settimeout(None)
        yield client, server
    finally:
        for s in (client, *accepted, listener):
            s.close()


@contextlib.contextmanager
def closing(*transports: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for t in transports:
            t.close()


# ------------------------------------------------------------ widgets
def slider_app(
    controls: dict[str, Any],
    run: Callable[..., Any],
    render: Callable[[Any], Any],
    describe: Callable[[Any], str],
) -> Any:
    """Sliders over an Output: every change reruns ``run(**values)``, prints
    ``describe(result)`` and draws ``render(result)`` inside the Output."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def update(_change: Any = None) -> None:
        values = {name: w.value for name, w in controls.items()}
        with out:
            out.clear_output(wait=True)
            result = run(**values)
            print(describe(result))
            display(as_image(render(result)))

    for w in controls.values():
        w.observe(update, names="value")
    update()
    return widgets.VBox([*controls.values(), out])


def as_image(fig: Any) -> Any:
    """A matplotlib Figure as a PNG image, so it shows inside a widget's Output
    whatever matplotlib backend the kernel has (or has not) set up."""
    import io

    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return Image(data=buf.getvalue(), format="png")


def size_slider(description: str, lo: int, hi: int, value: int) -> Any:
    import ipywidgets as widgets

    return widgets.SelectionSlider(
        options=[(human_size(n), n) for n in powers_of_two(lo, hi)],
        value=value,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="520px"),
    )


def wait_readable_bytes(sock: socket.socket, n: int, timeout: float = 5.0) -> None:
    """Wait until ``n`` bytes sit in ``sock``'s receive queue (without reading)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while True:
            peeked = sock.recv(n, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if len(peeked) >= n:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(peeked)} of {n} bytes arrived")
            sel.select(min(left, 0.01))


def echo_owner(transport: ITransport) -> Callable[[IOEvent], None]:
    """The owner of an echo server: every message goes back to its sender, and
    the water marks are obeyed, as every server in the course does.

    ``PAUSE_WRITING`` means the replies queued for a peer passed the high-water
    mark: the peer is not reading them. Echoing on would grow that queue without
    bound, so reading that peer stops until ``RESUME_WRITING`` (the queue fell to
    the low-water mark); then it reads again. TCP's own flow control does the
    rest: what we do not read fills the kernel's buffers and slows the sender.
    """
    paused: set[Peer] = set()

    def on_event(event: IOEvent) -> None:
        kind, peer = event.kind, event.peer
        if kind is EventKind.PAUSE_WRITING:
            paused.add(peer)
            transport.suspend_read(peer)
        elif kind is EventKind.RESUME_WRITING or kind is EventKind.CLOSED:
            paused.discard(peer)
        if kind is EventKind.READABLE or kind is EventKind.RESUME_WRITING:
            while peer not in paused and (r := transport.resume_read(peer)).status is IOStatus.OK:
                transport.resume_write(r.data, peer)

    return on_event
