"""`switchboard api | worker | migrate | healthcheck | dev | status | runs`.

Misconfiguration ends the command with one line per mistake naming the setting, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import sys
from collections.abc import Sequence

import sniffio

from domain.errors import ConfigurationError
from domain.logging import configure_logging, get_logger
from domain.settings import Settings, load_settings

EXIT_CONFIG = 2
# A dependency (the database) could not be reached.
EXIT_UNREACHABLE = 1


# Every command reads its settings from the environment, or from a `.env` file in the working directory.
_SETTINGS_NOTE = "Settings come from the environment or a .env file in the working directory."
_ALL_SETTINGS = "Reads every SWITCHBOARD_* setting (see the README's table of settings)."
_BACKENDS = "Reads SWITCHBOARD_DATABASE_URL and SWITCHBOARD_REDIS_URL."


def _epilog(*lines: str) -> str:
    return "\n".join((*lines, _SETTINGS_NOTE))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard chat service: serve it, run its workers, and look after it.",
        epilog=_epilog("Each command's --help says which settings it reads."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, *epilog: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=_epilog(*epilog),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    api = command("api", "serve the HTTP API (uvicorn)", _ALL_SETTINGS)
    api.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    command("worker", "run a worker that executes chat runs", _ALL_SETTINGS)
    command(
        "migrate",
        "upgrade the database schema to the newest revision",
        "Says in one line which revision the database is now at; makes the folder of an SQLite file",
        "if it is missing, and says so. Exits 1, with one line, when the database cannot be reached.",
        "Reads SWITCHBOARD_DATABASE_URL.",
    )
    check = command(
        "healthcheck",
        "exit 0 if this host's API (GET /healthz) or worker (a fresh heartbeat in Redis) is healthy",
        "Reads SWITCHBOARD_REDIS_URL and SWITCHBOARD_RUN_LEASE_S (worker).",
    )
    check.add_argument("role", choices=["api", "worker"])
    check.add_argument("--port", type=int, default=8000, help="the API's port (default: 8000)")
    dev = command(
        "dev",
        "run everything on this machine: API, one worker, demo model",
        "Reads every SWITCHBOARD_* setting; those not set get development defaults: SQLite under ./var,",
        "a private Redis (unless SWITCHBOARD_REDIS_URL is set), an API key kept in var/dev-api-key.",
        "Ctrl-C, SIGTERM or closing the terminal stops everything it started.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")

    status = command(
        "status",
        "show whether Redis and the database answer, the live workers, the queue and the last hour's runs",
        _BACKENDS,
        "Exits 1 when Redis or the database is unreachable, with one line on stderr for each.",
    )
    status.add_argument("--json", action="store_true", dest="as_json", help="print one JSON object")

    runs = command("runs", "list, show, cancel or retry runs, of every user", _BACKENDS)
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, summary: str, *epilog: str) -> argparse.ArgumentParser:
        return actions.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=_epilog(*epilog),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    listing = action("list", "list runs, newest first", "Reads SWITCHBOARD_DATABASE_URL.")
    listing.add_argument("--user", help="only this user's runs")
    listing.add_argument(
        "--status",
        metavar="S",
        help="only runs in this state: queued, running, awaiting_approval, succeeded, failed or cancelled",
    )
    listing.add_argument("--limit", type=_positive, default=20, help="at most this many runs (default: 20)")
    listing.add_argument("--json", action="store_true", dest="as_json", help="print a JSON array")
    show = action(
        "show", "show one run: its state, owner, error and pending approvals", "Reads SWITCHBOARD_DATABASE_URL."
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", dest="as_json", help="print one JSON object")
    cancel = action(
        "cancel",
        "stop a run, as its owner's POST /v1/runs/{id}/cancel would",
        "A queued run, or one awaiting approval, is cancelled at once; a running one is marked in the",
        "database, and its worker is told through Redis (or reads the mark at its next lease renewal).",
        "Reads SWITCHBOARD_DATABASE_URL, SWITCHBOARD_REDIS_URL, SWITCHBOARD_EVENT_LOG_MAX and",
        "SWITCHBOARD_EVENT_LOG_TTL_S.",
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    retry = action(
        "retry",
        "run a failed or cancelled run again, as a new run; queue a queued run whose job was lost",
        "A failed or cancelled run is queued again as a NEW run (its id is printed) in the same",
        "conversation, for the same user and assistant, with the same input. It is refused when that",
        "would not ask the same question: a turn outside any conversation, a later turn in the",
        "conversation, or a partial answer kept. Retrying a run twice names the first retry.",
        "A queued run whose job is missing from Redis gets it back under its own id.",
        "Running, awaiting_approval and succeeded runs are refused.",
        _BACKENDS,
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "status", None) is not None:
        # Checked here rather than with `choices`, which would load the models for every `--help`.
        from domain.run_views import RUN_STATUSES

        if args.status not in RUN_STATUSES:
            parser.error(f"argument --status: invalid choice: {args.status!r} (choose from {', '.join(RUN_STATUSES)})")

    try:
        if args.command == "dev":
            # Started as the `switchboard` script rather than `python -m switchboard`: from here on, at least.
            from switchboard.signals import exit_quietly_on_stop_signals

            exit_quietly_on_stop_signals()
            from switchboard.dev import run_dev

            sys.exit(run_dev(host=args.host, port=args.port))
        settings = load_settings()
        # The admin commands answer a person: their output is the answer, and log lines below a warning
        # (Alembic announcing its plugins, say) would only be noise in it.
        admin = args.command in ("status", "runs")
        configure_logging(level="WARNING" if admin else settings.log_level, json=settings.log_json)
        if args.command == "api":
            run_api(settings, host=args.host, port=args.port)
        elif args.command == "worker":
            run_worker(settings)
        elif args.command == "healthcheck":
            from switchboard.healthcheck import api_healthy, worker_healthy

            sys.exit(0 if (api_healthy(port=args.port) if args.role == "api" else worker_healthy(settings)) else 1)
        elif args.command == "status":
            from switchboard.status import run_status

            sys.exit(run_status(settings, as_json=args.as_json))
        elif args.command == "runs":
            from switchboard.runs_admin import run_command

            options = {key: value for key, value in vars(args).items() if key not in ("command", "action")}
            sys.exit(run_command(settings, args.action, **options))
        else:
            run_migrate(settings)
    except ConfigurationError as exc:
        # One line per mistake: the assistants file reports all of its at once.
        for line in exc.message.splitlines():
            print(f"switchboard: configuration error: {line}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _version() -> str:
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server.

    Everything imported at start-up lives as long as the process, so it is frozen out of the
    collector's view; and each request allocates thousands of short-lived objects, so young
    collections run every 50,000 allocations instead of 700. Measured in the benchmark: the
    collector's share of a run fell from 3-4.7 ms to about 0.5 ms at concurrency 100.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def declare_asyncio() -> None:
    """Tell sniffio this thread runs asyncio, so it stops asking `asyncio.current_task()` every time.

    httpcore and anyio ask sniffio which event loop runs on every lock and checkpoint; on Python 3.11
    each answer costs a `getpid()` system call. The profile had this at 5% of a worker's CPU.
    """
    sniffio.thread_local.name = "asyncio"


def run_api(settings: Settings, *, host: str, port: int) -> None:
    import uvicorn

    from api.app import create_app

    log = get_logger("switchboard.api")
    if settings.auth == "none":
        log.warning("auth.disabled", note="SWITCHBOARD_AUTH=none: every caller is the user 'local'")
    elif not settings.auth_configured:
        raise ConfigurationError(
            "SWITCHBOARD_API_KEYS: no authentication is configured; set SWITCHBOARD_API_KEYS or "
            "SWITCHBOARD_JWT_SECRET, or SWITCHBOARD_AUTH=none for a single-user setup"
        )
    app = create_app(settings)
    tune_gc()
    declare_asyncio()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def run_worker(settings: Settings) -> None:
    import uvloop

    from workers.main import build_worker

    asyncio.set_event_loop(uvloop.new_event_loop())
    worker = build_worker(settings)
    tune_gc()
    declare_asyncio()
    worker.run()


def run_migrate(settings: Settings) -> None:
    """One line on success (two when a folder was made for SQLite); one line naming the setting when the
    database cannot be reached."""
    # Alembic announces each plugin it loads, as it is imported: never news to the person migrating.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from switchboard.migrate import DatabaseUnreachable, upgrade

    try:
        result = upgrade(settings.database_url)
    except DatabaseUnreachable as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    if result.created_folder is not None:
        print(f"Created the folder {result.created_folder} for the SQLite database.")
    print(result.summary())


if __name__ == "__main__":
    main()
