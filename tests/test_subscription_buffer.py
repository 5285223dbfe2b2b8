"""A stream's subscription holds a bounded buffer: a client that stops reading costs at most
`MAX_BUFFERED_BYTES` of held events, after which the stream catches up from the replay log (a gap)."""

from __future__ import annotations

import asyncio

from api.relay.event_hub import GAP, MAX_BUFFERED_BYTES, STOP, Subscription
from domain.events import TextDelta, encode_event


def subscription() -> Subscription:
    return Subscription(run_id="run_x", confirmed=asyncio.get_running_loop().create_future())


async def test_past_the_limit_the_held_events_become_one_gap_and_a_stop_is_kept() -> None:
    held = subscription()
    chunk = "x" * 64 * 1024
    for seq in range(1, 40):  # about 2.5 MB of events that nobody takes
        event = TextDelta(run_id="run_x", attempt=1, seq=seq, text=chunk)
        held.offer(event, len(encode_event(event)))
        assert held.buffered_bytes <= MAX_BUFFERED_BYTES
        if seq == 20:
            held.interrupt(STOP)
    taken = [held.queue.get_nowait()[0] for _ in range(held.queue.qsize())]
    # The last gap, the stop that came before it, then what came after (which the catch-up skips).
    last_gap = max(index for index, item in enumerate(taken) if item is GAP)
    assert taken[last_gap + 1] is STOP
    after = [item for item in taken[last_gap + 2 :] if isinstance(item, TextDelta)]
    assert after and all(item.seq > 20 for item in after)
    assert sum(len(encode_event(item)) for item in after) == held.buffered_bytes


async def test_what_is_taken_is_no_longer_counted() -> None:
    held = subscription()
    event = TextDelta(run_id="run_x", attempt=1, seq=1, text="hello")
    held.offer(event, 100)
    assert held.buffered_bytes == 100
    assert await held.take() == event
    assert held.buffered_bytes == 0
