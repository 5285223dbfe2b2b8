"""`/v1/responses`: OpenAI's Responses API on the same durable runs as chat completions.

A response is its run (`resp_<hex>` names `run_<hex>`), so a background response is a queued run,
polling reads the run, cancelling is the run's cancel, and a stream resumes by following the run again
from its first event: the writer numbers the same events the same way every time.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.headers import header_text
from api.relay.admission import idempotency_key
from api.relay.cancel import cancel_run, wait_until_finished
from api.relay.follow import follow_run
from api.relay.resume_run import enqueue_resumed
from api.relay.sse import event_stream
from api.relay.start import StartedRun, start_run
from api.responses.items import ApprovalAnswer, approval_answers, input_item, input_item_of_chat, input_messages
from api.responses.request import conversation_key_of, echo_of, echo_of_spec, find_run, run_request_of
from api.responses.schemas import ResponseCreateRequest
from api.responses.stream import as_it_stands, as_sse, collect, going_on, last_seq_of_log, new_writer, whole_run
from api.state import AppState
from domain import approvals, run_items
from domain.content import check_part_sizes
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound, SwitchboardError
from domain.models import FINISHED, Run
from domain.pagination import parse_whole_number
from domain.passthrough import check_passable
from domain.run_request import ModelInput

# How long `POST /v1/responses/{id}/cancel` waits for the run to stop before answering as it stands.
CANCEL_WAIT_S = 5.0


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
    conversation_key = await conversation_key_of(state, body, user_id=user_id)
    run_request = run_request_of(request, body, messages, user_id=user_id, conversation_key=conversation_key)
    check_passable(
        provider=assistant.provider or state.settings.llm_provider,
        assistant=body.model,
        engine=assistant.engine,
        params=run_request.params,
        messages=messages,
    )
    idempotency = idempotency_key(request, data, conversation=conversation_key)
    echo = echo_of(body, conversation_key=run_request.conversation_key)

    if body.background and not body.stream:
        async with start_run(state, run_request, idempotency=idempotency) as queued:
            writer = new_writer(queued.run_id, queued.created_at, body.model, echo)
            writer.status = "queued"
            return JSONResponse(writer.response(), headers=_headers(queued.run_id, queued.conversation_key))

    if not body.stream:
        started: StartedRun | None = None
        try:
            async with start_run(state, run_request, idempotency=idempotency) as started:
                writer = new_writer(started.run_id, started.created_at, body.model, echo)
                await collect(writer, started.progress)
                return JSONResponse(writer.response(), headers=_headers(started.run_id, started.conversation_key))
        except SwitchboardError as exc:
            if started is not None:
                exc.headers.update(_headers(started.run_id, started.conversation_key))
            raise

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(start_run(state, run_request, stop=shutdown, idempotency=idempotency))
        writer = new_writer(run.run_id, run.created_at, body.model, echo)
        stream = as_sse(stack.pop_all(), writer, run.progress, starting_after=0)
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
    run = await find_run(state, body.previous_response_id, user_id=user_id, param="previous_response_id")
    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        # Listening before the decision is written, so nothing the run says next is missed.
        subscription = await stack.enter_async_context(state.hub.subscribe(run.id))
        await subscription.ready()
        after = await last_seq_of_log(state, run.id)
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
            **echo_of_spec(spec, conversation_key=run.conversation_key),
            "previous_response_id": body.previous_response_id,
            "metadata": body.metadata or {},
        }
        writer = new_writer(run.id, run.created_at, body.model, echo)
        progress = going_on(follow_run(state, subscription, stop=shutdown, from_start=True, after=after))
        headers = _headers(run.id, run.conversation_key)
        if not resumed:
            # Other calls of that response still wait for their answer: the run stays paused.
            writer.status = "completed"
            return JSONResponse(writer.response(), headers=headers)
        if not body.stream:
            async with stack.pop_all():
                await collect(writer, progress)
            return JSONResponse(writer.response(), headers=headers)
        stream = as_sse(stack.pop_all(), writer, progress, starting_after=0)
    return event_stream(
        stream, settings=state.settings, shutdown=shutdown, headers=headers, open_streams=state.metrics.open_streams
    )


# ---------------------------------------------------------------------------------------------- read back


async def retrieve_response(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    spec = await _spec(state, run.id)
    writer = new_writer(
        run.id, run.created_at, run.assistant, echo_of_spec(spec, conversation_key=run.conversation_key)
    )
    if request.query_params.get("stream", "").lower() == "true":
        starting_after = _whole_number(request.query_params.get("starting_after"), param="starting_after")
        shutdown = anyio.Event()
        stack = contextlib.AsyncExitStack()
        async with stack:
            subscription = await stack.enter_async_context(state.hub.subscribe(run.id))
            await subscription.ready()
            progress = await whole_run(state, subscription, run, stop=shutdown)
            stream = as_sse(stack.pop_all(), writer, progress, starting_after=starting_after)
        return event_stream(
            stream,
            settings=state.settings,
            shutdown=shutdown,
            headers=_headers(run.id, run.conversation_key),
            open_streams=state.metrics.open_streams,
        )
    return JSONResponse(await as_it_stands(state, run, writer), headers=_headers(run.id, run.conversation_key))


async def cancel_response(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    await cancel_run(state, user_id=user_id, run_id=run.id)
    await wait_until_finished(state, run.id, timeout_s=CANCEL_WAIT_S)
    run = await find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
    spec = await _spec(state, run.id)
    writer = new_writer(
        run.id, run.created_at, run.assistant, echo_of_spec(spec, conversation_key=run.conversation_key)
    )
    return JSONResponse(await as_it_stands(state, run, writer), headers=_headers(run.id, run.conversation_key))


async def list_input_items(request: Request) -> Response:
    """The items the response's request added to its conversation (those of an unstored response: its
    history as sent), newest first unless `order=asc`."""
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run = await find_run(state, request.path_params["response_id"], user_id=user_id, param="response_id")
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
    run = await find_run(state, response_id, user_id=user_id, param="response_id")
    if run.status not in FINISHED:
        await cancel_run(state, user_id=user_id, run_id=run.id)
        await wait_until_finished(state, run.id, timeout_s=CANCEL_WAIT_S)
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        deleted = await run_items.delete_run(connection, user_id=user_id, run_id=run.id)
    if not deleted:
        raise NotFound(f"No response found with id '{response_id}'", param="response_id")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _spec(state: AppState, run_id: str) -> dict[str, Any] | None:
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        return (await connection.execute(select(Run.spec).where(Run.id == run_id))).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------- rendering


def _whole_number(raw: str | None, *, param: str) -> int:
    if raw is None or not raw.strip():
        return 0
    return parse_whole_number(raw, param=param)


def _headers(run_id: str, conversation_key: str | None) -> dict[str, str]:
    headers = {"X-Run-ID": run_id}
    if conversation_key:
        headers["X-Conversation-ID"] = header_text(conversation_key)
    return headers
