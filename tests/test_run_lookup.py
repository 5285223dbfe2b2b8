"""A response or a completion is looked up as its run, for its owner only: another user's, a
well-formed id that names nothing and an id of another shape all get the same 404, word for word."""

from __future__ import annotations

from typing import Any

from tests.deployment import Deployment
from tests.test_openai_wire import CHAT, MODEL, marker, user


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 404, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_another_users_completion_is_as_missing_as_one_that_never_was(deployment: Deployment) -> None:
    async with deployment.http("alice") as client:
        done = await client.post(CHAT, json={"model": MODEL, "messages": user(f"[[reply:mine {marker()}]]")})
    theirs = done.json()["id"]
    unknown = "chatcmpl-" + "0" * 24
    async with deployment.http("bob") as client:
        errors = {
            completion_id: _error(await client.get(f"/v1/chat/completions/{completion_id}/stream"))
            for completion_id in (theirs, unknown, "not-a-completion")
        }
    for completion_id, error in errors.items():
        assert error["message"] == f"No completion found with id '{completion_id}'"
        assert (error["param"], error["code"]) == ("completion_id", "not_found")


async def test_another_users_response_is_as_missing_as_one_that_never_was(deployment: Deployment) -> None:
    async with deployment.http("alice") as client:
        created = await client.post("/v1/responses", json={"model": MODEL, "input": f"[[reply:mine {marker()}]]"})
    theirs = created.json()["id"]
    unknown = "resp_" + "0" * 24
    async with deployment.http("bob") as client:
        for response_id in (theirs, unknown, "resp_nothing"):
            error = _error(await client.get(f"/v1/responses/{response_id}"))
            assert error["message"] == f"No response found with id '{response_id}'"
            assert (error["param"], error["code"]) == ("response_id", "not_found")
            body = {"model": MODEL, "input": "x", "previous_response_id": response_id}
            error = _error(await client.post("/v1/responses", json=body))
            assert error["message"] == f"No response found with id '{response_id}'"
            assert (error["param"], error["code"]) == ("previous_response_id", "not_found")
