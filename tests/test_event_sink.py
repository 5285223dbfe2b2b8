"""The worker's event batching: a run's text deltas that meet in one batch become one event, and a run's
publisher holds its text for longer the more runs stream at once."""

from __future__ import annotations

import asyncio

from domain.events import RunCompleted, RunEvent, RunStarted, TextDelta, ToolCalled
from workers.event_sink import EventSink, merged_deltas
from workers.publisher import RunPublisher
from workers.text_pacing import MAX_EVENT_CHARS, MAX_HOLD_S, RUNS_AT_COALESCE_TIME, TextPacing


def delta(run: str, text: str, attempt: int = 1) -> TextDelta:
    return TextDelta(run_id=run, attempt=attempt, text=text)


def test_deltas_of_one_run_join_across_other_runs_events() -> None:
    events: list[RunEvent] = [
        RunStarted(run_id="a", attempt=1),
        delta("a", "Hel"),
        delta("b", "x"),
        delta("a", "lo"),
        delta("b", "y"),
        delta("a", "!"),
    ]
    assert merged_deltas(events) == [RunStarted(run_id="a", attempt=1), delta("a", "Hello!"), delta("b", "xy")]


def test_other_events_keep_their_place_and_split_the_text() -> None:
    call = ToolCalled(run_id="a", attempt=1, call_id="c", tool="t")
    done = RunCompleted(run_id="a", attempt=1)
    events: list[RunEvent] = [delta("a", "1"), delta("a", "2"), call, delta("a", "3"), done, delta("a", "4")]
    assert merged_deltas(events) == [delta("a", "12"), call, delta("a", "3"), done, delta("a", "4")]


def test_a_new_attempts_text_is_not_joined_to_the_old() -> None:
    events: list[RunEvent] = [delta("a", "old"), delta("a", "new", attempt=2)]
    assert merged_deltas(events) == events


class CapturingSink(EventSink):
    """The sink's interface, keeping what it is handed: the publisher's pacing is what is under test."""

    def __init__(self) -> None:  # no EventLog, no sender task
        self.sent: list[tuple[float, RunEvent, bool]] = []

    def send(self, event: RunEvent, *, urgent: bool = False) -> None:
        self.sent.append((asyncio.get_running_loop().time(), event, urgent))

    async def deliver(self, event: RunEvent) -> None:
        self.send(event, urgent=True)


async def _speak(pacing: TextPacing, tokens: int, gap_s: float) -> tuple[float, list[tuple[float, RunEvent, bool]]]:
    sink = CapturingSink()
    publisher = RunPublisher(sink, run_id="a", attempt=1, pacing=pacing)
    started = asyncio.get_running_loop().time()
    for _ in range(tokens):
        await publisher.text("tok ")
        await asyncio.sleep(gap_s)
    await asyncio.sleep(MAX_HOLD_S + 0.05)
    publisher.close()
    return started, sink.sent


async def test_the_first_token_goes_at_once_and_later_ones_are_held_for_the_coalescing_time() -> None:
    pacing = TextPacing(0.05)
    started, sent = await _speak(pacing, tokens=4, gap_s=0.01)
    first_at, first, urgent = sent[0]
    assert first == delta("a", "tok ") and urgent and first_at - started < 0.01
    assert [event for _, event, _ in sent[1:]] == [delta("a", "tok tok tok ")]
    assert pacing.streaming == 0


async def test_the_more_runs_stream_at_once_the_longer_each_holds_its_text() -> None:
    pacing = TextPacing(0.01)
    assert pacing.hold_s() == 0.01
    pacing.streaming = 100 * RUNS_AT_COALESCE_TIME  # a crowd: held as long as it may be
    assert pacing.hold_s() == MAX_HOLD_S
    pacing.streaming = 4 * RUNS_AT_COALESCE_TIME
    assert pacing.hold_s() == 0.04
    # Tokens 20 ms apart: alone, nearly one event each; in a crowd, held 40 ms, two or three per event.
    pacing.streaming = 0
    _, alone = await _speak(pacing, tokens=9, gap_s=0.02)
    pacing.streaming = 4 * RUNS_AT_COALESCE_TIME - 1
    _, crowded = await _speak(pacing, tokens=9, gap_s=0.02)
    assert len(crowded) < len(alone) - 2
    assert "".join(event.text for _, event, _ in crowded if isinstance(event, TextDelta)) == "tok " * 9
    assert TextPacing(0).hold_s() == 0


def test_deltas_are_not_joined_past_the_longest_event() -> None:
    half = "x" * (MAX_EVENT_CHARS // 2)
    events: list[RunEvent] = [delta("a", half), delta("a", half), delta("a", "y")]
    assert merged_deltas(events) == [delta("a", half + half), delta("a", "y")]


async def test_a_fast_long_answer_goes_out_in_pieces_of_the_longest_event() -> None:
    sink = CapturingSink()
    publisher = RunPublisher(sink, run_id="a", attempt=1, pacing=TextPacing(10.0))  # held "forever"
    await publisher.text("first")
    for _ in range(10):
        await publisher.text("z" * (MAX_EVENT_CHARS // 4))
    publisher.close()
    sizes = [len(event.text) for _, event, _ in sent_texts(sink)]
    assert sizes == [5, MAX_EVENT_CHARS, MAX_EVENT_CHARS]  # and the last half piece is still held
    assert all(urgent for _, _, urgent in sink.sent)


def sent_texts(sink: CapturingSink) -> list[tuple[float, TextDelta, bool]]:
    return [(at, event, urgent) for at, event, urgent in sink.sent if isinstance(event, TextDelta)]
