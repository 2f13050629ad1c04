"""The course's plots read well: labels that do not overlap, counts that are whole, sane units.

Each test draws the figure with the Agg backend and looks at what was drawn (tick labels,
their boxes on the canvas, the artists), never at pixels.
"""

from __future__ import annotations

import itertools

import matplotlib
import pytest

from barknet import course
from barknet.course.partial_io_lab import offer_the_rest

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(scope="module", autouse=True)
def _fonts_loaded() -> None:
    """matplotlib keeps its font files open once used: open them before any leak check."""
    _draw(course.plot_echo(course.echo_lab(size=64, clients=1, frames=2)))


def _draw(fig):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig


def test_timeline_row_labels_do_not_overlap_with_eight_clients() -> None:
    fig = _draw(course.plot_echo(course.echo_lab(size=64, clients=8, frames=2)))
    timeline = fig.axes[0]
    labels = [t for t in timeline.get_yticklabels() if t.get_text()]
    assert len(labels) == 32  # 8 clients and their 8 server peers, each send and recv
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.y0)
    for lower, upper in itertools.pairwise(boxes):
        assert upper.y0 >= lower.y1 - 0.5, f"labels overlap: {lower} and {upper}"


def test_round_trip_histogram_counts_whole_frames_in_milliseconds() -> None:
    fig = _draw(course.plot_echo(course.echo_lab(size=64, clients=2, frames=3)))
    histogram = fig.axes[-1]
    assert "(ms)" in histogram.get_xlabel()
    ticks = [t for t in histogram.get_yticks() if t >= 0]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_partial_io_plot_shows_eagain_above_the_axis_and_dots_for_many_calls() -> None:
    result = course.partial_io(size=4 * 1024 * 1024, sndbuf=4096, rcvbuf=4096, read_size=4096)
    fig = _draw(course.plot_partial_io(result))
    receiver = fig.axes[1]
    assert len(result.trace.select("receiver")) > 60
    assert len(receiver.patches) == 0, "thousands of bars make a comb: dots instead"
    for ax in fig.axes:
        for marks in ax.collections:
            if marks.get_label().startswith("EAGAIN"):
                ys = marks.get_offsets()[:, 1]
                assert (ys > 0).all() and not marks.get_clip_on()


def test_partial_io_runs_the_sender_it_is_given() -> None:
    calls = []

    def sender(tx, message):  # type: ignore[no-untyped-def]
        calls.append(len(message))
        return offer_the_rest(tx, message)

    result = course.partial_io(size=64 * 1024, sndbuf=4096, sender=sender)
    assert calls == [64 * 1024] and result.intact


def test_benchmark_button_label_is_not_cut_off() -> None:
    pytest.importorskip("ipywidgets")
    box = course.benchmark_widget(runner=lambda *args: [])
    button = next(w for w in box.children if hasattr(w, "on_click"))
    assert button.layout.width == "auto"
