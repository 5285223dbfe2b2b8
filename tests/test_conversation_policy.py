"""One turn at a time per conversation (issue 9, section 3): `enqueue`, `reject` and `interrupt`,
through real processes. The first turn streams slowly; a second turn arrives while it does."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM
from tests.test_cancel import _stream_until_text
from tests.test_openai_wire import CHAT, MODEL, marker, stream_payloads, user

SLOW = "[[tokens:60]] [[tokendelay:0.05]]"


async def _runs(deployment: Deployment, key: str) -> list[dict[str, Any]]:
    return await deployment.query(
        "SELECT r.id, r.status, r.started_at, r.finished_at FROM runs r JOIN conversations c"
        " ON c.id = r.conversation_id WHERE c.key = :key ORDER BY r.created_at",
        key=key,
    )


async def test_enqueue_runs_the_second_turn_after_the_first_and_shows_it_the_first_answer(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    key = f"policy-enqueue-{marker()}"
    async with deployment.http("alice") as client:
        client.headers["X-Conversation-ID"] = key
        first_id, first = await _stream_until_text(client, {"messages": user(SLOW)})
        second = await client.post(CHAT, json={"model": MODEL, "messages": user(f"[[reply:second {key}]]")})
        raw = await asyncio.wait_for(first, 30)
    assert second.status_code == 200, second.text
    stream_payloads(raw)
    earlier, later = await _runs(deployment, key)
    assert earlier["id"] == first_id
    assert earlier["status"] == later["status"] == "succeeded"
    assert later["started_at"] >= earlier["finished_at"], "the second turn started before the first had ended"
    rows = await deployment.messages("alice", key)
    assert sorted(row["role"] for row in rows) == ["assistant", "assistant", "user", "user"]
    # The model was asked the second turn with the first turn's answer before it.
    [asked] = [body for body in fake_llm.requests if f"second {key}" in str(body["messages"])]
    roles = [(message["role"], str(message.get("content"))[:3]) for message in asked["messages"]]
    assert roles[-3:] == [("user", SLOW[:3]), ("assistant", "tok"), ("user", "[[r")], roles


async def test_reject_answers_409_while_a_turn_is_in_progress(deployment: Deployment) -> None:
    key = f"policy-reject-{marker()}"
    async with deployment.http("alice") as client:
        client.headers["X-Conversation-ID"] = key
        _, first = await _stream_until_text(client, {"messages": user(SLOW)})
        refused = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user("too soon")},
            headers={"X-Conversation-Policy": "reject"},
        )
        bad = await client.post(
            CHAT, json={"model": MODEL, "messages": user("what?")}, headers={"X-Conversation-Policy": "sometimes"}
        )
        await asyncio.wait_for(first, 30)
        after = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user("[[reply:now then]]")},
            headers={"X-Conversation-Policy": "reject"},
        )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conversation_busy"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Conversation-Policy"
    assert after.status_code == 200, after.text
    assert [row["status"] for row in await _runs(deployment, key)] == ["succeeded", "succeeded"]


async def test_interrupt_stops_the_turn_in_progress_keeps_its_words_and_answers_the_new_one(
    deployment: Deployment,
) -> None:
    key = f"policy-interrupt-{marker()}"
    async with deployment.http("alice") as client:
        client.headers["X-Conversation-ID"] = key
        _, first = await _stream_until_text(client, {"messages": user(SLOW)})
        second = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user("[[reply:instead]]")},
            headers={"X-Conversation-Policy": "interrupt"},
        )
        raw = await asyncio.wait_for(first, 30)
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "instead"
    chunks = stream_payloads(raw)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    stopped, answered = await _runs(deployment, key)
    assert (stopped["status"], answered["status"]) == ("cancelled", "succeeded")
    [partial] = await deployment.query(
        "SELECT content FROM messages WHERE run_id = :id AND role = 'assistant'", id=stopped["id"]
    )
    assert 0 < len(partial["content"]) < len("tok " * 60)
    [instead] = await deployment.query(
        "SELECT content FROM messages WHERE run_id = :id AND role = 'assistant'", id=answered["id"]
    )
    assert instead["content"] == "instead"
