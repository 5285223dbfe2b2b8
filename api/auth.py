"""Who is calling: an API key, or a bearer JWT whose `sub` is the user id.

The user is taken from these credentials and nothing else: never from a request body, a header the
client chooses, or model output.
"""

from __future__ import annotations

import hashlib

import jwt

from domain.errors import AuthenticationFailed
from domain.settings import Settings

LOCAL_USER = "local"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._open = settings.auth == "none"
        # Looked up by digest, so the comparison time says nothing about how much of a key matched.
        self._keys = {_digest(key): user for key, user in settings.api_keys.items()}
        self._jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    def authenticate(self, authorization: str | None) -> str:
        """The caller's user id, or `AuthenticationFailed`."""
        if self._open:
            return LOCAL_USER
        if not authorization:
            raise AuthenticationFailed("missing credentials: send 'Authorization: Bearer <key or token>'")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key or token>'")
        user = self._keys.get(_digest(credential))
        if user is not None:
            return user
        if self._jwt_secret is not None and credential.count(".") == 2:
            return self._decode_jwt(credential)
        raise AuthenticationFailed("invalid API key or token")

    def _decode_jwt(self, token: str) -> str:
        assert self._jwt_secret is not None
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("token expired") from None
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("invalid token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed("invalid token: no subject")
        return subject
