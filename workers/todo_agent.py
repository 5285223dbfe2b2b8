"""The todo assistant: an OpenAI Agents SDK agent whose only tools are the todo MCP server's.

Each run gets its own MCP session bound to the run's user (`workers/todo_mcp.py`); the agent lists and
calls tools over it, and each call and result goes out as a run event. Text streams as it comes.

A retried attempt resumes rather than starts over. Every call an earlier attempt made is recorded with
its result (in the call's own transaction, so a record exists exactly when the effect happened); the
new attempt announces those calls again, puts them with their results into the model's input, and
numbers its own calls after them. So the model is not asked again for what it already did, and
nothing is done twice. Should a new attempt still repeat a recorded position (two attempts racing),
the record answers instead of the tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents import Agent, RunConfig, RunContextWrapper, RunHooks, Runner
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.stream_events import RawResponsesStreamEvent
from mcp.server.mcpserver import MCPServer
from openai.types.responses import ResponseFunctionToolCall, ResponseTextDeltaEvent
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import tool_calls
from domain.chat import ChatMessage
from domain.events import ToolCalled, ToolReturned, Usage
from domain.run_request import ChatJob
from domain.tool_calls import RecordedCall, recorded_call_id
from todo.server import CallOrdinals, RunBinding, TodoScope, recorded_result
from workers.agent_items import recorded_items, to_input_items
from workers.agent_runner import RunOutcome
from workers.agents_model import agents_model_settings
from workers.provider_errors import provider_errors
from workers.publisher import RunPublisher
from workers.todo_mcp import RunTodoTools, result_payload

# Listing then acting then answering is three model calls; ten leaves room for a few tasks at once.
MAX_TURNS = 10

INSTRUCTIONS = """\
You are Switchboard's todo assistant. You manage the user's own todo list, only through your tools.

- Add, create or remember something: call add_task with a short title (and a description if they gave details).
- See, show or list tasks: call list_tasks. "What's pending", "what's left" or "what do I still have to do" \
means status "pending"; "what have I completed" or "what's done" means status "completed"; otherwise "all".
- Done, complete or finished: call complete_task.
- Delete, remove or cancel: call delete_task.
- Change, update or rename: call update_task.
- Tasks are identified by their number, the user's own 1, 2, 3…. When the user names a task rather than \
giving its number, call list_tasks first and use the number of the task that matches; if none or several \
match, ask which one they mean. Never guess a number.
- After every action, confirm what you did in one short, friendly sentence, with the task's number and \
title (for example "Done! I added task 4: Buy groceries."). When you list tasks, show each as its number \
and title, and say which are completed.
- If a tool reports an error, explain it plainly and say what the user can do.
"""


class _PlanCallPositions(RunHooks[Any]):
    """Give a response's tool calls their positions in the run in the order the model wrote them.

    Called when the model's response is complete and before any of its calls runs, so parallel calls
    get the same positions however they are scheduled.
    """

    def __init__(self, ordinals: CallOrdinals) -> None:
        self._ordinals = ordinals

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        self._ordinals.plan([item.call_id for item in response.output if isinstance(item, ResponseFunctionToolCall)])


class TodoAgentRunner:
    def __init__(
        self, *, model: Model, todo_server: MCPServer[TodoScope], db_engine: AsyncEngine, lease_s: float
    ) -> None:
        self._lease_s = lease_s
        self._model = model
        self._server = todo_server
        self._db_engine = db_engine

    async def run(self, job: ChatJob, history: Sequence[ChatMessage], publisher: RunPublisher) -> RunOutcome:
        async with self._db_engine.connect() as connection:
            earlier = await tool_calls.for_run(connection, run_id=job.run_id)
        await _announce(job.run_id, earlier, publisher)
        binding = RunBinding(
            user_id=job.user_id,
            run_id=job.run_id,
            conversation_id=job.conversation_id,
            attempt=job.attempt,
            lease_s=self._lease_s,
            ordinals=CallOrdinals(first=max((call.ordinal for call in earlier), default=0) + 1),
        )
        items = to_input_items(history) + recorded_items(job.run_id, earlier)
        scope = TodoScope(db_engine=self._db_engine, run=binding)
        text_parts: list[str] = []
        async with RunTodoTools(self._server, scope=scope, publisher=publisher) as tools:
            agent: Agent[Any] = Agent(
                name="todo",
                instructions=INSTRUCTIONS,
                model=self._model,
                model_settings=agents_model_settings(job),
                mcp_servers=[tools],
            )
            streamed = Runner.run_streamed(
                agent,
                input=items,
                max_turns=MAX_TURNS,
                hooks=_PlanCallPositions(binding.ordinals),
                run_config=RunConfig(workflow_name="switchboard todo"),
            )
            try:
                with provider_errors(max_turns=MAX_TURNS):
                    async for event in streamed.stream_events():
                        if not isinstance(event, RawResponsesStreamEvent):
                            continue
                        if isinstance(event.data, ResponseTextDeltaEvent):
                            text_parts.append(event.data.delta)
                            await publisher.text(event.data.delta)
            finally:
                if not streamed.is_complete:
                    streamed.cancel()
        usage = streamed.context_wrapper.usage
        # What the client was streamed is the answer; the final output only if nothing streamed.
        text = "".join(text_parts) or str(streamed.final_output or "")
        run_usage = Usage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens)
        return RunOutcome(text=text, usage=run_usage)


async def _announce(run_id: str, calls: Sequence[RecordedCall], publisher: RunPublisher) -> None:
    """A resumed attempt says again which calls the run has made, so its events tell the whole story."""
    for call in calls:
        call_id = recorded_call_id(run_id, call.call_id, call.ordinal)
        await publisher.emit(
            ToolCalled(
                run_id=publisher.run_id,
                attempt=publisher.attempt,
                call_id=call_id,
                tool=call.tool_name,
                args=call.arguments,
            )
        )
        await publisher.emit(
            ToolReturned(
                run_id=publisher.run_id,
                attempt=publisher.attempt,
                call_id=call_id,
                tool=call.tool_name,
                result=result_payload(recorded_result(call)),
                is_error=call.is_error,
            )
        )
