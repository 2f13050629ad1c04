"""Deliberately wrong solutions of the exercise, each with the check that must catch it.

A mutant is the reference solution (``06_exercise_framing.ipynb`` next to this
file) with a few exact text replacements: the mistakes learners really make,
several of which passed every check before the suite learned to look for them,
and breaks of the plumbing the exercise gives them that an owner would feel
(those prove the contract checks run against the learner's transport).
``tests/test_exercise_mutants.py`` applies each one, runs the self-check, and
asserts that the named check fails with a message that says why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    #: (old, new) text replacements in the reference's code; each old text must
    #: occur exactly once, so a mutant cannot silently stop applying.
    edits: tuple[tuple[str, str], ...]
    #: The check that must fail, and a phrase its message must contain.
    caught_by: str
    says: str
    #: A phrase its message must not contain: the advice for a different mistake,
    #: which would send the learner to fix code that is right.
    not_says: str | None = None


MUTANTS = [
    Mutant(
        "little-endian header on both sides",
        (('HEADER = struct.Struct("!I")', 'HEADER = struct.Struct("<I")'),),
        caught_by="wire format and byte order",
        says="little-endian",
    ),
    Mutant(
        "one receive buffer shared by all peers",
        (
            (
                "MAX_FRAME_SIZE = 8 * 1024 * 1024",
                "MAX_FRAME_SIZE = 8 * 1024 * 1024\nSHARED = bytearray()",
            ),
            (
                "self.buffer = bytearray()  # received bytes",
                "self.buffer = SHARED  # received bytes",
            ),
        ),
        caught_by="many peers, interleaved partial frames",
        says="does every peer have its own receive buffer?",
        not_says="put no byte on the wire",
    ),
    Mutant(
        "buffer = buffer[n:] (copies the rest for every frame)",
        (
            (
                "del buffer[:end]  # cheap",
                "buffer = self.buffer = buffer[end:]  # copies what is left",
            ),
        ),
        caught_by="decoder work grows linearly",
        says="copies the rest of the buffer",
    ),
    Mutant(
        "never calls suspend_write after a drain (a busy loop)",
        (("self.inner.suspend_write(peer)  # nothing left", "pass  # nothing left"),),
        caught_by="no busy loop after a drain",
        says="inner.suspend_write(peer)",
    ),
    Mutant(
        "accepts writes after close(peer) while frames are queued",
        (
            (
                "if send is None or send.closing:\n"
                '            raise TransportClosedError(f"{peer} is closed", peer=peer)\n'
                "        send.pending.append(",
                "if send is None:\n"
                '            raise TransportClosedError(f"{peer} is closed", peer=peer)\n'
                "        send.pending.append(",
            ),
        ),
        caught_by="writes after close(peer) while data is queued",
        # the "too late" frame was queued and sent after the 2 MiB: 8 bytes too many,
        # said as what they are (the bytes compared alone pointed nowhere)
        says="did not raise TransportClosedError, and the peer got 8 bytes more",
    ),
    Mutant(
        "READABLE said once per batch (the given plumbing not level-triggered)",
        (
            (
                "        if self._news(peer, recv):\n            self._announce_later(peer)\n",
                "        if False:  # never said again\n            pass\n",
            ),
        ),
        caught_by="one message per READABLE",
        says="one per READABLE",
    ),
    Mutant(
        "close(peer) in the given plumbing drops the queued frames",
        (
            (
                "        self._paused.add(peer)  # and announce nothing more\n"
                "        if not send.pending:\n",
                "        self._paused.add(peer)  # and announce nothing more\n"
                "        if True:  # queued or not\n",
            ),
        ),
        caught_by="close delivers everything while the peer keeps sending",
        # the 4 MiB reply is one frame: cut short, not one whole frame arrives
        says="the peer that kept sending got 0 bytes",
    ),
    Mutant(
        "refuses to send a frame of exactly max_frame_size (>= instead of >)",
        (("    if size > max_frame_size:\n", "    if size >= max_frame_size:\n"),),
        caught_by="a frame of exactly max_frame_size",
        says="was refused at the send",
    ),
    Mutant(
        "refuses to receive a frame of exactly max_frame_size (>= instead of >)",
        (("if size > self.max_frame_size:", "if size >= self.max_frame_size:"),),
        caught_by="a frame of exactly max_frame_size",
        says="the receiver refused",
        not_says="from the middle of the stream",
    ),
    Mutant(
        "a partial header is dropped (a read of under 4 bytes is thrown away)",
        (
            (
                "        while len(buffer) >= HEADER.size:\n",
                "        if len(buffer) < HEADER.size:\n"
                "            buffer.clear()  # (the mistake)\n"
                "        while len(buffer) >= HEADER.size:\n",
            ),
        ),
        caught_by="survives one-byte I/O",
        says="must wait in that peer's buffer",
        not_says="go on from the first byte not yet sent",
    ),
    Mutant(
        "the bytes after the first whole frame of a read are thrown away",
        (
            (
                "del buffer[:end]  # cheap: bytearray drops bytes at the front in O(1)",
                "buffer.clear()  # (the mistake)",
            ),
        ),
        caught_by="frames in order",
        says="whole frame(s) received",
    ),
    Mutant(
        "one frame per feed (the rest wait for more bytes)",
        (
            (
                "del buffer[:end]  # cheap: bytearray drops bytes at the front in O(1)",
                "del buffer[:end]\n            break  # (the mistake)",
            ),
        ),
        caught_by="rapid fire of small messages",
        says="not only the first",
        not_says="level-triggered",
    ),
    Mutant(
        "an empty frame is not decoded (> instead of >=)",
        (
            (
                "        while len(buffer) >= HEADER.size:\n",
                "        while len(buffer) > HEADER.size:\n",
            ),
        ),
        caught_by="zero-length frame",
        says="a frame of its own",
    ),
    Mutant(
        "ValueError instead of FrameTooLargeError when receiving",
        (
            (
                "raise FrameTooLargeError(size, self.max_frame_size)",
                'raise ValueError(f"frame too large: {size}")',
            ),
        ),
        caught_by="oversized length prefix",
        says="instead ValueError escaped",
    ),
    Mutant(
        "ValueError instead of FrameTooLargeError when sending",
        (
            (
                "raise FrameTooLargeError(size, max_frame_size, sending=True)",
                'raise ValueError("too large")',
            ),
        ),
        caught_by="oversized send refused",
        says="it raised ValueError instead",
    ),
    Mutant(
        "EOFError instead of TruncatedFrameError",
        (
            (
                'raise TruncatedFrameError("header", have, HEADER.size)',
                'raise EOFError("cut mid-header")',
            ),
        ),
        caught_by="EOF mid-header",
        says="instead EOFError escaped",
    ),
    Mutant(
        "a framing error is not caught where the bytes are read",
        (
            (
                "            except FramingError as error:\n",
                "            except ZeroDivisionError as error:  # (the mistake)\n",
            ),
        ),
        caught_by="oversized length prefix",
        says="Catch it where you read",
    ),
    Mutant(
        "the unsent rest of a frame is forgotten",
        (
            (
                "            if send.offset == len(send.pending[0]):\n"
                "                send.pending.popleft()\n"
                "                send.offset = 0\n",
                "            send.pending.popleft()  # (the mistake: with what was not sent)\n"
                "            send.offset = 0\n",
            ),
        ),
        caught_by="single message",
        says="must stay queued",
    ),
    Mutant(
        "a short write is resumed from the start of the frame",
        (
            (
                "chunk = memoryview(send.pending[0])[send.offset :]",
                "chunk = memoryview(send.pending[0])  # (the mistake: the offset is ignored)",
            ),
        ),
        caught_by="survives one-byte I/O",
        says="go on from the first byte not yet sent",
        not_says="must wait in that peer's buffer",
    ),
    Mutant(
        "one read is taken for one frame (what an earlier read left is dropped)",
        (
            (
                "        buffer = self.buffer\n        buffer += data\n",
                "        buffer = self.buffer\n"
                "        buffer.clear()  # (the mistake)\n"
                "        buffer += data\n",
            ),
        ),
        caught_by="a frame of exactly max_frame_size",
        says="from the middle of the stream",
        not_says="not >=",
    ),
    Mutant(
        "resume_write only queues (and waits for a WRITABLE that never comes)",
        (
            (
                "        if send.waiting:\n"
                "            return WriteResult(0, IOStatus.WOULD_BLOCK)"
                "  # WRITABLE will flush it\n"
                "        return self._flush(peer, send)\n",
                "        return WriteResult(0, IOStatus.WOULD_BLOCK)  # (the mistake)\n",
            ),
        ),
        caught_by="many peers, interleaved partial frames",
        says="put no byte on the wire",
        not_says="own receive buffer",
    ),
    Mutant(
        "write_eof does not wait for the queue (a break of the plumbing)",
        (
            (
                "            if not send.pending:\n                self._when_sent(peer, send)\n",
                "            self._when_sent(peer, send)  # (the break: before the queue)\n",
            ),
        ),
        caught_by="half-close, client first",
        says="did the EOF overtake the message?",
    ),
    Mutant(
        "suspend_read does not hold READABLE back (a break of the plumbing)",
        (
            (
                "        if recv is None or recv.error is not None or peer in self._paused:\n",
                "        if recv is None or recv.error is not None:  # (the break)\n",
            ),
            (
                "        if peer in self._paused:\n"
                "            return  # the owner's callback suspended reading, or closed the"
                " peer\n",
                "",
            ),
        ),
        caught_by="suspend_read holds READABLE back",
        says="although the owner called suspend_read",
    ),
    Mutant(
        "every CLOSED after the peer was opened says EOF (a break of the plumbing)",
        (
            (
                "            elif recv is not None and recv.eof and event.status is"
                " IOStatus.OK:\n",
                "            elif recv is not None:  # (the break: a reset told as an end)\n",
            ),
        ),
        caught_by="CLOSED tells a reset from a clean end, and counters answer in it",
        says="CLOSED tells the truth",
    ),
    Mutant(
        "the module's default limit instead of the transport's own",
        (
            (
                "if size > self.max_frame_size:\n"
                "                raise FrameTooLargeError(size, self.max_frame_size)",
                "if size > MAX_FRAME_SIZE:\n"
                "                raise FrameTooLargeError(size, MAX_FRAME_SIZE)",
            ),
            (
                "send.pending.append(encode_frame(data, self.max_frame_size))",
                "send.pending.append(encode_frame(data))",
            ),
        ),
        caught_by="a limit of its own",
        says="not with the module's",
    ),
    Mutant(
        "the unsent rest copied after every short write",
        (
            (
                "            send.offset += result.sent\n"
                "            if send.offset == len(send.pending[0]):\n"
                "                send.pending.popleft()\n"
                "                send.offset = 0\n",
                "            send.pending[0] = send.pending[0][result.sent :]  # copies the rest\n"
                "            if not send.pending[0]:\n"
                "                send.pending.popleft()\n",
            ),
        ),
        caught_by="a large frame in pieces costs linear work",
        says="sending one frame",
    ),
    Mutant(
        "a new receive buffer for every read",
        (
            (
                "        buffer = self.buffer\n        buffer += data\n",
                "        buffer = self.buffer = self.buffer + data  # a new one, every time\n",
            ),
        ),
        caught_by="a large frame in pieces costs linear work",
        says="receiving one frame",
    ),
    Mutant(
        "EOF said while frames still wait",
        (
            (
                "        if recv.frames:\n"
                "            return ReadResult(recv.frames.popleft(), IOStatus.OK)\n"
                "        if recv.eof:\n"
                '            return ReadResult(b"", IOStatus.EOF)\n',
                "        if recv.eof:\n"
                '            return ReadResult(b"", IOStatus.EOF)\n'
                "        if recv.frames:\n"
                "            return ReadResult(recv.frames.popleft(), IOStatus.OK)\n",
            ),
        ),
        caught_by="half-close, client first",
        says="READABLE kept coming after its resume_read said EOF",
        not_says="did the EOF overtake the message?",
    ),
    Mutant(
        "resume_read never says EOF",
        (
            (
                "        if recv.eof:\n"
                '            return ReadResult(b"", IOStatus.EOF)\n'
                '        return ReadResult(b"", IOStatus.WOULD_BLOCK)',
                '        return ReadResult(b"", IOStatus.WOULD_BLOCK)',
            ),
        ),
        caught_by="half-close, client first",
        says="resume_read never said EOF",
    ),
    Mutant(
        "the limit checked only once the whole frame is in",
        (
            (
                "            if size > self.max_frame_size:\n"
                "                raise FrameTooLargeError(size, self.max_frame_size)\n"
                "            end = HEADER.size + size\n"
                "            if len(buffer) < end:\n"
                "                break  # the rest of this frame is still on its way\n",
                "            end = HEADER.size + size\n"
                "            if len(buffer) < end:\n"
                "                break  # the rest of this frame is still on its way\n"
                "            if size > self.max_frame_size:\n"
                "                raise FrameTooLargeError(size, self.max_frame_size)\n",
            ),
        ),
        caught_by="oversized length prefix",
        says="as soon as the 4 header bytes are in",
    ),
    Mutant(
        "a new frame written ahead of the unsent rest of an earlier one",
        (
            (
                "        send.pending.append(encode_frame(data, self.max_frame_size))\n"
                "        if send.waiting:\n"
                "            return WriteResult(0, IOStatus.WOULD_BLOCK)"
                "  # WRITABLE will flush it\n"
                "        return self._flush(peer, send)",
                "        frame = encode_frame(data, self.max_frame_size)\n"
                "        result = self.inner.resume_write(frame, peer)  # (the mistake)\n"
                "        if result.sent < len(frame) and result.status is not IOStatus.ERROR:\n"
                "            send.pending.append(frame[result.sent :])\n"
                "            send.waiting = True\n"
                "        return result",
            ),
        ),
        caught_by="survives one-byte I/O",
        says="a new frame went out while the rest of an earlier one still waited",
        not_says="not from the start of the frame",
    ),
    Mutant(
        "DRAINED after close(peer) (a break of the plumbing)",
        (
            (
                "                    if not send.close_asked:  # (after close, only CLOSED is"
                " news)\n"
                "                        self._emit(IOEvent(EventKind.DRAINED, peer))\n",
                "                    self._emit(IOEvent(EventKind.DRAINED, peer))  # (break)\n",
            ),
        ),
        caught_by="writes after close(peer) while data is queued",
        says="DRAINED came as well as its CLOSED",
    ),
]


def apply(code: str, mutant: Mutant) -> str:
    """``code`` with ``mutant``'s edits made; refuses an edit that does not apply once."""
    for old, new in mutant.edits:
        count = code.count(old)
        if count != 1:
            raise ValueError(f"{mutant.name}: {old!r} occurs {count} times in the reference")
        code = code.replace(old, new)
    return code
