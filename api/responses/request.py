"""A `POST /v1/responses` body as the run it starts: its model input, and the settings every Response
of it repeats (its "echo"), also as read back later from what the run kept."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from api.relay.policy import conversation_policy
from api.responses.schemas import ResponseCreateRequest
from api.state import AppState
from domain import conversations, run_views
from domain.chat import ChatMessage, FunctionDefinition, ModelParams, ToolDefinition
from domain.errors import InvalidRequest
from domain.run_request import ModelInput, RunRequest
from domain.run_views import RunView

# What `include` asks for to get each output text's token log probabilities (`top_logprobs` per token).
LOGPROBS_INCLUDE = "message.output_text.logprobs"


async def conversation_key_of(state: AppState, body: ResponseCreateRequest, *, user_id: str) -> str | None:
    """The conversation this turn continues: the previous response's (a response is a run of one), or
    the one named. None: a new one."""
    named = body.conversation_id()
    if named is not None and body.previous_response_id is not None:
        raise InvalidRequest("previous_response_id and conversation cannot both be given", param="previous_response_id")
    if named is not None:
        return conversations.parse_key(named, param="conversation")
    if body.previous_response_id is None:
        return None
    run = await find_run(state, body.previous_response_id, user_id=user_id, param="previous_response_id")
    if run.conversation_key is None:
        raise InvalidRequest(
            f"Response '{body.previous_response_id}' was not stored; send the whole conversation instead",
            param="previous_response_id",
        )
    return run.conversation_key


def run_request_of(
    request: Request,
    body: ResponseCreateRequest,
    messages: list[ChatMessage],
    *,
    user_id: str,
    conversation_key: str | None,
) -> RunRequest:
    system = [message for message in messages if message.role in ("system", "developer")]
    if body.instructions:
        system.insert(0, ChatMessage(role="system", content=body.instructions))
    conversational = [message for message in messages if message.role not in ("system", "developer")]
    if not conversational:
        raise InvalidRequest("input must include at least one user message or function call output", param="input")
    if conversational[-1].role == "assistant":
        raise InvalidRequest("the last input item must not be an assistant message", param="input")
    continuing = conversation_key is not None
    # A new conversation sent whole (as stateless clients do): what was sent is the history; only what
    # follows the last assistant message is the new turn.
    assistants = [i for i, message in enumerate(conversational) if message.role == "assistant"]
    whole = not continuing and len(conversational) > 1
    new_messages = conversational[assistants[-1] + 1 :] if assistants and not continuing else conversational
    # `store: false` with nothing to continue: answered, never stored.
    key = None if not body.store and not continuing else conversation_key or conversations.new_conversation_key()
    return RunRequest(
        user_id=user_id,
        request_id=request.state.request_id,
        assistant=body.model,
        conversation_key=key,
        new_conversation=conversation_key is None,
        new_messages=new_messages,
        conversation_policy=conversation_policy(request, request.state.app.settings),
        history=[*system, *conversational] if (whole or key is None) else None,
        system_messages=system,
        tools=[_tool_definition(tool) for tool in body.tools] if body.tools else None,
        tool_choice=_tool_choice(body.tool_choice),
        params=ModelParams(
            temperature=body.temperature,
            top_p=body.top_p,
            max_completion_tokens=body.max_output_tokens,
            parallel_tool_calls=body.parallel_tool_calls,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logprobs=True if LOGPROBS_INCLUDE in (body.include or ()) else None,
            top_logprobs=body.top_logprobs if LOGPROBS_INCLUDE in (body.include or ()) else None,
            reasoning_effort=body.reasoning.effort if body.reasoning else None,
            response_format=_response_format(body),
        ),
        echo=_kept_echo(body),
    )


def _tool_definition(tool: Any) -> ToolDefinition:
    parameters = tool.parameters or {"type": "object", "properties": {}}
    return ToolDefinition(
        function=FunctionDefinition(
            name=tool.name, description=tool.description, parameters=parameters, strict=tool.strict
        )
    )


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Responses names a forced function `{"type": "function", "name": ...}`; chat completions nests it."""
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice must be none, auto, required or a function by name", param="tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _response_format(body: ResponseCreateRequest) -> dict[str, Any] | None:
    """`text.format` in chat completions' `response_format` shape, as the providers take it."""
    fmt = body.text.format if body.text else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), dict):
        schema = {key: fmt[key] for key in ("name", "schema", "description", "strict") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "text.format must be text, json_object or json_schema with name and schema", param="text.format"
    )


def echo_of(body: ResponseCreateRequest, *, conversation_key: str | None) -> dict[str, Any]:
    """The request's settings as every Response repeats them."""
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "top_logprobs": body.top_logprobs or 0,
        "max_tool_calls": None,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
        "tools": [_tool_body(tool.name, tool.description, tool.parameters, tool.strict) for tool in body.tools or ()],
        "tool_choice": body.tool_choice or "auto",
        "text": {"format": (body.text.format if body.text and body.text.format else {"type": "text"})},
        "truncation": body.truncation or "disabled",
        "previous_response_id": body.previous_response_id,
        "conversation": {"id": conversation_key} if conversation_key else None,
        "store": body.store,
        "background": body.background,
        "user": body.user,
        "reasoning": {"effort": body.reasoning.effort, "summary": None} if body.reasoning else None,
        "service_tier": "default",
    }


# What a response repeats of its request that the run's model input does not already hold.
_KEPT_ECHO = (
    "metadata",
    "text",
    "truncation",
    "previous_response_id",
    "background",
    "user",
    "reasoning",
    "top_logprobs",
    "safety_identifier",
    "prompt_cache_key",
)


def _kept_echo(body: ResponseCreateRequest) -> dict[str, Any]:
    echo = echo_of(body, conversation_key=None)
    return {key: echo[key] for key in _KEPT_ECHO}


def echo_of_spec(spec: dict[str, Any] | None, *, conversation_key: str | None) -> dict[str, Any]:
    """The echo of a response read back later: what its run's row kept of the request."""
    model_input = ModelInput.model_validate(spec or {})
    params = model_input.params
    choice = model_input.tool_choice
    if isinstance(choice, dict):
        choice = {"type": "function", "name": choice.get("function", {}).get("name")}
    instructions = "\n".join(message.text for message in model_input.system_messages) or None
    return {
        "instructions": instructions,
        "max_output_tokens": params.max_completion_tokens,
        "metadata": {},
        "parallel_tool_calls": True if params.parallel_tool_calls is None else params.parallel_tool_calls,
        "temperature": 1.0 if params.temperature is None else params.temperature,
        "top_p": 1.0 if params.top_p is None else params.top_p,
        "presence_penalty": params.presence_penalty or 0.0,
        "frequency_penalty": params.frequency_penalty or 0.0,
        "top_logprobs": 0,
        "max_tool_calls": None,
        "safety_identifier": None,
        "prompt_cache_key": None,
        "tools": [
            _tool_body(tool.function.name, tool.function.description, tool.function.parameters, tool.function.strict)
            for tool in model_input.tools or ()
        ],
        "tool_choice": choice or "auto",
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "previous_response_id": None,
        "conversation": {"id": conversation_key} if conversation_key else None,
        "store": conversation_key is not None,
        "background": False,
        "user": None,
        "reasoning": None,
        "service_tier": "default",
        **(model_input.echo or {}),
    }


def _tool_body(
    name: str, description: str | None, parameters: dict[str, Any] | None, strict: bool | None
) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": parameters,
        "strict": True if strict is None else strict,
    }


async def find_run(state: AppState, response_id: str, *, user_id: str, param: str) -> RunView:
    """The run a response id names (a response is a run of one); another user's is missing."""
    return await run_views.find_by_public_id(
        state.db_engine, response_id, prefix="resp_", user_id=user_id, kind="response", param=param
    )
