"""A quiet stream still shows signs of life: SSE comments keep proxies and clients from giving up."""

from __future__ import annotations

from tests.conftest import DeployFactory


async def test_quiet_stream_gets_keepalive_comments(deploy: DeployFactory) -> None:
    running = await deploy({"SWITCHBOARD_KEEPALIVE_S": "0.2"})
    body = {
        "model": "assistant",
        "stream": True,
        "messages": [{"role": "user", "content": "[[delay:1]][[reply:finally]]"}],
    }
    lines: list[str] = []
    async with running.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
    first_data = next(index for index, line in enumerate(lines) if line.startswith("data:"))
    comments_before = [line for line in lines[:first_data] if line.startswith(":")]
    assert len(comments_before) >= 2, lines[:first_data]
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
