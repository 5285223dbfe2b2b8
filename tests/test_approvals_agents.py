"""Approval on the OpenAI Agents SDK engine (issue 11, section 2): the run stops at the SDK's
interruptions, keeps its `RunState` while it waits, and goes on from it, on any worker, once decided.

The assistant is the file's `agent-helper` (`tests/test_assistants_file.py`), whose own `box` server
writes a line to the shared `box.log` per `append_line` call, which needs approval (the assistant's
default). The fake LLM calls it when told to and answers `tool said: <result>` once a result is in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, Runner, RunResultStreaming, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from domain.run_request import CallDecision
from tests.deployment import Deployment
from tests.fake_llm import FakeLLM, Script
from tests.test_approvals import kill_the_worker_once_it_acted
from tests.test_assistants_file import deployed, lines, marker, requests_with, run_events, web_server, workdir
from tests.test_runs_api import sse_events
from workers.agents_pause import paused_state, resumed_state

__all__ = ["deployed", "web_server", "workdir"]  # fixtures, shared with the assistants-file tests

MODEL = "agent-helper"


def append_call(mark: str) -> str:
    return f'[[tool:box_append_line {{"text": "{mark}"}}]]'


def asked(mark: str) -> str:
    return (
        f'I want to run this tool:\n- `box.append_line` with arguments `{{"text": "{mark}"}}`\n\nReply approve or deny.'
    )


async def chat(running: Deployment, content: str, *, conversation: str) -> tuple[str, str]:
    """One non-streaming turn in `conversation`: (the answer, the run's id)."""
    async with running.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
            headers={"X-Conversation-ID": conversation},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    return body["choices"][0]["message"]["content"], response.headers["x-run-id"]


async def run(running: Deployment, run_id: str) -> dict[str, Any]:
    async with running.http() as http:
        response = await http.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def decide(running: Deployment, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    async with running.http() as http:
        response = await http.post(f"/v1/runs/{run_id}/approvals", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def until_status(running: Deployment, run_id: str, *statuses: str, timeout_s: float = 30.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (current := await run(running, run_id))["status"] not in statuses:
        assert loop.time() < deadline, f"run {run_id} is still {current['status']}"
        await asyncio.sleep(0.1)
    return current


async def paused(running: Deployment, mark: str, *, also: str = "") -> tuple[str, str, dict[str, Any]]:
    """A run stopped at `box.append_line(mark)`: (its conversation, its id, its one pending approval)."""
    conversation = f"agents-{mark}"
    answer, run_id = await chat(running, append_call(mark) + also, conversation=conversation)
    assert answer == asked(mark)
    current = await run(running, run_id)
    assert current["status"] == "awaiting_approval"
    [pending] = current["pending_approvals"]
    assert pending["tool"] == "box.append_line" and pending["arguments"] == {"text": mark}
    return conversation, run_id, pending


async def events_after_the_pause(running: Deployment, run_id: str) -> list[dict[str, Any]]:
    """The run's events once it went on: a stream of its events ends where it paused."""
    until_pause = await run_events(running, run_id)
    assert until_pause[-1]["type"] == "run.awaiting_approval"
    async with running.http() as http:
        response = await http.get(f"/v1/runs/{run_id}/events", params={"after": until_pause[-1]["seq"]})
    assert response.status_code == 200, response.text
    return [event["data"] for event in sse_events(response.content)]


def text_of(message: dict[str, Any]) -> str:
    """A message's text, whether its content is a string or (as the SDK sends tool results) text parts."""
    content = message["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def answers(history: list[dict[str, Any]]) -> list[str]:
    return [message["content"] for message in history if message["role"] == "assistant"]


def usage_of_requests(requests: list[dict[str, Any]]) -> dict[str, int]:
    """What the fake LLM reported for these requests, added up."""
    usages = [Script.from_body(body).usage() for body in requests]
    return {key: sum(usage[key] for usage in usages) for key in ("prompt_tokens", "completion_tokens")}


async def test_approved_through_the_runs_api_the_call_happens_once_and_the_model_gets_its_result(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    conversation, run_id, pending = await paused(deployed, mark)
    assert mark not in "".join(lines(workdir / "box.log"))
    assert len(requests_with(fake_llm, mark)) == 1
    decided = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    assert decided["pending_approvals"] == []
    done = await until_status(deployed, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    # The model went on from where it stopped, with the result of its own call: the approval's call id
    # is the model's.
    first, second = requests_with(fake_llm, mark)
    assert second["model"] == "other-fake-model"
    call, result = second["messages"][-2:]
    assert [spec["id"] for spec in call["tool_calls"]] == [pending["call_id"]]
    assert (result["role"], result["tool_call_id"], text_of(result)) == ("tool", pending["call_id"], f"appended {mark}")
    # The conversation shows the request, then the answer the run went on to give.
    history = await deployed.messages("alice", conversation)
    assert answers(history) == [asked(mark), f"tool said: appended {mark}"]
    events = await events_after_the_pause(deployed, run_id)
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.completed"
    assert [(event["type"], event["call_id"]) for event in events if event["type"].startswith("tool.")] == [
        ("tool.call", pending["call_id"]),
        ("tool.result", pending["call_id"]),
    ]
    # The run's usage is both model steps', before the pause and after it.
    assert {key: done["usage"][key] for key in ("prompt_tokens", "completion_tokens")} == usage_of_requests(
        [first, second]
    )


async def test_denied_the_call_never_happens_and_the_model_is_told_why(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    conversation, run_id, pending = await paused(deployed, mark)
    await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "deny", "reason": "not today"})
    done = await until_status(deployed, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert mark not in "".join(lines(workdir / "box.log"))
    told = requests_with(fake_llm, mark)[-1]["messages"][-1]
    assert (told["role"], told["tool_call_id"]) == ("tool", pending["call_id"])
    assert text_of(told) == "The user denied this call: not today"
    history = await deployed.messages("alice", conversation)
    assert answers(history) == [asked(mark), "tool said: The user denied this call: not today"]
    assert not [event for event in await events_after_the_pause(deployed, run_id) if event["type"].startswith("tool.")]


async def test_approve_in_the_chat_goes_on_in_the_same_answer(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    conversation, run_id, _ = await paused(deployed, mark)
    answer, answered_by = await chat(deployed, "approve", conversation=conversation)
    assert answered_by == run_id
    assert answer == f"tool said: appended {mark}"
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    history = await deployed.messages("alice", conversation)
    assert [message["role"] for message in history] == ["user", "assistant", "user", "assistant"]
    assert answers(history) == [asked(mark), answer]


async def test_a_worker_killed_right_after_the_approved_call_does_not_repeat_it(
    deployed: Deployment, workdir: Path
) -> None:
    mark = marker()
    # Each model step waits a while, so the worker is mid-run, past the call, when it is killed.
    _, run_id, pending = await paused(deployed, mark, also="[[delay:2]]")
    await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    await kill_the_worker_once_it_acted(deployed, workdir / "box.log", mark)
    # The next attempt goes on from the same state: the SDK calls the tool again, and gets the result
    # recorded the first time instead of a second effect.
    done = await until_status(deployed, run_id, "succeeded", "failed", timeout_s=90)
    assert done["status"] == "succeeded", done
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    rows = await deployed.query("SELECT result FROM tool_calls WHERE run_id = :run_id", run_id=run_id)
    assert len(rows) == 1, rows


async def test_a_run_that_pauses_again_goes_on_each_time_from_the_state_it_kept() -> None:
    """The fake LLM cannot call a second tool after a result; the SDK's scripted model can."""
    written: list[str] = []

    @function_tool(needs_approval=True)
    def write(text: str) -> str:
        written.append(text)
        return f"wrote {text}"

    step_usage = Usage(requests=1, input_tokens=10, output_tokens=2, total_tokens=12)
    model = ScriptedModel(
        [
            {"output": [function_call("write", {"text": "a"}, call_id="call_a")], "usage": step_usage},
            {"output": [function_call("write", {"text": "b"}, call_id="call_b")], "usage": step_usage},
            {"output": [assistant_message("done")], "usage": step_usage},
        ]
    )

    def agent() -> Agent[Any]:
        # Each worker builds its own, as for a fresh run.
        return Agent(name="writer", model=model, tools=[write])

    async def run_on(agent: Agent[Any], run_input: Any) -> tuple[RunResultStreaming, dict[str, Any] | None]:
        streamed = Runner.run_streamed(agent, input=run_input, run_config=RunConfig(tracing_disabled=True))
        async for _ in streamed.stream_events():
            pass
        # As the database keeps it: JSON.
        kept = json.loads(json.dumps(paused_state(streamed))) if streamed.interruptions else None
        return streamed, kept

    first = agent()
    streamed, kept = await run_on(first, "write a, then b")
    assert [item.call_id for item in streamed.interruptions] == ["call_a"] and written == []
    assert kept is not None and kept["engine"] == "openai-agents"

    decisions = [CallDecision(call_id="call_a", approved=True)]
    again = agent()
    streamed, kept = await run_on(again, await resumed_state(again, kept, decisions))
    assert [item.call_id for item in streamed.interruptions] == ["call_b"] and written == ["a"]
    assert kept is not None

    decisions.append(CallDecision(call_id="call_b", approved=False, reason="not now"))
    last = agent()
    streamed, kept = await run_on(last, await resumed_state(last, kept, decisions))
    assert kept is None and streamed.final_output == "done"
    # Each approved call ran once, the denied one never; the model was told why.
    assert written == ["a"]
    assert model.last_call is not None
    told = [item for item in model.last_call.input if item.get("type") == "function_call_output"]
    assert [(item["call_id"], item["output"]) for item in told] == [
        ("call_a", "wrote a"),
        ("call_b", "The user denied this call: not now"),
    ]
    # The usage is the whole run's, across both pauses.
    usage = streamed.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (3, 30, 6)
