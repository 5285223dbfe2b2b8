"""The general assistant: a PydanticAI agent, with the client's own tools offered as external tools.

When the model calls a client-declared tool, the run ends there and the call goes back to the client
(OpenAI's `finish_reason: "tool_calls"`); the client runs it and sends the result in its next request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic_ai import Agent, AgentRunResultEvent, DeferredToolRequests
from pydantic_ai.messages import (
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition as AgentToolDefinition
from pydantic_ai.toolsets.external import ExternalToolset

from domain.chat import ChatMessage, FunctionCall, ToolCallSpec
from domain.events import ClientToolCallDelta, Usage
from domain.run_request import ChatJob
from workers.agent_runner import RunOutcome
from workers.history import to_model_messages
from workers.publisher import RunPublisher

INSTRUCTIONS = (
    "You are Switchboard's general assistant. Answer clearly and concisely. "
    "When the user offers tools, call one only when it helps answer the request."
)


class GeneralAgentRunner:
    def __init__(self, model: Model, *, pass_raw_openai_fields: bool) -> None:
        self._agent: Agent[None, str | DeferredToolRequests] = Agent(
            model,
            instructions=INSTRUCTIONS,
            output_type=[str, DeferredToolRequests],
        )
        self._pass_raw_openai_fields = pass_raw_openai_fields

    async def run(self, job: ChatJob, history: Sequence[ChatMessage], publisher: RunPublisher) -> RunOutcome:
        toolsets = [ExternalToolset(_client_tools(job))] if job.tools and job.tool_choice != "none" else []
        text_parts: list[str] = []
        # Our own numbering of client tool calls, by the index of the response part that holds each.
        call_index_by_part: dict[int, int] = {}
        async with self._agent.run_stream_events(
            message_history=to_model_messages(history),
            model_settings=self._model_settings(job),
            toolsets=toolsets,
            infer_name=False,
        ) as events:
            async for event in events:
                if isinstance(event, PartStartEvent):
                    part = event.part
                    if isinstance(part, TextPart):
                        text_parts.append(part.content)
                        await publisher.text(part.content)
                    elif isinstance(part, ToolCallPart):
                        index = call_index_by_part.setdefault(event.index, len(call_index_by_part))
                        await publisher.emit(
                            ClientToolCallDelta(
                                run_id=publisher.run_id,
                                attempt=publisher.attempt,
                                index=index,
                                call_id=part.tool_call_id,
                                name=part.tool_name,
                                arguments=_args_text(part.args),
                            )
                        )
                elif isinstance(event, PartDeltaEvent):
                    delta = event.delta
                    if isinstance(delta, TextPartDelta):
                        text_parts.append(delta.content_delta)
                        await publisher.text(delta.content_delta)
                    elif isinstance(delta, ToolCallPartDelta) and event.index in call_index_by_part:
                        arguments = _args_text(delta.args_delta)
                        if arguments:
                            await publisher.emit(
                                ClientToolCallDelta(
                                    run_id=publisher.run_id,
                                    attempt=publisher.attempt,
                                    index=call_index_by_part[event.index],
                                    arguments=arguments,
                                )
                            )
                elif isinstance(event, AgentRunResultEvent):
                    usage = event.result.usage
                    run_usage = Usage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens)
                    output = event.result.output
                    if isinstance(output, DeferredToolRequests):
                        calls = [
                            ToolCallSpec(
                                id=call.tool_call_id,
                                function=FunctionCall(name=call.tool_name, arguments=call.args_as_json_str()),
                            )
                            for call in output.calls
                        ]
                        return RunOutcome(
                            text="".join(text_parts),
                            finish_reason="tool_calls",
                            usage=run_usage,
                            client_tool_calls=calls,
                        )
                    return RunOutcome(text="".join(text_parts) or output, usage=run_usage)
        raise RuntimeError("the agent run ended without a result")

    def _model_settings(self, job: ChatJob) -> ModelSettings:
        params = job.params
        settings: ModelSettings = {"max_retries": 0}
        if params.temperature is not None:
            settings["temperature"] = params.temperature
        if params.top_p is not None:
            settings["top_p"] = params.top_p
        if params.max_tokens is not None:
            settings["max_tokens"] = params.max_tokens
        if params.stop:
            settings["stop_sequences"] = params.stop
        if params.parallel_tool_calls is not None and job.tools:
            settings["parallel_tool_calls"] = params.parallel_tool_calls
        if self._pass_raw_openai_fields and job.tools and job.tool_choice not in (None, "auto", "none"):
            # PydanticAI refuses a static "required" or a named function for an agent run; for one model
            # step ending in an external call it is exactly right, so pass it through to the provider.
            settings["extra_body"] = {"tool_choice": job.tool_choice}
        return settings


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
