"""How long a run holds its text before sending it: the coalescing time, longer when many runs stream.

Each text event costs the same whatever it carries: a script call in Redis, a message that every API
process decodes and relays, a write to the client. With one event per token, a worker carrying a
hundred runs sends thousands a second and spends more on them than on the runs; under that load a
run's tokens come further apart than the coalescing time, so holding for that long gathers one token.

So a process shares one budget of text events per second among its runs: up to `RUNS_AT_COALESCE_TIME`
runs hold their text for the coalescing time, and beyond that each holds it in proportion to how many
stream at once, up to `MAX_HOLD_S`. The first token of a run is never held: time to first token is what
a person notices, and under load a reply still arrives as fast, in fewer, larger pieces. Nor is text
held past `MAX_EVENT_CHARS`: a fast model's long answer goes out in pieces of that size.
"""

from __future__ import annotations

RUNS_AT_COALESCE_TIME = 8
MAX_HOLD_S = 0.25
# Text is not held, or joined with more, once it is this long: one event is one write to a client, and
# a client that reads slowly holds the server's copy of the write it is in, whatever its size.
MAX_EVENT_CHARS = 32 * 1024


class TextPacing:
    def __init__(self, coalesce_s: float) -> None:
        self.coalesce_s = coalesce_s
        self.streaming = 0

    def hold_s(self) -> float:
        """How long text gathered from now on waits before it goes out."""
        if self.coalesce_s == 0:
            return 0.0
        crowded = self.coalesce_s * self.streaming / RUNS_AT_COALESCE_TIME
        return max(self.coalesce_s, min(crowded, MAX_HOLD_S))
