"""The assistants of the assistants file: each on its engine, with its own model, instructions and MCP tools.

`pydantic-ai` assistants run on the general assistant's PydanticAI runner, given the assistant's
instructions and its tools beside the client's own; `openai-agents` assistants run an Agents SDK agent
as the todo assistant does, with the assistant's tools as its MCP server. Calls and results of the MCP
tools go out as the run's `tool.call` and `tool.result` events either way (`workers/assistant_tools.py`),
and a call that needs approval pauses the run (`workers/approvals.py`), each engine its own way: the
Agents SDK's in `workers/agents_pause.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx2
import openai
from agents import Agent, RunConfig, Runner, RunState, TResponseInputItem
from agents.models.interface import Model as AgentsModel
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent
from pydantic_ai.exceptions import UserError

from domain.assistant_file import FileAssistant, ModelChoice
from domain.chat import ChatMessage
from domain.errors import ConfigurationError
from domain.events import Usage
from domain.run_request import ChatJob
from domain.settings import Settings
from domain.tool_policy import PendingApproval
from workers.agent_items import to_input_items
from workers.agent_runner import AgentRunner, RunOutcome
from workers.agents_model import agents_model_settings, create_agents_model
from workers.agents_pause import paused_state, resumed_state
from workers.approvals import stop_for_approval
from workers.approved_calls import ApprovedCalls
from workers.assistant_tools import AgentsMcpTools, AssistantTools, PydanticMcpToolset, approval_gated
from workers.general_agent import GeneralAgentRunner
from workers.llm import create_model, speaks_openai_chat
from workers.mcp_servers import McpServerPool
from workers.provider_errors import provider_errors
from workers.publisher import RunPublisher

# Model steps one run may take: a few tool calls and the answer.
MAX_TURNS = 10


class PydanticAiAssistantRunner:
    def __init__(self, *, general: GeneralAgentRunner, tools: AssistantTools) -> None:
        self._general = general
        self._tools = tools

    async def run(self, job: ChatJob, history: Sequence[ChatMessage], publisher: RunPublisher) -> RunOutcome:
        toolset = PydanticMcpToolset(self._tools, publisher)
        outcome = await self._general.run(job, history, publisher, server_tools=[approval_gated(toolset)])
        if not outcome.pending_approvals:
            return outcome
        pending = [replace(call, tool=toolset.qualified_name(call.tool)) for call in outcome.pending_approvals]
        return await stop_for_approval(publisher, outcome, pending)


class AgentsSdkAssistantRunner:
    def __init__(self, *, assistant: FileAssistant, model: AgentsModel, tools: AssistantTools) -> None:
        self._assistant = assistant
        self._model = model
        self._tools = tools

    async def run(self, job: ChatJob, history: Sequence[ChatMessage], publisher: RunPublisher) -> RunOutcome:
        mcp_tools = AgentsMcpTools(self._tools, publisher=publisher)
        # A run that goes on after a pause gets the same agent as a fresh one: its state names the agent
        # and the MCP server it paused in, and the SDK checks them against these.
        agent: Agent[Any] = Agent(
            name=self._assistant.name,
            instructions=self._assistant.instructions,
            model=self._model,
            model_settings=agents_model_settings(job),
            mcp_servers=[mcp_tools],
        )
        run_input: list[TResponseInputItem] | RunState[Any] = (
            await resumed_state(agent, job.paused_state, job.decisions)
            if job.paused_state is not None
            else to_input_items(history)
        )
        streamed = Runner.run_streamed(
            agent,
            input=run_input,
            max_turns=MAX_TURNS,
            run_config=RunConfig(workflow_name=f"switchboard {self._assistant.name}"),
        )
        text_parts: list[str] = []
        try:
            with provider_errors(max_turns=MAX_TURNS):
                async for event in streamed.stream_events():
                    if isinstance(event, RawResponsesStreamEvent) and isinstance(event.data, ResponseTextDeltaEvent):
                        text_parts.append(event.data.delta)
                        await publisher.text(event.data.delta)
        finally:
            if not streamed.is_complete:
                streamed.cancel()
        # A run that went on from a pause carries the usage of its steps before the pause in its state, so
        # this is the whole run's.
        usage = streamed.context_wrapper.usage
        outcome = RunOutcome(
            text="".join(text_parts) or str(streamed.final_output or ""),
            usage=Usage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens),
        )
        if not streamed.interruptions:
            return outcome
        pending = [
            PendingApproval(
                # The model's own id of the call: the decisions come back by it.
                call_id=item.call_id or "",
                tool=mcp_tools.qualified_name(item.name or ""),
                arguments=_arguments(item.arguments),
            )
            for item in streamed.interruptions
        ]
        return await stop_for_approval(publisher, replace(outcome, paused_state=paused_state(streamed)), pending)


def build_file_runners(
    assistants: Sequence[FileAssistant],
    settings: Settings,
    http_client: httpx2.AsyncClient,
    *,
    pool: McpServerPool,
    approved_calls: ApprovedCalls,
) -> dict[str, AgentRunner]:
    """A runner for each assistant of the file. A model that cannot be built is a configuration error."""
    runners: dict[str, AgentRunner] = {}
    for assistant in assistants:
        assistant_settings = _settings_for(settings, assistant.model)
        tools = AssistantTools(assistant, pool.connections(assistant.name), approved_calls=approved_calls)
        try:
            if assistant.engine == "pydantic-ai":
                general = GeneralAgentRunner(
                    create_model(assistant_settings, http_client),
                    pass_raw_openai_fields=speaks_openai_chat(assistant_settings),
                    instructions=assistant.instructions,
                )
                runners[assistant.name] = PydanticAiAssistantRunner(general=general, tools=tools)
            else:
                model = create_agents_model(assistant_settings, http_client)
                runners[assistant.name] = AgentsSdkAssistantRunner(assistant=assistant, model=model, tools=tools)
        except (ConfigurationError, UserError, openai.OpenAIError) as exc:
            message = exc.message if isinstance(exc, ConfigurationError | UserError) else str(exc)
            raise ConfigurationError(
                f"assistants.{assistant.name}.model: its {assistant_settings.llm_provider} model cannot be used: "
                f"{message}"
            ) from exc
    return runners


def _settings_for(settings: Settings, model: ModelChoice | None) -> Settings:
    """The settings an assistant's model is built from: the configured provider's, or another provider's
    own defaults (its standard base URL and API key variable, e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)."""
    if model is None:
        return settings
    if model.provider == settings.llm_provider:
        return settings.model_copy(update={"llm_model": model.name})
    return settings.model_copy(
        update={"llm_provider": model.provider, "llm_model": model.name, "llm_base_url": None, "llm_api_key": None}
    )


def _arguments(arguments: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}
