"""What the notebooks run: one module per notebook or topic, each experiment a plain
function with a deterministic ``summary()``, its plot, and its widget.

Theory of operation
-------------------
Every experiment sets something up on ``127.0.0.1`` (port 0), runs it to
completion on an :class:`~barknet.EventWatcher` (or, for the blocking lessons, on
plain sockets), tears everything down, and returns a small result object. Its
``summary()`` holds only facts that come out the same on every run, so a notebook
can print it in a cell nbval compares; ``details()`` has the counts and timings
that vary, for widget cells. Nothing is left running: sockets and transports are
closed and threads joined before a function returns, and every wait has a timeout.

==================  ==========================================================
module              notebook
==================  ==========================================================
``basics``          00 start here, 01 blocking vs non-blocking
``reactor_lab``    02 the reactor
``partial_io_lab`` 03 partial I/O (and Nagle's trap)
``framing_lab``     04 framing strategies, 05 transports and layering
``exercise``        06 the framing exercise (learner copies, self-check)
``live_lab``        07 the live lab and the benchmark
``hostile``         08 when things go wrong
==================  ==========================================================

The notebooks write ``from barknet import course`` and call ``course.partial_io(...)``:
this package re-exports every experiment, so a notebook needs one import.
The library itself (``barknet``) never imports this package.
"""

from .basics import (
    BlockingOutcome,
    ThreadCost,
    blocking_recv,
    check_environment,
    nonblocking_recv,
    plot_thread_cost,
    thread_cost_summary,
    thread_per_connection,
)
from .common import connected_pair, human_size, powers_of_two
from .framing_lab import (
    BigFrame,
    big_frame,
    delimiter_escape,
    delimiter_split,
    delimiter_unescape,
    fixed_size_split,
    reads_after_sends,
    reads_of_one_send,
    wire_capture,
)
from .live_lab import (
    EchoResult,
    SmallFrames,
    benchmark_command,
    benchmark_summary,
    benchmark_widget,
    echo_lab,
    echo_lab_widget,
    echo_throughput,
    load_benchmark,
    plot_benchmark,
    plot_echo,
    plot_throughput,
    run_benchmark,
    small_frames_lab,
    take_in_batches,
    take_one_by_one,
    throughput_sweep,
)
from .partial_io_lab import (
    NagleResult,
    PartialIOResult,
    nagle_trap,
    partial_io,
    partial_io_widget,
    plot_partial_io,
)
from .reactor_lab import late_timer, reactor_tour

__all__ = [
    "BigFrame",
    "BlockingOutcome",
    "EchoResult",
    "NagleResult",
    "PartialIOResult",
    "SmallFrames",
    "ThreadCost",
    "benchmark_command",
    "benchmark_summary",
    "benchmark_widget",
    "big_frame",
    "blocking_recv",
    "check_environment",
    "connected_pair",
    "delimiter_escape",
    "delimiter_split",
    "delimiter_unescape",
    "echo_lab",
    "echo_lab_widget",
    "echo_throughput",
    "fixed_size_split",
    "human_size",
    "late_timer",
    "load_benchmark",
    "nagle_trap",
    "nonblocking_recv",
    "partial_io",
    "partial_io_widget",
    "plot_benchmark",
    "plot_echo",
    "plot_partial_io",
    "plot_thread_cost",
    "plot_throughput",
    "powers_of_two",
    "reactor_tour",
    "reads_after_sends",
    "reads_of_one_send",
    "run_benchmark",
    "small_frames_lab",
    "take_in_batches",
    "take_one_by_one",
    "thread_cost_summary",
    "thread_per_connection",
    "throughput_sweep",
    "wire_capture",
]
