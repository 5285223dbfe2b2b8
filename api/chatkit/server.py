"""ChatKit's server on Switchboard: a ChatKit turn is a run like any other, answered by a worker.

`respond` does not run an agent here. It starts the run the way every surface does
(`api.relay.start.start_run`, assistant `todo`) and turns the run's events into ChatKit stream events:

- the answer is one assistant message item, `{run_id}-out`: a content part, its text deltas, and
  when the run completes, the answer as the worker stored it;
- each server-side tool call is a task item, `{run_id}-tool-{call_id}`: added (loading) when the
  call starts, done with its result or error when it returns;
- a failed run, a run that goes silent, a restarted run that had already shown output, and a
  server shutdown are ChatKit error events; the worker still stores whatever answer there is.

A client that goes away is not a stop: the stream ends, the run goes on and the worker stores the
answer, which the thread shows the next time it is loaded. So streams offer no cancel button, and
ChatKit's cancel handling (saving a partial answer and a "the user cancelled" note) is replaced
with nothing.

This module imports `chatkit.server`, which imports the OpenAI Agents SDK; the endpoint loads it on
the first ChatKit request, so API processes that never see one do not pay for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, assert_never

import structlog
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    ErrorEvent,
    StreamOptions,
    TaskItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from api.chatkit.items import assistant_item, output_item_id, run_of_input, tool_item_id, tool_task, user_text
from api.chatkit.store import ChatKitContext, ConversationStore
from api.relay.progress import (
    RESTARTED_MESSAGE,
    AwaitingApproval,
    Cancelled,
    ClientToolCall,
    Completed,
    Detached,
    Failed,
    Restarted,
    Text,
    ToolCall,
    ToolResult,
    ToolsOffered,
)
from api.relay.start import StartedRun, start_run
from domain import conversations, threads
from domain.assistants import TODO_ASSISTANT
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable, SwitchboardError
from domain.run_request import RunRequest

log = structlog.get_logger("switchboard.api.chatkit")


class SwitchboardChatKitServer(ChatKitServer[ChatKitContext]):
    def __init__(self) -> None:
        super().__init__(ConversationStore())

    async def answer(self, body: bytes, context: ChatKitContext) -> bytes | AsyncIterator[bytes]:
        """A ChatKit request's answer: JSON, or the Server-Sent Events of a stream."""
        result = await self.process(body, context)
        if isinstance(result, StreamingResult):
            return _chunks(result)
        return result.json

    def get_stream_options(self, thread: ThreadMetadata, context: ChatKitContext) -> StreamOptions:
        # Leaving a stream never stops its run, so there is nothing for a stop button to do.
        return StreamOptions(allow_cancel=False)

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: ChatKitContext
    ) -> None:
        # Not ChatKit's default: the worker stores the whole answer under the partial one's id, and no
        # one cancelled anything that a note in the thread should tell the model about.
        log.info("chatkit.stream_left", thread_id=thread.id, pending_items=len(pending_items))

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: ChatKitContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        if input_user_message is None:
            raise CustomStreamError("this server only answers new user messages")
        run_id = run_of_input(input_user_message.id)
        if run_id is None:
            raise CustomStreamError("this message was not made by this server")
        if thread.title is None:
            # ChatKit saves the thread and tells the client once the change is seen.
            thread.title = conversations.title_from(
                user_text(input_user_message.content, input_user_message.quoted_text)
            )
        request = RunRequest(
            user_id=context.user_id,
            request_id=context.request_id,
            assistant=TODO_ASSISTANT,
            conversation_key=thread.id,
            # The turn is stored already, by ChatKit's save of the user's item under this run's name.
            new_messages=[],
            run_id=run_id,
            conversation_policy=context.state.settings.conversation_policy,
        )
        try:
            async with start_run(context.state, request, stop=context.stop) as run:
                async for event in _Turn(thread, run, context).events():
                    yield event
        except SwitchboardError as exc:
            # Refused (too busy, Redis or the database away) or cut off: the client is told why.
            yield _error(exc.message)


class _Turn:
    """One run's events as ChatKit events."""

    def __init__(self, thread: ThreadMetadata, run: StartedRun, context: ChatKitContext) -> None:
        self.thread = thread
        self.run = run
        self.context = context
        self.answer_id = output_item_id(run.run_id)
        self.answer_started = False
        self.text: list[str] = []
        self.calls: dict[str, tuple[str, dict[str, Any]]] = {}

    async def events(self) -> AsyncIterator[ThreadStreamEvent]:
        async for progress in self.run.progress:
            match progress:
                case Text():
                    for started in self._start_answer():
                        yield started
                    self.text.append(progress.text)
                    yield ThreadItemUpdatedEvent(
                        item_id=self.answer_id,
                        update=AssistantMessageContentPartTextDelta(content_index=0, delta=progress.text),
                    )
                case ToolCall():
                    self.calls[progress.call_id] = (progress.tool, progress.args)
                    yield ThreadItemAddedEvent(item=self._tool_item(progress.call_id, done=False))
                case ToolResult():
                    self.calls.setdefault(progress.call_id, (progress.tool, {}))
                    yield ThreadItemDoneEvent(
                        item=self._tool_item(
                            progress.call_id,
                            done=True,
                            result=progress.result,
                            error=str(progress.result) if progress.is_error else None,
                        )
                    )
                case ClientToolCall() | ToolsOffered():
                    pass  # no client tools; the tool list is the Responses API's
                case Restarted():
                    yield _error(RESTARTED_MESSAGE)
                    return
                case Completed() | Cancelled() | AwaitingApproval():
                    # A stopped answer ends where it stopped, and stays in the thread as stored; one that
                    # waits for a decision has asked for it in its text.
                    async for finished in self._finish_answer():
                        yield finished
                case Failed() | Detached():
                    yield _error(progress.message)
                case _:
                    assert_never(progress)

    def _start_answer(self) -> list[ThreadStreamEvent]:
        if self.answer_started:
            return []
        self.answer_started = True
        return [
            ThreadItemAddedEvent(
                item=assistant_item(self.answer_id, thread_id=self.thread.id, created_at=_now(), text=None)
            ),
            ThreadItemUpdatedEvent(
                item_id=self.answer_id,
                update=AssistantMessageContentPartAdded(content_index=0, content=AssistantMessageContent(text="")),
            ),
        ]

    async def _finish_answer(self) -> AsyncIterator[ThreadStreamEvent]:
        """The answer as stored, which is what the thread shows from now on."""
        text = await self._stored_answer()
        if text is None:
            text = "".join(self.text)
        if not text and not self.answer_started:
            return
        for started in self._start_answer():
            yield started
        content = AssistantMessageContent(text=text)
        yield ThreadItemUpdatedEvent(
            item_id=self.answer_id, update=AssistantMessageContentPartDone(content_index=0, content=content)
        )
        yield ThreadItemDoneEvent(
            item=assistant_item(self.answer_id, thread_id=self.thread.id, created_at=_now(), text=text)
        )

    async def _stored_answer(self) -> str | None:
        if self.run.conversation_id is None:
            return None
        try:
            async with unavailable_on_connection_errors(), self.context.state.db_engine.connect() as connection:
                stored = await threads.message(
                    connection,
                    user_id=self.context.user_id,
                    conversation_id=self.run.conversation_id,
                    item_id=self.answer_id,
                )
        except ServiceUnavailable:
            return None
        return None if stored is None else stored.content

    def _tool_item(self, call_id: str, *, done: bool, result: Any = None, error: str | None = None) -> TaskItem:
        tool, arguments = self.calls[call_id]
        return TaskItem(
            id=tool_item_id(self.run.run_id, call_id),
            thread_id=self.thread.id,
            created_at=_now(),
            task=tool_task(tool, arguments, done=done, result=result, error=error),
        )


def _error(message: str) -> ErrorEvent:
    return ErrorEvent(code="custom", message=message, allow_retry=False)


def _now() -> datetime:
    return datetime.now(UTC)


async def _chunks(result: StreamingResult) -> AsyncIterator[bytes]:
    async for chunk in result:
        yield chunk
