"""The Responses API with tools the server runs: the file's `helper` assistant (`tests/test_assistants_file.py`),
whose `box.lookup` runs at once and whose `box.append_line` waits for its owner's approval. Its calls are
`mcp_call` output items; a call that waits is an `mcp_approval_request`, answered by an
`mcp_approval_response` input item."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.deployment import Deployment
from tests.test_assistants_file import deployed, lines, marker, web_server, workdir

__all__ = ["deployed", "web_server", "workdir"]  # fixtures, shared with the assistants-file tests

MODEL = "helper"


async def test_a_server_tool_call_is_an_mcp_call_item(deployed: Deployment) -> None:
    client = deployed.openai()
    response = await client.responses.create(model=MODEL, input=f'{marker()} [[tool:box_lookup {{"key": "k"}}]]')
    call = next(item for item in response.output if item.type == "mcp_call")
    assert (call.server_label, call.name) == ("box", "lookup") and json.loads(call.arguments) == {"key": "k"}
    assert call.status == "completed" and call.output
    # Each server's tools, as the model is offered them (a denied one is not), before the first call.
    listings = {item.server_label: item for item in response.output if item.type == "mcp_list_tools"}
    assert set(listings) == {"box", "web"}
    assert max(response.output.index(listing) for listing in listings.values()) < response.output.index(call)
    box = {tool.name: tool for tool in listings["box"].tools}
    assert {"lookup", "append_line", "secret_digest", "slow", "crash", "grow"} == set(box)
    assert box["lookup"].annotations == {"readOnlyHint": True}
    assert "key" in box["lookup"].input_schema["properties"]
    assert {tool.name for tool in listings["web"].tools} == {"append_line", "secret_digest", "slow", "crash", "grow"}
    assert not any(item.type == "function_call" for item in response.output)
    assert response.output_text.startswith("tool said:")
    stream = await client.responses.create(
        model=MODEL, input=f'{marker()} [[tool:box_lookup {{"key": "k"}}]]', stream=True
    )
    types = [event.type async for event in stream]
    assert "response.mcp_call.in_progress" in types and "response.mcp_call.completed" in types
    assert types.count("response.mcp_list_tools.completed") == 2
    assert types.index("response.mcp_list_tools.completed") < types.index("response.mcp_call.in_progress")
    assert types[-1] == "response.completed"


async def test_an_approval_request_answered_by_an_approval_response(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    client = deployed.openai()
    paused = await client.responses.create(model=MODEL, input=f'[[tool:box_append_line {{"text": "{mark}"}}]]')
    [request] = [item for item in paused.output if item.type == "mcp_approval_request"]
    assert (request.server_label, request.name) == ("box", "append_line") and json.loads(request.arguments) == {
        "text": mark
    }
    assert mark not in "".join(lines(workdir / "box.log"))
    # Read back, the paused response shows the same request.
    again = await client.responses.retrieve(paused.id)
    assert [item.id for item in again.output if item.type == "mcp_approval_request"] == [request.id]
    answered = await client.responses.create(
        model=MODEL,
        previous_response_id=paused.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
    )
    assert answered.status == "completed"
    [call] = [item for item in answered.output if item.type == "mcp_call"]
    assert (call.server_label, call.name) == ("box", "append_line") and call.status == "completed"
    assert answered.output_text.startswith("tool said:")
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    # Read back, the paused response is all its run said: the question, then the call and the answer.
    whole = await client.responses.retrieve(paused.id)
    # Its resumed attempt listed the tools again, which is no news.
    assert [item.type for item in whole.output] == ["mcp_list_tools"] * 2 + ["message", "mcp_call", "message"]
    assert whole.output_text.endswith(answered.output_text)
    events = [event async for event in await client.responses.retrieve(paused.id, stream=True)]
    assert events[-1].type == "response.completed"
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))


async def test_a_denied_approval_streamed(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    client = deployed.openai()
    paused = await client.responses.create(model=MODEL, input=f'[[tool:box_append_line {{"text": "{mark}"}}]]')
    [request] = [item for item in paused.output if item.type == "mcp_approval_request"]
    stream = await client.responses.create(
        model=MODEL,
        previous_response_id=paused.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False, "reason": "no"}],
        stream=True,
    )
    events = [event async for event in stream]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))
    assert mark not in "".join(lines(workdir / "box.log"))
    # Answering again is a conflict: the call was decided.
    with pytest.raises(openai.ConflictError):
        await client.responses.create(
            model=MODEL,
            previous_response_id=paused.id,
            input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        )
