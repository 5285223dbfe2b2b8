"""End users named by a trusted front end, such as Open WebUI, in `X-OpenWebUI-User-Id` or `X-Switchboard-User`.

A front end calls with one API key on behalf of all its users. When that key is one of
`SWITCHBOARD_TRUSTED_FRONTEND_KEYS`, the front end may name the user it calls for, and the caller is
`<key owner>/<that id>`: a user like any other, with conversations, runs, tasks and limits of its own.
Anyone can send a header, so from any other credential these headers are ignored, and that is logged
once per credential (by its owner, never the key).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable

import structlog
from starlette.datastructures import Headers

from domain.errors import InvalidRequest

log = structlog.get_logger("switchboard.api.auth")

# Open WebUI's (sent with ENABLE_FORWARD_USER_INFO_HEADERS=true), then the generic one.
USER_HEADERS = ("X-OpenWebUI-User-Id", "X-Switchboard-User")
MAX_ID_CHARS = 128
# Visible ASCII that can stand in a log line, a URL or a database key unescaped: enough for UUIDs
# (Open WebUI's ids), e-mail addresses and `provider|id` subjects. No `/`: `<owner>/<id>` stays
# unambiguous, so no end user of one front end can be named as another user.
ID_PATTERN = re.compile(r"[A-Za-z0-9._~@+:|=-]+")
ID_RULE = f"1 to {MAX_ID_CHARS} characters from A-Z, a-z, 0-9 and . _ ~ @ + : | = -"
# Users (JWT subjects) whose ignored headers were already logged; past this many, no more are.
_MAX_REMEMBERED = 1024


class FrontEndUsers:
    def __init__(self, *, owners: Collection[str]) -> None:
        # The owners of the trusted keys: `<owner>/…` names one of their users and nobody else.
        self._owners = frozenset(owners)
        self._told: set[Hashable] = set()

    def in_namespace(self, user_id: str) -> bool:
        """Whether `user_id` would be one of a trusted front end's users (a token must not claim one)."""
        owner, slash, _ = user_id.partition("/")
        return bool(slash) and owner in self._owners

    def user(self, headers: Headers, *, owner: str, trusted: bool, credential: Hashable) -> str:
        """The caller: the end user a trusted credential names, else the credential's owner.

        `credential` identifies the credential for logging an ignored header once (never the key itself).
        """
        named = [(name, value) for name in USER_HEADERS for value in headers.getlist(name)]
        if not named:
            return owner
        if not trusted:
            self._ignored(owner=owner, credential=credential, header=named[0][0])
            return owner
        # Taken as sent (the HTTP server trims spaces and tabs): an id is exact, or it is refused.
        values = {value for _, value in named}
        if len(values) > 1:
            raise InvalidRequest(
                "the end user is named more than once, differently: send one X-OpenWebUI-User-Id or X-Switchboard-User",
                param=named[0][0],
            )
        end_user = values.pop()
        header = named[0][0]
        if not end_user or len(end_user) > MAX_ID_CHARS or not ID_PATTERN.fullmatch(end_user):
            raise InvalidRequest(f"{header} must be {ID_RULE}", param=header)
        return f"{owner}/{end_user}"

    def _ignored(self, *, owner: str, credential: Hashable, header: str) -> None:
        if credential in self._told or len(self._told) >= _MAX_REMEMBERED:
            return
        self._told.add(credential)
        log.warning(
            "auth.end_user_header_ignored",
            user_id=owner,
            header=header,
            note="only keys in SWITCHBOARD_TRUSTED_FRONTEND_KEYS may name an end user; the caller is the "
            "credential's own user (logged once per credential)",
        )
