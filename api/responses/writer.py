"""A run's progress as a Responses object and its typed stream events.

The events are a pure function of the run's progress, numbered from 1 by `sequence_number`: following
the run again from its first event gives the same events with the same numbers, which is how
`starting_after` resumes a stream on any API process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, assert_never

from api.relay.progress import (
    RESTARTED_MESSAGE,
    AwaitingApproval,
    Cancelled,
    ClientToolCall,
    Completed,
    Detached,
    Failed,
    Restarted,
    RunProgress,
    Text,
    ToolCall,
    ToolResult,
    ToolsOffered,
)
from domain.events import ApprovalRequest, Usage

ResponseStatus = str  # "queued" | "in_progress" | "completed" | "failed" | "cancelled" | "incomplete"


def response_id_of(run_id: str) -> str:
    """A response is its run: `resp_<hex>` names `run_<hex>`."""
    return "resp_" + run_id.removeprefix("run_")


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


@dataclass(kw_only=True)
class ResponseWriter:
    """Builds one Response from a run's progress, returning the stream events each step makes."""

    response_id: str
    created_at: int
    model: str
    # The request as the Response echoes it: instructions, tools, tool_choice, temperature, ...
    echo: dict[str, Any]
    status: ResponseStatus = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    # Set when the stream cannot go on (a restart, a lost connection): its `error` event was the last.
    broken: bool = False
    _seq: int = 0
    _message: int | None = None  # output index of the open message item
    _calls: dict[int, int] = field(default_factory=dict)  # a client tool call's index -> its output index
    _server_calls: dict[str, int] = field(default_factory=dict)  # a server tool call's id -> its output index
    _listed: set[str] = field(default_factory=set)  # the servers whose `mcp_list_tools` item is out

    def response(self) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "model": self.model,
            "output": self.output,
            "usage": usage_object(self.usage) if self.status in ("completed", "incomplete", "cancelled") else None,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            **self.echo,
        }

    def opening(self) -> list[dict[str, Any]]:
        created = self._event("response.created", response={**self.response(), "status": "queued"})
        return [created, self._event("response.in_progress", response=self.response())]

    def feed(self, progress: RunProgress) -> list[dict[str, Any]]:
        match progress:
            case Text():
                return self._text(progress.text)
            case ClientToolCall():
                return self._call(progress)
            case ToolsOffered():
                return self._listing(progress)
            case ToolCall():
                return self._server_call(progress)
            case ToolResult():
                return self._server_result(progress)
            case Restarted():
                self.broken = True
                return [self._error(RESTARTED_MESSAGE, "run_restarted")]
            case Completed():
                if progress.logprobs and self._message is not None:
                    # The provider's per-token log probabilities come with the end, in the same shape.
                    self.output[self._message]["content"][0]["logprobs"] = progress.logprobs
                events = self._close_all()
                self.usage = progress.usage
                if progress.finish_reason == "length":
                    self.status, self.incomplete_details = "incomplete", {"reason": "max_output_tokens"}
                    return [*events, self._finish("response.incomplete")]
                self.status = "completed"
                return [*events, self._finish("response.completed")]
            case AwaitingApproval():
                # Each call it stopped at is an `mcp_approval_request`, answered by an
                # `mcp_approval_response` input item naming it (its text asks the same in words).
                events = self._close_all()
                for approval in progress.approvals:
                    events.extend(self._approval_request(approval))
                self.usage = Usage()
                self.status = "completed"
                return [*events, self._finish("response.completed")]
            case Cancelled():
                self.usage = Usage()
                self.status = "cancelled"
                return [*self._close_all(), self._finish("response.incomplete")]
            case Failed():
                self.status = "failed"
                # The Responses error codes are a closed set: ours is named in the message.
                code = "invalid_prompt" if progress.code == "provider_rejected" else "server_error"
                self.error = {"code": code, "message": f"{progress.message} ({progress.code})"}
                return [*self._close_all(), self._finish("response.failed")]
            case Detached():
                self.broken = True
                return [self._error(progress.message, progress.code)]
            case _:
                assert_never(progress)

    def reset(self) -> None:
        """Start over (a restarted run that nobody saw yet): the new attempt's answer is the answer."""
        self.output.clear()
        self._message = None
        self._calls.clear()
        self._server_calls.clear()
        self._listed.clear()
        self.broken = False

    # ------------------------------------------------------------------ pieces

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        return {"type": type_, "sequence_number": self._seq, **fields}

    def _error(self, message: str, code: str) -> dict[str, Any]:
        return self._event("error", code=code, message=message, param=None)

    def _finish(self, type_: str) -> dict[str, Any]:
        self.completed_at = int(time.time()) if self.status == "completed" else None
        return self._event(type_, response=self.response())

    def _text(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._message is None:
            self._message = len(self.output)
            item: dict[str, Any] = {
                "id": f"msg_{self._tail()}_{self._message}",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=self._message, item=_copy(item)))
            item["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._message,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        item = self.output[self._message]
        item["content"][0]["text"] += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self._message,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call(self, piece: ClientToolCall) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if piece.index not in self._calls:
            events.extend(self._close_message())
            index = len(self.output)
            self._calls[piece.index] = index
            item: dict[str, Any] = {
                "id": f"fc_{self._tail()}_{index}",
                "type": "function_call",
                "call_id": piece.call_id or "",
                "name": piece.name or "",
                "arguments": "",
                "status": "in_progress",
            }
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=index, item=_copy(item)))
        index = self._calls[piece.index]
        item = self.output[index]
        if piece.arguments:
            item["arguments"] += piece.arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece.arguments,
                )
            )
        return events

    def _listing(self, offered: ToolsOffered) -> list[dict[str, Any]]:
        """A server's tools as an `mcp_list_tools` item, once per response: a resumed or restarted
        attempt lists them again, which is no news."""
        if offered.server in self._listed:
            return []
        self._listed.add(offered.server)
        events = self._close_message()
        index = len(self.output)
        tools = [tool.model_dump(exclude_none=True) for tool in offered.tools]
        item = {
            "id": f"mcpl_{self._tail()}_{index}",
            "type": "mcp_list_tools",
            "server_label": offered.server,
            "tools": tools,
            "error": None,
        }
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": index}
        return [
            *events,
            self._event("response.output_item.added", output_index=index, item={**item, "tools": []}),
            self._event("response.mcp_list_tools.in_progress", **ids),
            self._event("response.mcp_list_tools.completed", **ids),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _server_call(self, call: ToolCall) -> list[dict[str, Any]]:
        """A tool the server runs (the todo tools, an assistant's MCP servers): an `mcp_call` item."""
        events = self._close_message()
        index = len(self.output)
        self._server_calls[call.call_id] = index
        server, name = self._server_and_tool(call.tool)
        item: dict[str, Any] = {
            "id": f"mcp_{self._tail()}_{index}",
            "type": "mcp_call",
            "server_label": server,
            "name": name,
            "arguments": json.dumps(call.args),
            "output": None,
            "error": None,
            "status": "in_progress",
        }
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": index}
        return [
            *events,
            self._event("response.output_item.added", output_index=index, item=_copy(item)),
            self._event("response.mcp_call.in_progress", **ids),
            self._event("response.mcp_call_arguments.done", **ids, arguments=item["arguments"]),
        ]

    def _server_result(self, result: ToolResult) -> list[dict[str, Any]]:
        index = self._server_calls.get(result.call_id)
        if index is None:
            return []  # its call came before where this stream began
        item = self.output[index]
        text = result.result if isinstance(result.result, str) else json.dumps(result.result)
        if result.is_error:
            item["status"] = "failed"
            item["error"] = {"type": "mcp_tool_execution_error", "content": text}
        else:
            item["status"] = "completed"
            item["output"] = text
        ended = "response.mcp_call.failed" if result.is_error else "response.mcp_call.completed"
        return [
            self._event(ended, item_id=item["id"], output_index=index),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _approval_request(self, approval: ApprovalRequest) -> list[dict[str, Any]]:
        index = len(self.output)
        # Its id is the call's: the `approval_request_id` an answer names is the call to decide.
        server, name = self._server_and_tool(approval.tool)
        item = {
            "id": approval.call_id,
            "type": "mcp_approval_request",
            "server_label": server,
            "name": name,
            "arguments": json.dumps(approval.arguments),
        }
        self.output.append(item)
        return [
            self._event("response.output_item.added", output_index=index, item=_copy(item)),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _close_message(self) -> list[dict[str, Any]]:
        if self._message is None:
            return []
        index, self._message = self._message, None
        item = self.output[index]
        part = item["content"][0]
        item["status"] = "completed"
        ids = {"item_id": item["id"], "output_index": index}
        return [
            self._event(
                "response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=part["logprobs"]
            ),
            self._event("response.content_part.done", **ids, content_index=0, part=_copy(part)),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _close_all(self) -> list[dict[str, Any]]:
        events = self._close_message()
        for index in self._server_calls.values():
            if self.output[index]["status"] == "in_progress":
                self.output[index]["status"] = "incomplete"  # stopped before its result
        for index in sorted(self._calls.values()):
            item = self.output[index]
            if item["status"] == "completed":
                continue
            item["status"] = "completed"
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return events

    def _server_and_tool(self, qualified: str) -> tuple[str, str]:
        """`server.tool` (an assistant's MCP server) as its label and name; a tool of the assistant's own
        server (the todo tools) has no server in its name, and is labelled with the assistant."""
        server, dot, tool = qualified.partition(".")
        return (server, tool) if dot else (self.model, qualified)

    def _tail(self) -> str:
        return self.response_id.removeprefix("resp_")


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [_copy(v) if isinstance(v, dict) else v for v in item] if isinstance(item, list) else item
        for key, item in value.items()
    }
