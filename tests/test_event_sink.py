"""The worker's event batching: a run's text deltas that meet in one batch become one event."""

from __future__ import annotations

from domain.events import RunCompleted, RunEvent, RunStarted, TextDelta, ToolCalled
from workers.event_sink import merged_deltas


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
