"""Every HTTP operation Switchboard serves, each with the models its route validates.

Request bodies are the surfaces' own models (and ChatKit's and MCP's request types, as the routes
take them). Query strings and headers are parsed by hand in the routes; their models here are built
from the same constants the parsers check against, so a new status or policy shows up in both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from mcp_types import ClientRequest
from mcp_types.jsonrpc import RequestId
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from api.chatkit.route import CHATKIT_PATH, SUPPORTED
from api.frontend_users import ID_PATTERN, ID_RULE, MAX_ID_CHARS
from api.mcp import MCP_PATH
from api.metrics import METRICS_PATH
from api.openai.schemas import ChatCompletionRequest
from api.openapi._document import EVENT_STREAM, JSON, Operation
from api.responses.schemas import ResponseCreateRequest
from api.runs_api.approvals import ApprovalDecision
from api.todo.chat import TodoChatRequest
from domain import admission, conversations
from domain.models import RunStatus
from domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from domain.run_request import ConversationPolicy
from domain.tasks import TaskStatus

Limit = Annotated[
    int, Field(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
]
EventNumber = Annotated[int, Field(ge=0, description="Start after this event (the SSE `id:` of the last one seen)")]
ConversationKey = Annotated[str, Field(min_length=1, max_length=conversations.MAX_KEY_LENGTH)]


class _Parameters(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


EndUserId = Annotated[
    str,
    Field(
        max_length=MAX_ID_CHARS,
        pattern=f"^{ID_PATTERN.pattern}$",
        description=f"From a key in SWITCHBOARD_TRUSTED_FRONTEND_KEYS only (ignored from any other): the end user "
        f"the front end calls for, who is then `<key owner>/<this id>`; {ID_RULE}",
    ),
]


class CallerHeaders(_Parameters):
    """Who the caller is, beyond the credentials: a trusted front end's end user."""

    openwebui_user_id: Annotated[EndUserId | None, Field(alias="X-OpenWebUI-User-Id")] = None
    switchboard_user: Annotated[EndUserId | None, Field(alias="X-Switchboard-User")] = None


class PageQuery(_Parameters):
    limit: Limit | None = None
    cursor: Annotated[str | None, Field(description="The `next_cursor` of the previous page")] = None


class TasksQuery(PageQuery):
    status: TaskStatus = "all"


class RunsQuery(_Parameters):
    conversation_id: Annotated[str | None, Field(description="Only this conversation's runs")] = None
    status: Annotated[RunStatus | None, Field(description="Only runs in this state")] = None
    limit: Limit | None = None
    after: Annotated[str | None, Field(description="The `next_cursor` of the previous page")] = None


class ResumeQuery(_Parameters):
    after: EventNumber | None = None


class ResumeHeaders(_Parameters):
    last_event_id: Annotated[EventNumber | None, Field(alias="Last-Event-ID")] = None


class ResponseStreamQuery(_Parameters):
    stream: Annotated[bool | None, Field(description="`true`: the response's events as Server-Sent Events")] = None
    starting_after: Annotated[EventNumber | None, Field(description="Stream the events after this number")] = None


class InputItemsQuery(_Parameters):
    order: Literal["asc", "desc"] = "desc"
    limit: Annotated[int | None, Field(ge=1, le=100, description="Items per page, 1 to 100 (default 20)")] = None
    after: Annotated[str | None, Field(description="The `last_id` of the previous page")] = None


class TurnHeaders(_Parameters):
    """What a request that starts a run may say about it."""

    idempotency_key: Annotated[
        str | None,
        Field(
            alias="Idempotency-Key",
            min_length=1,
            max_length=admission.MAX_KEY_LENGTH,
            pattern=r"^[ -~]+$",
            description="Retry safely: the same user and key within 24 hours get the same run",
        ),
    ] = None
    conversation_policy: Annotated[
        ConversationPolicy | None,
        Field(alias="X-Conversation-Policy", description="What to do when the conversation is busy"),
    ] = None


class ChatCompletionHeaders(TurnHeaders):
    conversation_id: Annotated[
        ConversationKey | None, Field(alias="X-Conversation-ID", description="The conversation, by your own name")
    ] = None
    openwebui_chat_id: Annotated[
        ConversationKey | None,
        Field(
            alias="X-OpenWebUI-Chat-Id",
            description="Open WebUI's name for the conversation; its `temporary:` and `local:` chats are answered "
            "and never stored",
        ),
    ] = None


class _JsonRpcEnvelope(BaseModel):
    jsonrpc: Literal["2.0"]
    id: RequestId


def _jsonrpc(request_type: type[BaseModel]) -> type[BaseModel]:
    """An MCP request with the JSON-RPC envelope it travels in over HTTP."""
    return create_model(f"JSONRPC{request_type.__name__}", __base__=(_JsonRpcEnvelope, request_type))


def _one_of(types: tuple[type[BaseModel], ...], *, discriminator: str) -> TypeAdapter[Any]:
    # A union of a tuple known only at run time: a value for the type checker, a type for pydantic.
    union: Any = Union[types]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator=discriminator)])


OWN_USER = {"user_id": "The caller's own user id (`GET /api/me`), or `me`; another is 403"}
ERRORS_OF_A_TURN: dict[int, str | None] = {
    404: None,
    409: None,
    413: None,
    429: None,
    502: None,
    503: None,
    504: None,
}

OPERATIONS: list[Operation] = [
    # ---------------------------------------------------------------- the service itself
    Operation(
        method="get",
        path="/healthz",
        operation_id="healthz",
        summary="The process is up",
        tag="service",
        responses={200: None},
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/readyz",
        operation_id="readyz",
        summary="Redis and the database answer and a worker has reported in; 503 names what is missing",
        tag="service",
        responses={200: None, 503: None},
        authenticated=False,
    ),
    Operation(
        method="get",
        path=METRICS_PATH,
        operation_id="metrics",
        summary="This API process's Prometheus metrics; with SWITCHBOARD_METRICS_TOKEN set, only for that bearer token",
        tag="service",
        responses={200: None, 401: "SWITCHBOARD_METRICS_TOKEN is set and the request does not carry it"},
        success_media=("text/plain",),
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/openapi.json",
        operation_id="openapi",
        summary="This document",
        tag="service",
        responses={200: None},
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/",
        operation_id="webPage",
        summary="The todo assistant's web page",
        tag="web",
        responses={200: None},
        success_media=("text/html",),
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/static/{file}",
        operation_id="webAsset",
        summary="The web page's scripts, styles and images",
        tag="web",
        responses={200: None, 404: None},
        success_media=("text/javascript", "text/css", "image/svg+xml"),
        authenticated=False,
    ),
    # ---------------------------------------------------------------- OpenAI's API
    Operation(
        method="get",
        path="/v1/models",
        operation_id="listModels",
        summary="The assistants a client can name as `model`",
        tag="openai",
        responses={200: None},
    ),
    Operation(
        method="get",
        path="/v1/models/{model_id}",
        operation_id="getModel",
        summary="One assistant",
        tag="openai",
        responses={200: None, 404: None},
    ),
    Operation(
        method="post",
        path="/v1/chat/completions",
        operation_id="createChatCompletion",
        summary="A turn, answered as a chat completion, or streamed as chunks ending in `data: [DONE]`",
        tag="openai",
        body=TypeAdapter(ChatCompletionRequest),
        headers=ChatCompletionHeaders,
        responses={200: None, 400: None, 422: "The `Idempotency-Key` was used for another request", **ERRORS_OF_A_TURN},
        success_media=(JSON, EVENT_STREAM),
    ),
    Operation(
        method="get",
        path="/v1/chat/completions/{completion_id}/stream",
        operation_id="resumeChatCompletion",
        summary="The rest of a streamed completion, after the event named by `Last-Event-ID` or `after`",
        tag="openai",
        query=ResumeQuery,
        headers=ResumeHeaders,
        responses={200: None, 400: None, 404: None},
        success_media=(EVENT_STREAM,),
    ),
    Operation(
        method="post",
        path="/v1/responses",
        operation_id="createResponse",
        summary="A turn, answered as a Response, streamed as typed events, or queued with `background`",
        tag="openai",
        body=TypeAdapter(ResponseCreateRequest),
        headers=TurnHeaders,
        responses={
            200: None,
            400: None,
            422: "The `Idempotency-Key` was used for another request",
            **ERRORS_OF_A_TURN,
        },
        success_media=(JSON, EVENT_STREAM),
    ),
    Operation(
        method="get",
        path="/v1/responses/{response_id}",
        operation_id="getResponse",
        summary="A response as it stands, or its events from after `starting_after` with `stream=true`",
        tag="openai",
        query=ResponseStreamQuery,
        responses={200: None, 400: None, 404: None},
        success_media=(JSON, EVENT_STREAM),
    ),
    Operation(
        method="post",
        path="/v1/responses/{response_id}/cancel",
        operation_id="cancelResponse",
        summary="Stop a response's run (idempotent); the response as it then stands",
        tag="openai",
        responses={200: None, 404: None},
    ),
    Operation(
        method="delete",
        path="/v1/responses/{response_id}",
        operation_id="deleteResponse",
        summary="Remove a response: its run (stopped first if it is going on) and what it stored",
        tag="openai",
        responses={200: None, 404: None},
    ),
    Operation(
        method="get",
        path="/v1/responses/{response_id}/input_items",
        operation_id="listResponseInputItems",
        summary="The input items a response's request added to its conversation",
        tag="openai",
        query=InputItemsQuery,
        responses={200: None, 400: None, 404: None},
    ),
    # ---------------------------------------------------------------- runs
    Operation(
        method="get",
        path="/v1/runs",
        operation_id="listRuns",
        summary="The caller's runs, newest first",
        tag="runs",
        query=RunsQuery,
        responses={200: None, 400: None},
    ),
    Operation(
        method="get",
        path="/v1/runs/{run_id}",
        operation_id="getRun",
        summary="One run",
        tag="runs",
        responses={200: None, 404: None},
    ),
    Operation(
        method="get",
        path="/v1/runs/{run_id}/events",
        operation_id="runEvents",
        summary="A run's events as Server-Sent Events, from the start or after `Last-Event-ID`",
        tag="runs",
        query=ResumeQuery,
        headers=ResumeHeaders,
        responses={200: None, 400: None, 404: None},
        success_media=(EVENT_STREAM,),
    ),
    Operation(
        method="post",
        path="/v1/runs/{run_id}/cancel",
        operation_id="cancelRun",
        summary="Stop a run: the run once it has ended, or 202 with the run as it stands",
        tag="runs",
        responses={200: None, 202: None, 404: None},
    ),
    Operation(
        method="post",
        path="/v1/runs/{run_id}/approvals",
        operation_id="decideApproval",
        summary="Approve or deny one tool call the run stopped at; the run goes on once none is pending",
        tag="runs",
        body=TypeAdapter(ApprovalDecision),
        responses={200: None, 400: None, 404: None, 409: "The call was decided already"},
    ),
    # ---------------------------------------------------------------- the todo API
    Operation(
        method="get",
        path="/api/me",
        operation_id="me",
        summary="Whose credentials these are",
        tag="todo",
        responses={200: None},
    ),
    Operation(
        method="post",
        path="/api/{user_id}/chat",
        operation_id="todoChat",
        summary="A turn with the todo assistant, as JSON or (with `Accept: text/event-stream`) as events",
        tag="todo",
        body=TypeAdapter(TodoChatRequest),
        headers=TurnHeaders,
        path_descriptions=OWN_USER,
        responses={200: None, 400: None, 403: None, 422: None, **ERRORS_OF_A_TURN},
        success_media=(JSON, EVENT_STREAM),
    ),
    Operation(
        method="get",
        path="/api/{user_id}/tasks",
        operation_id="listTasks",
        summary="The caller's tasks",
        tag="todo",
        query=TasksQuery,
        path_descriptions=OWN_USER,
        responses={200: None, 400: None, 403: None},
    ),
    Operation(
        method="get",
        path="/api/{user_id}/conversations",
        operation_id="listConversations",
        summary="The caller's conversations, newest first",
        tag="todo",
        query=PageQuery,
        path_descriptions=OWN_USER,
        responses={200: None, 400: None, 403: None},
    ),
    Operation(
        method="get",
        path="/api/{user_id}/conversations/{conversation_id}/messages",
        operation_id="listMessages",
        summary="A conversation's messages, oldest first",
        tag="todo",
        query=PageQuery,
        path_descriptions=OWN_USER,
        responses={200: None, 400: None, 403: None, 404: None},
    ),
    Operation(
        method="delete",
        path="/api/{user_id}/conversations/{conversation_id}",
        operation_id="deleteConversation",
        summary="Delete a conversation (its tasks stay); its queued and running turns stop",
        tag="todo",
        path_descriptions=OWN_USER,
        responses={204: None, 400: None, 403: None, 404: None},
    ),
    # ---------------------------------------------------------------- ChatKit and MCP
    Operation(
        method="post",
        path=CHATKIT_PATH,
        operation_id="chatkit",
        summary="The ChatKit protocol, on the caller's conversations",
        tag="chatkit",
        body=_one_of(SUPPORTED, discriminator="type"),
        responses={200: None, 400: None, 404: None, 413: None, 429: None, 503: None},
        success_media=(JSON, EVENT_STREAM),
    ),
    Operation(
        method="post",
        path=MCP_PATH,
        operation_id="mcp",
        summary="The todo tools over MCP's streamable HTTP (stateless, JSON responses); "
        "send `Accept: application/json, text/event-stream`",
        tag="mcp",
        body=_one_of(tuple(_jsonrpc(request) for request in get_args(ClientRequest)), discriminator="method"),
        responses={200: None, 400: None, 406: None, 421: None},
        protocol_errors=(400, 406, 421),
    ),
    Operation(
        method="get",
        path=MCP_PATH,
        operation_id="mcpServerMessages",
        summary="MCP's stream of messages the server starts; stateless, this server sends none, and the stream "
        "stays open until the client closes it",
        tag="mcp",
        responses={200: None, 406: None},
        success_media=(EVENT_STREAM,),
        protocol_errors=(406,),
    ),
]
