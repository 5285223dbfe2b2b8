"""The shortest path through the whole system, on both databases."""

from __future__ import annotations

import pytest

from tests.deployment import Deployment


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_chat_round_trip(backend: str, deployment: Deployment, sqlite_deployment: Deployment) -> None:
    running = deployment if backend == "postgres" else sqlite_deployment
    client = running.openai()
    reply = await client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "[[reply:pong]]"}]
    )
    assert reply.choices[0].message.content == "pong"
    stream = await client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "[[reply:streamed pong]]"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "streamed pong"
