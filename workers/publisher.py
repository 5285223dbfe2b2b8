"""One attempt's events, with text deltas coalesced after the first.

The first token goes out at once, because time to first token is what a person notices. Later deltas
are gathered for a few milliseconds (longer when many runs stream at once: `workers.text_pacing`),
which spares Redis and the API's event loop one message per token without a visible delay. Nothing
here waits for Redis except the run's last event.
"""

from __future__ import annotations

import asyncio
import time

from domain.events import RunEvent, TextDelta
from domain.metrics import WorkerMetrics
from workers.event_sink import EventSink
from workers.text_pacing import MAX_EVENT_CHARS, TextPacing


class RunPublisher:
    def __init__(
        self,
        sink: EventSink,
        *,
        run_id: str,
        attempt: int,
        pacing: TextPacing,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self._sink = sink
        # Built as the attempt starts: its time to first token counts from here.
        self._metrics = metrics
        self._started_s = time.monotonic()
        self._pacing = pacing
        pacing.streaming += 1
        self._closed = False
        self._pending: list[str] = []
        self._pending_chars = 0
        self._sent_text = False
        self._text: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """The attempt has ended: it no longer counts among the runs that share the text budget."""
        if not self._closed:
            self._closed = True
            self._pacing.streaming -= 1

    def text_sent(self) -> str:
        """Everything this attempt has said so far: its answer, should it be stopped now."""
        return "".join(self._text)

    async def text(self, delta: str) -> None:
        if not delta:
            return
        self._text.append(delta)
        if not self._sent_text or self._pacing.coalesce_s == 0:
            if not self._sent_text and self._metrics is not None:
                self._metrics.ttft_s.observe(time.monotonic() - self._started_s)
            urgent = not self._sent_text
            self._sent_text = True
            self._sink.send(TextDelta(run_id=self.run_id, attempt=self.attempt, text=delta), urgent=urgent)
            return
        self._pending.append(delta)
        self._pending_chars += len(delta)
        if self._pending_chars >= MAX_EVENT_CHARS:
            self.flush(urgent=True)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._pacing.hold_s(), self._flush_held)

    def tool_call_ended(self, *, tool: str, is_error: bool) -> None:
        """Counted by the code that made the call, not by its `tool.result` event, which a resumed attempt
        publishes again for calls made before it."""
        if self._metrics is not None:
            self._metrics.tool_call(tool=tool, outcome="error" if is_error else "ok")

    async def emit(self, event: RunEvent) -> None:
        self.flush()
        self._sink.send(event)

    async def finish(self, event: RunEvent) -> None:
        """The run's last event: everything before it is sent first, and this waits until Redis has it."""
        self.flush()
        await self._sink.deliver(event)

    def flush(self, *, urgent: bool = False) -> None:
        """Hand the text gathered so far to the sink: not urgent, since an event of this run follows."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_chars = 0
            self._sink.send(TextDelta(run_id=self.run_id, attempt=self.attempt, text=text), urgent=urgent)

    def _flush_held(self) -> None:
        # Held for the coalescing time already: it goes out with the sink's next round trip.
        self._timer = None
        self.flush(urgent=True)
