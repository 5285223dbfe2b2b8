"""Approval (issue 11, section 2): a run stops before a tool call that needs its owner's yes, waits in
the database, and goes on, on any worker, once decided: approved, the call happens exactly once;
denied, never, and the model is told.

The assistant is the file's `helper` (`tests/test_assistants_file.py`), whose `box.append_line` tool
writes a line to a file per call and needs approval (the file's default); the fake LLM calls it when
told to and answers `tool said: <result>` once a result is in.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM
from tests.test_assistants_file import deployed, lines, marker, requests_with, web_server, workdir

__all__ = ["deployed", "web_server", "workdir"]  # fixtures, shared with the assistants-file tests

MODEL = "helper"


def append_call(mark: str) -> str:
    return f'[[tool:box_append_line {{"text": "{mark}"}}]]'


async def chat(
    running: Deployment, content: str, *, conversation: str | None = None, user: str = "alice"
) -> tuple[str, str]:
    """One non-streaming turn: (the answer, the run's id)."""
    headers = {"X-Conversation-ID": conversation} if conversation else {}
    async with running.http(user) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
            headers=headers,
        )
    assert response.status_code == 200, f"{response.text}\n{running.logs(40)}"
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    return body["choices"][0]["message"]["content"], response.headers["x-run-id"]


async def run(running: Deployment, run_id: str, *, user: str = "alice") -> dict[str, Any]:
    async with running.http(user) as http:
        response = await http.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def decide(running: Deployment, run_id: str, body: dict[str, Any], *, user: str = "alice") -> Any:
    async with running.http(user) as http:
        return await http.post(f"/v1/runs/{run_id}/approvals", json=body)


async def until_status(running: Deployment, run_id: str, *statuses: str, timeout_s: float = 30.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        current = await run(running, run_id)
        if current["status"] in statuses:
            return current
        assert loop.time() < deadline, f"run {run_id} is still {current['status']}"
        await asyncio.sleep(0.1)


async def kill_the_worker_once_it_acted(running: Deployment, log: Path, mark: str) -> None:
    """SIGKILL the deployment's one worker as soon as the approved call's effect (a line with `mark` in
    `log`) shows, before its run can finish, and start another in its place."""
    [worker] = running.live_workers()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while mark not in "".join(lines(log)):
        assert loop.time() < deadline, "the approved call never happened"
        await asyncio.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    running.start_worker()


async def paused(
    running: Deployment, mark: str, *, conversation: str | None = None, also: str = ""
) -> tuple[str, dict[str, Any]]:
    """A run stopped at `box.append_line(mark)`: (its id, its one pending approval)."""
    answer, run_id = await chat(running, append_call(mark) + also, conversation=conversation)
    assert answer == (
        f'I want to run this tool:\n- `box.append_line` with arguments `{{"text": "{mark}"}}`\n\nReply approve or deny.'
    )
    current = await run(running, run_id)
    assert current["status"] == "awaiting_approval"
    [pending] = current["pending_approvals"]
    assert pending["tool"] == "box.append_line" and pending["arguments"] == {"text": mark}
    return run_id, pending


async def test_approved_through_the_runs_api_the_call_happens_once_and_the_model_gets_its_result(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    run_id, pending = await paused(deployed, mark)
    assert mark not in "".join(lines(workdir / "box.log"))
    response = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    assert response.status_code == 200, response.text
    assert response.json()["pending_approvals"] == []
    done = await until_status(deployed, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    # The model went on with the call's result.
    last = requests_with(fake_llm, mark)[-1]
    assert last["messages"][-1]["role"] == "tool" and mark in last["messages"][-1]["content"]
    # Deciding again changes nothing.
    again = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "deny"})
    assert again.status_code == 409, again.text


async def test_denied_the_call_never_happens_and_the_model_is_told_why(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    run_id, pending = await paused(deployed, mark)
    body = {"call_id": pending["call_id"], "decision": "deny", "reason": "not today"}
    response = await decide(deployed, run_id, body)
    assert response.status_code == 200, response.text
    done = await until_status(deployed, run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert mark not in "".join(lines(workdir / "box.log"))
    last = requests_with(fake_llm, mark)[-1]
    told = last["messages"][-1]
    assert told["role"] == "tool" and "denied" in told["content"] and "not today" in told["content"]


async def test_only_the_owner_decides_and_only_what_was_shown(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    run_id, pending = await paused(deployed, mark)
    call_id = pending["call_id"]
    bob = await decide(deployed, run_id, {"call_id": call_id, "decision": "approve"}, user="bob")
    assert bob.status_code == 404, bob.text
    async with deployed.http("bob") as http:
        assert (await http.get(f"/v1/runs/{run_id}")).status_code == 404
    changed = await decide(deployed, run_id, {"call_id": call_id, "decision": "approve", "arguments_hash": "0" * 64})
    assert changed.status_code == 400, changed.text
    unknown = await decide(deployed, run_id, {"call_id": "call_nope", "decision": "approve"})
    assert unknown.status_code == 404, unknown.text
    bad = await decide(deployed, run_id, {"call_id": call_id, "decision": "maybe"})
    assert bad.status_code == 400, bad.text
    assert (await run(deployed, run_id))["status"] == "awaiting_approval"
    # The digest it was shown with is accepted.
    shown = {"call_id": call_id, "decision": "approve", "arguments_hash": pending["arguments_hash"]}
    assert (await decide(deployed, run_id, shown)).status_code == 200
    await until_status(deployed, run_id, "succeeded")
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]


async def test_cancel_ends_a_run_that_awaits_approval(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    run_id, pending = await paused(deployed, mark)
    async with deployed.http() as http:
        response = await http.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    late = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    assert late.status_code == 409, late.text
    assert mark not in "".join(lines(workdir / "box.log"))


@pytest.mark.parametrize("said", ["approve", "Yes.", "/approve"])
async def test_approve_in_the_chat_goes_on_in_the_same_answer(deployed: Deployment, workdir: Path, said: str) -> None:
    mark = marker()
    conversation = f"approve-{mark}"
    run_id, _ = await paused(deployed, mark, conversation=conversation)
    answer, answered_by = await chat(deployed, said, conversation=conversation)
    assert answered_by == run_id
    assert answer == f"tool said: appended {mark}"
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    history = await deployed.messages("alice", conversation)
    assert [message["role"] for message in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"].endswith("Reply approve or deny.") and history[2]["content"] == said


async def test_deny_in_the_chat_and_any_other_message_deny_the_call(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    conversation = f"deny-{mark}"
    run_id, _ = await paused(deployed, mark, conversation=conversation)
    answer, answered_by = await chat(deployed, "no", conversation=conversation)
    assert answered_by == run_id and "denied" in answer
    other = marker()
    second, _ = await paused(deployed, other, conversation=conversation)
    reply, new_run = await chat(deployed, f"[[reply:moving on {other}]]", conversation=conversation)
    assert new_run != second and reply == f"moving on {other}"
    assert (await until_status(deployed, second, "succeeded"))["status"] == "succeeded"
    assert not [line for line in lines(workdir / "box.log") if mark in line or other in line]


async def test_a_worker_killed_right_after_the_approved_call_does_not_repeat_it(
    deployed: Deployment, workdir: Path
) -> None:
    mark = marker()
    # Each model step waits a while, so the worker is mid-run, past the call, when it is killed.
    run_id, pending = await paused(deployed, mark, also="[[delay:2]]")
    response = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    assert response.status_code == 200
    await kill_the_worker_once_it_acted(deployed, workdir / "box.log", mark)
    done = await until_status(deployed, run_id, "succeeded", "failed", timeout_s=90)
    assert done["status"] == "succeeded", done
    assert [line for line in lines(workdir / "box.log") if mark in line] == [mark]
    rows = await deployed.query("SELECT result FROM tool_calls WHERE run_id = :run_id", run_id=run_id)
    assert len(rows) == 1, rows


async def test_an_approval_nobody_gives_in_time_cancels_the_run(deployed: Deployment, workdir: Path) -> None:
    mark = marker()
    run_id, pending = await paused(deployed, mark)
    # As if SWITCHBOARD_APPROVAL_TTL_S had passed: the worker's reconciler finds it due.
    assert deployed.engine is not None
    async with deployed.engine.begin() as connection:
        await connection.execute(
            text("UPDATE approvals SET expires_at = created_at - interval '1 second' WHERE run_id = :run_id"),
            {"run_id": run_id},
        )
    done = await until_status(deployed, run_id, "cancelled", "succeeded", "failed")
    assert done["status"] == "cancelled" and done["pending_approvals"] == []
    late = await decide(deployed, run_id, {"call_id": pending["call_id"], "decision": "approve"})
    assert late.status_code == 409, late.text
    assert mark not in "".join(lines(workdir / "box.log"))


async def test_cancel_stops_a_tool_call_in_flight(deployed: Deployment) -> None:
    mark = marker()
    async with deployed.http() as http:
        started = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f'[[tool:box_slow {{"seconds": 60}}]] {mark}'}],
                },
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            rows = await deployed.query(
                "SELECT runs.id FROM runs JOIN messages ON messages.run_id = runs.id "
                "WHERE runs.status = 'running' AND messages.content LIKE :mark",
                mark=f"%{mark}%",
            )
            if rows:
                break
            assert loop.time() < deadline, "the run never started"
            await asyncio.sleep(0.05)
        run_id = rows[0]["id"]
        await asyncio.sleep(1)  # the call is in flight at the server by now
        began = loop.time()
        cancelled = await http.post(f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert loop.time() - began < 10
        answer = await started
    assert answer.status_code == 200, answer.text
    # The server is fine: the next call works.
    async with deployed.http() as http:
        next_call = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": '[[tool:box_lookup {"key": "k"}]]'}]},
        )
    assert next_call.status_code == 200 and "found k" in next_call.json()["choices"][0]["message"]["content"]
