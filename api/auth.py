"""Who is calling: an API key, or a bearer JWT whose `sub` is the user id.

The user is taken from these credentials and nothing else: never from a request body, a path, a
header the client chooses, or model output. The one exception is a trusted front end's key, whose
requests may name the end user they are for (`api/frontend_users.py`).

Tokens come in two kinds, told apart by the algorithm in their header and never mixed: HS256,
signed with `SWITCHBOARD_JWT_SECRET` (as Better Auth issues them with a shared secret), and RS256 or
EdDSA, verified against the keys at `SWITCHBOARD_JWT_JWKS_URL`. Each kind is checked only with its
own key and algorithm list, which is what defeats algorithm confusion (a token signed with HS256
using the public RSA key as the secret) and `alg: none`.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import jwt
from starlette.datastructures import Headers

from api.frontend_users import FrontEndUsers
from domain.errors import AuthenticationFailed
from domain.settings import Settings
from domain.text import unstorable_reason

LOCAL_USER = "local"
# What a user id column holds.
MAX_USER_ID_CHARS = 255
HMAC_ALGORITHMS = ["HS256"]
JWKS_ALGORITHMS = ["RS256", "EdDSA"]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._open = settings.auth == "none"
        # Looked up by digest, so the comparison time says nothing about how much of a key matched.
        self._keys = {_digest(key): user for key, user in settings.api_keys.items()}
        self._trusted = {_digest(key) for key in settings.trusted_frontend_keys}
        self._front_ends = FrontEndUsers(owners={settings.api_keys[key] for key in settings.trusted_frontend_keys})
        self._jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwks = (
            jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300) if settings.jwt_jwks_url else None
        )
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    async def authenticate(self, headers: Headers) -> str:
        """The caller's user id, or `AuthenticationFailed`: the credential's own user, or the end user a
        trusted front end's key names (`InvalidRequest` when that header is malformed)."""
        owner, key = await self._owner(headers.get("authorization"))
        # An ignored header is logged once per key (by its digest), token subject, or for everyone (no auth).
        credential = key if key is not None else ("user", owner)
        return self._front_ends.user(headers, owner=owner, trusted=key in self._trusted, credential=credential)

    async def _owner(self, authorization: str | None) -> tuple[str, bytes | None]:
        """Whose credential this is, and the digest of the API key it is (None for a token, or no auth)."""
        if self._open:
            return LOCAL_USER, None
        if not authorization:
            raise AuthenticationFailed("missing credentials: send 'Authorization: Bearer <key or token>'")
        scheme, _, credential = authorization.partition(" ")
        # Only the spaces and tabs HTTP allows around a value: a key followed by a no-break space is another key.
        credential = credential.strip(" \t")
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key or token>'")
        key = _digest(credential)
        user = self._keys.get(key)
        if user is not None:
            return user, key
        if credential.count(".") == 2 and (self._jwt_secret is not None or self._jwks is not None):
            subject = await self._decode_jwt(credential)
            if self._front_ends.in_namespace(subject):
                raise AuthenticationFailed("invalid token: its subject names a trusted front end's user")
            return subject, None
        raise AuthenticationFailed("invalid API key or token")

    async def _decode_jwt(self, token: str) -> str:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if algorithm in HMAC_ALGORITHMS and self._jwt_secret is not None:
                key: Any = self._jwt_secret
                algorithms = HMAC_ALGORITHMS
            elif algorithm in JWKS_ALGORITHMS and self._jwks is not None:
                # The key set is cached; a fetch (first use, unknown key id) must not stall the loop.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
                algorithms = [algorithm]
            else:
                raise AuthenticationFailed("invalid token: algorithm not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("token expired") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise AuthenticationFailed("invalid token") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed("invalid token: no subject")
        if unstorable_reason(subject, max_chars=MAX_USER_ID_CHARS) is not None:
            raise AuthenticationFailed(
                f"invalid token: the subject must be storable text of at most {MAX_USER_ID_CHARS} characters"
            )
        return subject
