"""Tokens verified against a JWKS URL (RS256, EdDSA), and the algorithm-confusion attacks on them."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from tests.conftest import DeployFactory
from tests.deployment import JWT_SECRET, Deployment

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ed_jwk = json.loads(OKPAlgorithm.to_jwk(ED_KEY.public_key()))
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ed_jwk, "kid": "ed-1", "use": "sig", "alg": "EdDSA"},
        ]
    }


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    body = json.dumps(jwks()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest_asyncio.fixture(loop_scope="session")
async def running(deploy: DeployFactory, jwks_url: str) -> Deployment:
    return await deploy({"SWITCHBOARD_JWT_JWKS_URL": jwks_url})


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "jwks-user", "exp": int(time.time()) + 60, **extra}


def public_pem() -> bytes:
    return RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def status(running: Deployment, token: str) -> int:
    async with running.http(None) as http:
        response = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 200:
        assert response.json() == {"user_id": "jwks-user"}
    return response.status_code


async def test_rs256_and_eddsa_tokens_from_the_key_set(running: Deployment) -> None:
    assert await status(running, jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})) == 200
    assert await status(running, jwt.encode(claims(), ED_KEY, algorithm="EdDSA", headers={"kid": "ed-1"})) == 200
    # The shared secret still works beside the key set.
    assert await status(running, jwt.encode(claims(), JWT_SECRET, algorithm="HS256")) == 200


def _hs256_with_public_key() -> str:
    """The classic confusion attack: HS256, with the server's public RSA key as the HMAC secret."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signing_input = header + b"." + payload
    signature = jwt.utils.base64url_encode(hmac.new(public_pem(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    ("case", "make"),
    [
        (
            "signed by another key",
            lambda: jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}),
        ),
        ("unknown key id", lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})),
        (
            "expired",
            lambda: jwt.encode(claims(exp=int(time.time()) - 5), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}),
        ),
        ("RS512 not accepted", lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS512", headers={"kid": "rsa-1"})),
        ("HS256 with the public key as secret", _hs256_with_public_key),
    ],
)
async def test_rejected(running: Deployment, case: str, make: Any) -> None:
    assert await status(running, make()) == 401, case
