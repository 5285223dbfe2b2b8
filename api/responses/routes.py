"""`/v1/responses`: OpenAI's Responses API on the same durable runs as chat completions.

A response is its run (`resp_<hex>` names `run_<hex>`), so a background response is a queued run,
polling reads the run, cancelling is the run's cancel, and a stream resumes by following the run again
from its first event: the writer numbers the same events the same way every time.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.exceptions import RedisError
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.headers import header_text
from api.relay.admission import idempotency_key
from api.relay.cancel import cancel_run, wait_until_finished
from api.relay.event_hub import Subscription
from api.relay.follow import follow_run
from api.relay.policy import conversation_policy
from api.relay.progress import AwaitingApproval, Detached, Failed, Restarted, RunProgress
from api.relay.resume_run import enqueue_resumed
from api.relay.sse import event_stream
from api.relay.start import StartedRun, start_run
from api.responses.items import ApprovalAnswer, approval_answers, input_item, input_item_of_chat, input_messages
from api.responses.schemas import ResponseCreateRequest
from api.responses.writer import ResponseWriter, response_id_of
from api.state import AppState
from domain import approvals, conversations, run_items, run_views
from domain.chat import ChatMessage, FunctionDefinition, ModelParams, ToolDefinition
from domain.content import check_part_sizes
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound, RunFailure, ServiceUnavailable, SwitchboardError
from domain.models import FINISHED, Run
from domain.pagination import parse_whole_number
from domain.passthrough import check_passable
from domain.run_request import ModelInput, RunRequest
from domain.run_views import RunView, unix_seconds

# What `include` asks for to get each output text's token log probabilities (`top_logprobs` per token).
LOGPROBS_INCLUDE = "message.output_text.logprobs"
_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{24})$")
# How long `POST /v1/responses/{id}/cancel` waits for the run to stop before answering as it stands.
CANCEL_WAIT_S = 5.0
# How long polling an unfinished response reads its replay log for the output so far.
PARTIAL_READ_S = 0.25
QUEUED_STATUS = {"queued": "queued", "running": "in_progress", "awaiting_approval": "in_progress"}


# ---------------------------------------------------------------------------------------------- create


async def create_response(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    data = await read_json(request, max_bytes=state.settings.max_chat_body_bytes)
    body = validate(ResponseCreateRequest, data)
    if body.max_tool_calls is not None:
        # It caps built-in tools (web search, file search), of which Switchboard has none.
        raise InvalidRequest("max_tool_calls is not supported: there are no built-in tools", param="max_tool_calls")
    assistant = state.assistants.find(body.model, user_id=user_id)
    if assistant is None:
        raise NotFound(f"The model '{body.model}' does not exist", param="model", code="model_not_found")
    answers = approval_answers(body.input)
    if answers:
        return await _answer_approvals(request, state, body, answers, user_id=user_id)
    messages = input_messages(body.input)
    check_part_sizes(messages, max_part_bytes=state.settings.max_part_bytes)
    conversation_key = await _conversation_key(state, body, user_id=user_id)
    run_request = _run_request(request, body, messages, user_id=user_id, conversation_key=conversation_key)
    check_passable(
        provider=assistant.provider or state.settings.llm_provider,
        assistant=body.model,
        engine=assistant.engine,
        params=run_request.params,
        messages=messages,
    )
    idempotency = idempotency_key(request, data, conversation=conversation_key)
    echo = _echo(body, conversation_key=run_request.conversation_key)

    if body.background and not body.stream:
        async with start_run(state, run_request, idempotency=idempotency) as queued:
            writer = _writer(queued.run_id, queued.created_at, body.model, echo)
            writer.status = "queued"
            return JSONResponse(writer.response(), headers=_headers(queued.run_id, queued.conversation_key))

    if not body.stream:
        started: StartedRun | None = None
        try:
            async with start_run(state, run_request, idempotency=idempotency) as started:
                writer = _writer(started.run_id, started.created_at, body.model, echo)
                await _collect(writer, started.progress)
                return JSONResponse(writer.response(), headers=_headers(started.run_id, started.conversation_key))
        except SwitchboardError as exc:
            if started is not None:
                exc.headers.update(_headers(started.run_id, started.conversation_key))
            raise

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(start_run(state, run_request, stop=shutdown, idempotency=idempotency))
        writer = _writer(run.run_id, run.created_at, body.model, echo)
        stream = _sse(stack.pop_all(), writer, run.progress, starting_after=0)
    return event_stream(
        stream,
        settings=state.settings,
        shutdown=shutdown,
        headers=_headers(run.run_id, run.conversation_key),
        open_streams=state.metrics.open_streams,
    )


async def _answer_approvals(
    request: Request, state: AppState, body: ResponseCreateRequest, answers: list[ApprovalAnswer], *, user_id: str
) -> Response:
    """`mcp_approval_response` items decide the calls the previous response stopped at; once none is
    pending, that response's run goes on, and this response is what it says from there."""
    if body.previous_response_id is None:
        raise InvalidRequest(
            "mcp_approval_response items answer the response named by previous_response_id",
            param="previous_response_id",
        )
    run = await _find_run(state, body.previous_response_id, user_id=user_id, param="previous_response_id")
    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        # Listening before the decision is written, so nothing the run says next is missed.
        subscription = await stack.enter_async_context(state.hub.subscribe(run.id))
        await subscription.ready()
        after = await _last_seq(state, run.id)
        resumed = False
        async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
            for answer in answers:
                decided = await approvals.decide(
                    connection,
                    user_id=user_id,
                    run_id=run.id,
                    call_id=answer.call_id,
                    decision="approve" if answer.approve else "deny",
                    reason=answer.reason,
                )
                resumed = resumed or decided.resumed
        if resumed:
            await enqueue_resumed(state, run.id)
        spec = await _spec(state, run.id)
        echo = {
            **_echo_of_spec(spec, conversation_key=run.conversation_key),
            "previous_response_id": body.previous_response_id,
            "metadata": body.metadata or {},
        }
        writer = _writer(run.id, run.created_at, body.model, echo)
        progress = _going_on(follow_run(state, subscription, stop=shutdown, from_start=True, after=after))
        headers = _headers(run.id, run.conversation_key)
        if not resumed:
            # Other calls of that response still wait for their answer: the run stays paused.
            writer.status = "completed"
            return JSONResponse(writer.response(), headers=headers)
        if not body.stream:
            async with stack.pop_all():
                await _collect(writer, progress)
            return JSONResponse(writer.response(), headers=headers)
        stream = _sse(stack.pop_all(), writer, progress, starting_after=0)
    return event_stream(
        stream, settings=state.settings, shutdown=shutdown, headers=headers, open_streams=state.metrics.open_streams
    )


async def _whole_run(
    state: AppState, subscription: Subscription, run: RunView, *, stop: anyio.Event | None = None
) -> AsyncIterator[RunProgress]:
    """The run from its first event, across the pauses its owner has decided: a response read back is
    all it said, not only what came before its first pause."""
    # A pause is over when the run has gone on since: it is not the run's state now, or it is not its last event.
    last_seq = await _last_seq(state, run.id) if run.status == "awaiting_approval" else None

    async def events() -> AsyncIterator[RunProgress]:
        after = 0
        while True:
            followed = follow_run(state, subscription, stop=stop, from_start=True, after=after)
            progress_items = _going_on(followed) if after else followed
            resumed_at = None
            async for progress in progress_items:
                if (
                    isinstance(progress, AwaitingApproval)
                    and progress.seq
                    and (last_seq is None or progress.seq < last_seq)
                ):
                    resumed_at = progress.seq
                    break
                yield progress
            close = getattr(followed, "aclose", None)
            if close is not None:
                await close()
            if resumed_at is None:
                return
            after = resumed_at

    return events()


async def _going_on(progress_items: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]:
    """A paused run followed from its pause: the attempt that goes on starts anew, which is no restart
    of anything this response showed."""
    said = False
    async for progress in progress_items:
        if isinstance(progress, Restarted) and not said:
            continue
        said = True
        yield progress


async def _last_seq(state: AppState, run_id: str) -> int:
    """Where the paused run's events stand: what comes after is its going on."""
    try:
        events = await state.event_log.read(run_id)
    except (RedisError, OSError):
        return 0
    return events[-1].seq if events else 0


async def _conversation_key(state: AppState, body: ResponseCreateRequest, *, user_id: str) -> str | None:
    """The conversation this turn continues: the previous response's (a response is a run of one), or
    the one named. None: a new one."""
    named = body.conversation_id()
    if named is not None and body.previous_response_id is not None:
        raise InvalidRequest("previous_response_id and conversation cannot both be given", param="previous_response_id")
    if named is not None:
        return conversations.parse_key(named, param="conversation")
    if body.previous_response_id is None:
        return None
    run = await _find_run(state, body.previous_response_id, user_id=user_id, param="previous_response_id")
    if run.conversation_key is None:
        raise InvalidRequest(
            f"Response '{body.previous_response_id}' was not stored; send the whole conversation instead",
            param="previous_response_id",
        )
    return run.conversation_key


def _run_request(
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


def _echo(body: ResponseCreateRequest, *, conversation_key: str | None) -> dict[str, Any]:
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
    echo = _echo(body, conversation_key=None)
    return {key: echo[key] for key in _KEPT_ECHO}


def _echo_of_spec(spec: dict[str, Any] | None, *, conversation_key: str | None) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- read back


async def retrieve_response(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await _find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    spec = await _spec(state, run.id)
    writer = _writer(run.id, run.created_at, run.assistant, _echo_of_spec(spec, conversation_key=run.conversation_key))
    if request.query_params.get("stream", "").lower() == "true":
        starting_after = _whole_number(request.query_params.get("starting_after"), param="starting_after")
        shutdown = anyio.Event()
        stack = contextlib.AsyncExitStack()
        async with stack:
            subscription = await stack.enter_async_context(state.hub.subscribe(run.id))
            await subscription.ready()
            progress = await _whole_run(state, subscription, run, stop=shutdown)
            stream = _sse(stack.pop_all(), writer, progress, starting_after=starting_after)
        return event_stream(
            stream,
            settings=state.settings,
            shutdown=shutdown,
            headers=_headers(run.id, run.conversation_key),
            open_streams=state.metrics.open_streams,
        )
    return JSONResponse(await _as_it_stands(state, run, writer), headers=_headers(run.id, run.conversation_key))


async def cancel_response(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await _find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    await cancel_run(state, user_id=user_id, run_id=run.id)
    await wait_until_finished(state, run.id, timeout_s=CANCEL_WAIT_S)
    run = await _find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    spec = await _spec(state, run.id)
    writer = _writer(run.id, run.created_at, run.assistant, _echo_of_spec(spec, conversation_key=run.conversation_key))
    return JSONResponse(await _as_it_stands(state, run, writer), headers=_headers(run.id, run.conversation_key))


async def list_input_items(request: Request) -> Response:
    """The items the response's request added to its conversation (those of an unstored response: its
    history as sent), newest first unless `order=asc`."""
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await _find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc", param="order")
    raw_limit = request.query_params.get("limit")
    limit = 20 if raw_limit is None else parse_whole_number(raw_limit, param="limit", minimum=1, maximum=100)
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        stored = await run_items.input_messages(connection, user_id=user_id, run_id=run.id)
    items = [input_item(message) for message in stored]
    if not stored and run.conversation_key is None:
        history = ModelInput.model_validate(await _spec(state, run.id) or {}).history or []
        items = [
            input_item_of_chat(message, item_id=f"msg_{run.id}_in{index}") for index, message in enumerate(history)
        ]
    if order == "desc":
        items.reverse()
    after = request.query_params.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )


async def delete_response(request: Request) -> Response:
    """Stop the response's run if it is going on, then remove it and everything it stored."""
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    response_id = request.path_params["response_id"]
    run = await _find_run(state, response_id, user_id=user_id, param="response_id")
    if run.status not in FINISHED:
        await cancel_run(state, user_id=user_id, run_id=run.id)
        await wait_until_finished(state, run.id, timeout_s=CANCEL_WAIT_S)
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        deleted = await run_items.delete_run(connection, user_id=user_id, run_id=run.id)
    if not deleted:
        raise NotFound(f"No response found with id '{response_id}'", param="response_id")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _as_it_stands(state: AppState, run: RunView, writer: ResponseWriter) -> dict[str, Any]:
    """A finished run's whole Response (its events replayed, or its stored outcome); an unfinished
    one's output so far: what its replay log gives within `PARTIAL_READ_S`."""
    finished = run.status in (*FINISHED, "awaiting_approval")
    async with state.hub.subscribe(run.id) as subscription:
        await subscription.ready()
        # The writer keeps a failure as the Response's `error`.
        progress = await _whole_run(state, subscription, run)
        try:
            with contextlib.suppress(RunFailure), anyio.move_on_after(None if finished else PARTIAL_READ_S):
                await _collect(writer, progress)
        finally:
            # Stopped mid-way: closed here, while its subscription is still open.
            close = getattr(progress, "aclose", None)
            if close is not None:
                await close()
    if writer.status in ("queued", "in_progress"):
        # Still going (it may have ended since its row was read: the next poll says so).
        writer.status = QUEUED_STATUS.get(run.status, "in_progress") if not writer.output else "in_progress"
    return writer.response()


async def _find_run(state: AppState, response_id: str, *, user_id: str, param: str) -> RunView:
    """The run a response id names; another user's is missing, as far as the caller can tell."""
    matched = _RESPONSE_ID.match(response_id)
    run = None
    if matched is not None:
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            run = await run_views.get(connection, user_id=user_id, run_id="run_" + matched.group(1))
    if run is None:
        raise NotFound(f"No response found with id '{response_id}'", param=param)
    return run


async def _spec(state: AppState, run_id: str) -> dict[str, Any] | None:
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        return (await connection.execute(select(Run.spec).where(Run.id == run_id))).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------- rendering


def _writer(run_id: str, created_at: Any, model: str, echo: dict[str, Any]) -> ResponseWriter:
    return ResponseWriter(
        response_id=response_id_of(run_id), created_at=unix_seconds(created_at) or 0, model=model, echo=echo
    )


async def _collect(writer: ResponseWriter, progress_items: AsyncIterator[RunProgress]) -> None:
    writer.opening()
    async for progress in progress_items:
        if isinstance(progress, Restarted):
            # Nothing was shown yet: the new attempt's answer is the answer.
            writer.reset()
            continue
        if isinstance(progress, Detached):
            raise ServiceUnavailable(progress.message, code=progress.code)
        writer.feed(progress)
        if isinstance(progress, Failed):
            raise RunFailure(progress.message, code=progress.code)
        if writer.status not in ("in_progress", "queued"):
            return


async def _sse(
    cleanup: contextlib.AsyncExitStack,
    writer: ResponseWriter,
    progress_items: AsyncIterator[RunProgress],
    *,
    starting_after: int,
) -> AsyncIterator[dict[str, str]]:
    """Each event as SSE, its `event:` its `type` and its `id:` its `sequence_number`; those up to
    `starting_after` were shown before and are left out.

    The last event always goes out: once the replay log is gone, the response is rebuilt from what the
    run stored, in fewer events than it streamed live, so a client can be past all of them. It then
    gets the last one, numbered on from what it saw: its `response` is the whole answer."""
    async with cleanup:
        for event in writer.opening():
            if event["sequence_number"] > starting_after:
                yield _sse_event(event)
        async for progress in progress_items:
            events = writer.feed(progress)
            ended = writer.broken or writer.status not in ("in_progress", "queued")
            for event in events:
                if event["sequence_number"] > starting_after:
                    yield _sse_event(event)
            if ended:
                if events and events[-1]["sequence_number"] <= starting_after:
                    yield _sse_event({**events[-1], "sequence_number": starting_after + 1})
                return


def _sse_event(event: dict[str, Any]) -> dict[str, str]:
    return {"event": event["type"], "id": str(event["sequence_number"]), "data": json.dumps(event)}


def _whole_number(raw: str | None, *, param: str) -> int:
    if raw is None or not raw.strip():
        return 0
    return parse_whole_number(raw, param=param)


def _headers(run_id: str, conversation_key: str | None) -> dict[str, str]:
    headers = {"X-Run-ID": run_id}
    if conversation_key:
        headers["X-Conversation-ID"] = header_text(conversation_key)
    return headers
