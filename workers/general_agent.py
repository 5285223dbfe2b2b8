"""The general assistant: a PydanticAI agent, with the client's own tools offered as external tools.

When the model calls a client-declared tool, the run ends there and the call goes back to the client
(OpenAI's `finish_reason: "tool_calls"`); the client runs it and sends the result in its next request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, assert_never

from pydantic_ai import (
    Agent,
    AgentRunResult,
    AgentRunResultEvent,
    DeferredToolRequests,
    DeferredToolResults,
    ToolApproved,
    ToolDenied,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    CompactionPart,
    FilePart,
    ModelMessage,
    ModelMessagesTypeAdapter,
    NativeToolCallPart,
    NativeToolReturnPart,
    PartDeltaEvent,
    PartStartEvent,
    SpeechPart,
    SpeechPartDelta,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition as AgentToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.toolsets.external import ExternalToolset

from domain.chat import ChatMessage, FunctionCall, ToolCallSpec
from domain.errors import RunFailure
from domain.events import ClientToolCallDelta, Usage
from domain.passthrough import OPENAI_FIELDS
from domain.run_request import ChatJob
from domain.text import scrub
from domain.tool_policy import PendingApproval
from workers.agent_runner import RunOutcome
from workers.history import to_model_messages
from workers.publisher import RunPublisher

# What reaches an OpenAI-protocol provider exactly as the client sent it.
RAW_OPENAI_FIELDS = ("max_tokens", "max_completion_tokens", *OPENAI_FIELDS)

INSTRUCTIONS = (
    "You are Switchboard's general assistant. Answer clearly and concisely. "
    "When the user offers tools, call one only when it helps answer the request."
)

# What a run ends with: the answer's text, or the client tool calls it stopped at.
_AgentOutput = str | DeferredToolRequests


class GeneralAgentRunner:
    def __init__(self, model: Model, *, pass_raw_openai_fields: bool, instructions: str = INSTRUCTIONS) -> None:
        self._agent: Agent[None, _AgentOutput] = Agent(
            model,
            instructions=instructions,
            output_type=[str, DeferredToolRequests],
        )
        self._pass_raw_openai_fields = pass_raw_openai_fields

    async def run(
        self,
        job: ChatJob,
        history: Sequence[ChatMessage],
        publisher: RunPublisher,
        *,
        server_tools: Sequence[AbstractToolset[None]] = (),
    ) -> RunOutcome:
        """`server_tools`: tools that run here (an assistant's MCP tools), beside the client's own."""
        client_tools = _client_tools(job) if job.tools and job.tool_choice != "none" else []
        toolsets = [ExternalToolset(client_tools)] if client_tools else []
        message_history, decided = _resumed(job) if job.paused_state is not None else (to_model_messages(history), None)
        async with self._agent.run_stream_events(
            message_history=message_history,
            deferred_tool_results=decided,
            model_settings=self._model_settings(job),
            toolsets=[*toolsets, *server_tools],
            infer_name=False,
        ) as events:
            return await _RunTranslator(publisher, client_tools={tool.name for tool in client_tools}).follow(events)

    def _model_settings(self, job: ChatJob) -> ModelSettings:
        params = job.params
        settings: ModelSettings = {"max_retries": 0}
        if params.temperature is not None:
            settings["temperature"] = params.temperature
        if params.top_p is not None:
            settings["top_p"] = params.top_p
        if params.stop:
            settings["stop_sequences"] = params.stop
        if params.parallel_tool_calls is not None and job.tools:
            settings["parallel_tool_calls"] = params.parallel_tool_calls
        if not self._pass_raw_openai_fields:
            # One limit, whichever name the client gave it; the API refused what this provider cannot take.
            max_tokens = params.max_completion_tokens or params.max_tokens
            if max_tokens is not None:
                settings["max_tokens"] = max_tokens
            return settings
        # An OpenAI-protocol provider gets these as the client sent them, under their own names: PydanticAI
        # would send `max_tokens` as `max_completion_tokens` (which older vLLM, llama.cpp and Ollama servers
        # ignore), and leave out sampling fields its profile of the model does not expect.
        raw = params.model_dump(mode="json", include=set(RAW_OPENAI_FIELDS), exclude_none=True)
        if job.tools and job.tool_choice not in (None, "auto", "none"):
            # PydanticAI refuses a static "required" or a named function for an agent run; for one model
            # step ending in an external call it is exactly right, so pass it through to the provider.
            raw["tool_choice"] = job.tool_choice
        if raw:
            settings["extra_body"] = raw
        return settings


class _RunTranslator:
    """Follows one PydanticAI run: publishes its text and client tool calls as our events as they
    stream, and turns its result into our outcome."""

    def __init__(self, publisher: RunPublisher, *, client_tools: set[str]) -> None:
        self._publisher = publisher
        # Calls to these go back to the client; calls to the server's own tools are announced as they run.
        self._client_tools = client_tools
        self._text_parts: list[str] = []
        # Our own numbering of client tool calls, by the index of the response part that holds each.
        self._call_index_by_part: dict[int, int] = {}

    async def follow(self, events: AsyncIterator[AgentStreamEvent | AgentRunResultEvent[_AgentOutput]]) -> RunOutcome:
        async for event in events:
            match event:
                case PartStartEvent():
                    await self._part_started(event)
                case PartDeltaEvent():
                    await self._part_changed(event)
                case AgentRunResultEvent():
                    return self._outcome(event.result)
                case _:
                    # Part ends, final-result markers, tool handling and the rest add nothing to what
                    # the parts themselves stream: the answer is in the parts and the result.
                    pass
        raise RuntimeError("the agent run ended without a result")

    async def _part_started(self, event: PartStartEvent) -> None:
        part = event.part
        match part:
            case TextPart():
                await self._text(part.content)
            case ToolCallPart() if part.tool_name in self._client_tools:
                index = self._call_index_by_part.setdefault(event.index, len(self._call_index_by_part))
                await self._publisher.emit(
                    ClientToolCallDelta(
                        run_id=self._publisher.run_id,
                        attempt=self._publisher.attempt,
                        index=index,
                        call_id=part.tool_call_id,
                        name=part.tool_name,
                        arguments=_args_text(part.args),
                    )
                )
            case (
                ToolCallPart()
                | NativeToolCallPart()
                | NativeToolReturnPart()
                | ThinkingPart()
                | CompactionPart()
                | FilePart()
                | SpeechPart()
            ):
                pass  # the provider's own tools, reasoning and media are not part of the answer
            case _:
                assert_never(part)

    async def _part_changed(self, event: PartDeltaEvent) -> None:
        delta = event.delta
        match delta:
            case TextPartDelta():
                await self._text(delta.content_delta)
            case ToolCallPartDelta():
                await self._call_arguments(event.index, delta)
            case ThinkingPartDelta() | SpeechPartDelta():
                pass
            case _:
                assert_never(delta)

    async def _text(self, text: str) -> None:
        self._text_parts.append(text)
        await self._publisher.text(text)

    async def _call_arguments(self, part_index: int, delta: ToolCallPartDelta) -> None:
        """More of a client tool call's arguments; a delta for a part that never started as a call
        says nothing."""
        index = self._call_index_by_part.get(part_index)
        arguments = _args_text(delta.args_delta)
        if index is None or not arguments:
            return
        await self._publisher.emit(
            ClientToolCallDelta(
                run_id=self._publisher.run_id, attempt=self._publisher.attempt, index=index, arguments=arguments
            )
        )

    def _outcome(self, result: AgentRunResult[_AgentOutput]) -> RunOutcome:
        usage = Usage(prompt_tokens=result.usage.input_tokens, completion_tokens=result.usage.output_tokens)
        text = "".join(self._text_parts)
        # OpenAI's models gather a response's log probabilities here, streamed or not.
        logprobs = (result.response.provider_details or {}).get("logprobs")
        output = result.output
        match output:
            case DeferredToolRequests():
                calls = [
                    ToolCallSpec(
                        id=scrub(call.tool_call_id),
                        function=FunctionCall(name=call.tool_name, arguments=scrub(call.args_as_json_str())),
                    )
                    for call in output.calls
                ]
                # Calls to tools whose policy is `approve`: not run, and for the runner to tell.
                pending = [
                    PendingApproval(call_id=call.tool_call_id, tool=call.tool_name, arguments=call.args_as_dict())
                    for call in output.approvals
                ]
                return RunOutcome(
                    text=text,
                    finish_reason="tool_calls" if calls else "stop",
                    usage=usage,
                    client_tool_calls=calls,
                    logprobs=logprobs,
                    pending_approvals=pending,
                    # Where to go on from once they are decided: everything the agent said and did.
                    paused_state=_paused_state(result) if pending else None,
                )
            case str():
                return RunOutcome(text=text or output, usage=usage, logprobs=logprobs)
            case _:
                assert_never(output)


PAUSED_ENGINE = "pydantic-ai"


def _paused_state(result: AgentRunResult[_AgentOutput]) -> dict[str, Any]:
    return {
        "engine": PAUSED_ENGINE,
        "messages": ModelMessagesTypeAdapter.dump_python(result.all_messages(), mode="json"),
    }


def _resumed(job: ChatJob) -> tuple[list[ModelMessage], DeferredToolResults]:
    """The run as it paused, and its owner's decisions on the calls it paused at (PydanticAI's own way to
    go on: the approved calls run, the denied ones are answered with the reason)."""
    state = job.paused_state or {}
    if state.get("engine") != PAUSED_ENGINE:
        raise RunFailure("the run paused on another engine and cannot go on here", code="internal_error")
    messages = ModelMessagesTypeAdapter.validate_python(state.get("messages", []))
    decisions: dict[str, bool | ToolApproved | ToolDenied] = {
        decision.call_id: ToolApproved() if decision.approved else ToolDenied(_denied_message(decision.reason))
        for decision in job.decisions
    }
    return messages, DeferredToolResults(approvals=decisions)


def _denied_message(reason: str | None) -> str:
    return f"The user denied this call: {reason}" if reason else "The user denied this call."


def _client_tools(job: ChatJob) -> list[AgentToolDefinition]:
    return [
        AgentToolDefinition(
            name=tool.function.name,
            description=tool.function.description,
            parameters_json_schema=tool.function.parameters,
        )
        for tool in job.tools or ()
    ]


def _args_text(args: object) -> str:
    if args is None:
        return ""
    if isinstance(args, str):
        return args
    return json.dumps(args)
