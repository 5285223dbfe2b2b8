"""Configuration contract: every knob is a `SWITCHBOARD_*` variable or a line in `.env`.

Settings are built once by whoever owns a process (the API lifespan, the worker start-up, the CLI)
and passed down; nothing here is a module-level instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.errors import ConfigurationError, first_problem

LLMProvider = Literal["openai", "anthropic", "ollama", "demo"]
AuthMode = Literal["required", "none"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/switchboard.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # `FOO=` in compose or .env means "not set", never "set to the empty string" (an empty JWT secret!).
        env_ignore_empty=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = "redis://127.0.0.1:6379/0"

    llm_provider: LLMProvider = "demo"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None

    auth: AuthMode = "required"
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    jwt_secret: SecretStr | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    # API keys of front ends (Open WebUI) trusted to name their end user in a header; each is also an API key.
    trusted_frontend_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host headers `/mcp` answers (DNS-rebinding protection): `name` or `name:*` for any port; `*` for any host.
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[::1]:*"]
    )
    # The Agents SDK exports traces to OpenAI only when this is on.
    agents_tracing: bool = False
    # A TOML file of assistants beside the built-in ones (`domain/assistant_file.py`).
    assistants_file: Path | None = None
    # How long one call to a tool of an MCP server may take, unless the server's `timeout_s` says otherwise.
    mcp_tool_timeout_s: float = Field(default=60.0, gt=0)

    history_window: int = Field(default=20, ge=1, le=10_000)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # An image, audio or file a message carries inline, decoded; a larger one is 413.
    max_part_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # A chat completion's body, which carries such parts base64-encoded (4/3 of their size) and, from
    # clients that resend the whole conversation, carries them again on every turn.
    max_chat_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    run_timeout_s: float = Field(default=300.0, gt=0)
    # A running attempt renews its lease; one whose lease lapsed this long ago is lost and retried.
    run_lease_s: float = Field(default=15.0, gt=0)
    # A turn for a conversation that has one queued or running: enqueue, reject or interrupt.
    conversation_policy: Literal["enqueue", "reject", "interrupt"] = "enqueue"
    # Attempts a run gets before it fails with `worker_lost`.
    # A tool call waiting for its owner's decision longer than this cancels its run.
    approval_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    run_max_attempts: int = Field(default=3, ge=1)
    # How long an open stream waits for Redis to come back before it catches up or gives up.
    relay_reconnect_s: float = Field(default=10.0, ge=0)
    # How often each worker's reconciler looks for runs to recover (one worker acts at a time).
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    # Past this many runs in the queue, new runs get 429 (each API process counts at most every 0.5 s).
    max_queued_runs: int = Field(default=10_000, ge=1)
    # Runs one user may have queued or running at once; past that, 429, so that no one user starves the rest.
    max_active_runs_per_user: int = Field(default=20, ge=1)

    # Operational knobs beyond the contract; the defaults suit one machine.
    max_inflight_runs: int = Field(default=1000, ge=1)
    worker_max_jobs: int = Field(default=200, ge=1)
    worker_poll_delay_s: float = Field(default=1.0, gt=0)
    worker_grace_s: float = Field(default=30.0, ge=0)
    keepalive_s: float = Field(default=15.0, gt=0)
    # How much longer than the run timeout a relay waits in silence before it gives the run up.
    relay_grace_s: float = Field(default=15.0, ge=0)
    event_log_max: int = Field(default=10_000, ge=10)
    event_log_ttl_s: int = Field(default=3600, ge=10)
    delta_coalesce_ms: float = Field(default=15.0, ge=0)
    db_pool_size: int = Field(default=20, ge=1)
    log_level: str = "INFO"
    log_json: bool = True

    # When set, the API's `GET /metrics` asks for `Authorization: Bearer <this>`; open otherwise.
    metrics_token: SecretStr | None = None
    # Each worker serves its own metrics on this port when it is set (off by default).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "0.0.0.0"
    # OpenTelemetry traces, exported over OTLP/HTTP where the standard `OTEL_EXPORTER_OTLP_*` variables say.
    otel: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, user_id = item.partition("=")
            if not sep or not key.strip() or not user_id.strip():
                raise ValueError("expected comma-separated key=user_id pairs")
            pairs[key.strip()] = user_id.strip()
        return pairs

    @field_validator("trusted_frontend_keys", mode="before")
    @classmethod
    def _parse_trusted_frontend_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("trusted_frontend_keys")
    @classmethod
    def _check_trusted_frontend_keys(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # Never name a key in the message: it ends up in logs. Its place in the list is enough.
        api_keys: dict[str, str] = info.data.get("api_keys", {})
        for place, key in enumerate(value, start=1):
            if key not in api_keys:
                raise ValueError(f"key number {place} is not one of SWITCHBOARD_API_KEYS")
        # A front end's users are `<owner>/<id>` (an id has at most 128 characters, a user id 255), and no
        # other key may already stand for one of them.
        owners = {api_keys[key] for key in value}
        if any(len(owner) > 126 for owner in owners):
            raise ValueError("the user of a trusted key must be at most 126 characters long")
        for user in api_keys.values():
            front_end = next((owner for owner in owners if user.startswith(owner + "/")), None)
            if front_end is not None:
                raise ValueError(
                    f"the API key user '{user}' would be one of the users of the front end '{front_end}'; "
                    "rename it in SWITCHBOARD_API_KEYS"
                )
        return value

    @field_validator("cors_origins", "mcp_allowed_hosts", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 with a short secret can be brute-forced offline from any one token.
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes long")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _check_chat_body(self) -> Settings:
        # A part the part limit lets through must fit in a body, next to the rest of the request.
        if self.max_chat_body_bytes < self.max_body_bytes + -(-self.max_part_bytes // 3) * 4:
            raise ValueError(
                "SWITCHBOARD_MAX_CHAT_BODY_BYTES must be at least SWITCHBOARD_MAX_BODY_BYTES plus 4/3 of "
                "SWITCHBOARD_MAX_PART_BYTES (a part arrives base64-encoded)"
            )
        return self

    @model_validator(mode="after")
    def _check_provider(self) -> Settings:
        if self.llm_provider != "demo" and not self.llm_model:
            raise ValueError(f"SWITCHBOARD_LLM_MODEL is required for provider {self.llm_provider}")
        if self.llm_provider == "anthropic" and self.llm_api_key is None:
            raise ValueError("SWITCHBOARD_LLM_API_KEY is required for provider anthropic")
        return self

    @property
    def auth_configured(self) -> bool:
        return bool(self.api_keys or self.jwt_secret or self.jwt_jwks_url)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a validation failure into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        where, message = first_problem(exc)
        name = f"SWITCHBOARD_{where.split('.')[0].upper()}" if where else "settings"
        raise ConfigurationError(f"{name}: {message}") from exc
