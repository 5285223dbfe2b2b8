"""Who the caller is comes from the credentials alone: API keys and HS256 JWTs, and their edge cases."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.conftest import DeployFactory
from tests.deployment import JWT_SECRET, Deployment


def token(claims: dict[str, Any], *, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS512 wants a 64-byte key; the point of that case is that HS512 is refused at all.
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def status_with(deployment: Deployment, authorization: str | None) -> int:
    async with deployment.http(user=None) as http:
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = await http.get("/v1/models", headers=headers)
        if response.status_code == 401:
            body = response.json()
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert response.headers["www-authenticate"] == "Bearer"
        return response.status_code


async def test_jwt_subject_is_the_user(deployment: Deployment) -> None:
    credential = token({"sub": "jwt-user", "exp": int(time.time()) + 60})
    async with deployment.http(user=None) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {credential}", "X-Conversation-ID": "jwt-conv"},
            json={"model": "assistant", "messages": [{"role": "user", "content": "[[reply:hi jwt]]"}]},
        )
    assert response.status_code == 200, response.text
    stored = await deployment.messages("jwt-user", "jwt-conv")
    assert [row["role"] for row in stored] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("case", "authorization"),
    [
        ("missing", None),
        ("empty", ""),
        ("not bearer", "Basic a2V5LWFsaWNlOg=="),
        ("bearer without credential", "Bearer"),
        ("unknown key", "Bearer key-mallory"),
        ("garbage token", "Bearer a.b.c"),
    ],
)
async def test_rejected_credentials(deployment: Deployment, case: str, authorization: str | None) -> None:
    assert await status_with(deployment, authorization) == 401, case


def valid_claims() -> dict[str, Any]:
    return {"sub": "u", "exp": int(time.time()) + 60}


def without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in claims.items() if key != name}


# Each case is a valid token with one flaw: (what it changes in the claims, how it is signed).
FLAWED_TOKENS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], Callable[[dict[str, Any]], str]]] = [
    ("expired", lambda claims: {**claims, "exp": int(time.time()) - 10}, token),
    ("no exp", lambda claims: without(claims, "exp"), token),
    ("not yet valid", lambda claims: {**claims, "nbf": int(time.time()) + 600}, token),
    ("wrong signature", lambda claims: claims, lambda claims: token(claims, secret="x" * 40)),
    ("alg none", lambda claims: claims, unsigned),
    ("no subject", lambda claims: without(claims, "sub"), token),
    ("empty subject", lambda claims: {**claims, "sub": ""}, token),
    ("HS512 not allowed", lambda claims: claims, lambda claims: token(claims, algorithm="HS512")),
]


@pytest.mark.parametrize(("case", "flaw", "sign"), FLAWED_TOKENS, ids=[case[0] for case in FLAWED_TOKENS])
async def test_rejected_tokens(
    deployment: Deployment,
    case: str,
    flaw: Callable[[dict[str, Any]], dict[str, Any]],
    sign: Callable[[dict[str, Any]], str],
) -> None:
    # Made now, not when the module was collected: a token that has expired meanwhile would be refused
    # whatever its flaw. Its twin without the flaw is accepted, so the flaw is what gets it refused.
    claims = valid_claims()
    assert await status_with(deployment, "Bearer " + token(claims)) == 200, case
    assert await status_with(deployment, "Bearer " + sign(flaw(claims))) == 401, case


async def test_api_key_and_valid_jwt_accepted(deployment: Deployment) -> None:
    assert await status_with(deployment, "Bearer key-alice") == 200
    assert await status_with(deployment, "bearer key-alice") == 200
    assert await status_with(deployment, "Bearer " + token({"sub": "u", "exp": int(time.time()) + 60})) == 200


async def test_audience_and_issuer_are_checked_when_configured(deploy: DeployFactory) -> None:
    running = await deploy(
        {"SWITCHBOARD_JWT_AUDIENCE": "switchboard", "SWITCHBOARD_JWT_ISSUER": "https://auth.example"}
    )
    base = {"sub": "u", "exp": int(time.time()) + 60}
    good = {**base, "aud": "switchboard", "iss": "https://auth.example"}
    assert await status_with(running, "Bearer " + token(good)) == 200
    assert await status_with(running, "Bearer " + token({**good, "aud": "other"})) == 401
    assert await status_with(running, "Bearer " + token({**good, "iss": "https://evil.example"})) == 401
    assert await status_with(running, "Bearer " + token(base)) == 401
