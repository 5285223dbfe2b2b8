"""The in-process baseline: Switchboard's agent run inside one Starlette endpoint, no queue.

    python -m bench.inprocess_app --port P --llm-base-url http://127.0.0.1:Q/v1 [--todo-database-url URL]

The same ``GeneralAgentRunner`` the workers run, with the model and pooled HTTP client built by
``workers.llm`` from ``Settings`` (provider ``openai``), is run by the request handler itself. Its
publisher is the workers' own ``RunPublisher`` (first text delta at once, later ones coalesced for
``SWITCHBOARD_DELTA_COALESCE_MS``, the same setting and default as the workers, and paced by the same
``TextPacing`` shared by the process's runs), whose sink feeds an
``asyncio.Queue`` instead of Redis; the response streams from that queue as OpenAI-style SSE, rendered
by the API's own ``ChunkWriter``. No auth, no validation beyond the request schema, no Redis: this is
the floor for the agent work, as the original one-process design had it.

With ``--todo-database-url``, model ``todo`` runs the workers' ``TodoAgentRunner`` (Agents SDK, the todo
MCP server in this process over an in-memory MCP session, tasks in that PostgreSQL database). Its tool
calls are fenced by a run row in ``running`` state (``runs.hold``) and recorded (``tool_calls``), as in
a worker, so the baseline makes run rows for it: 200 at a time, in one INSERT, on demand. Without a
database there is no todo assistant (the general baseline needs none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from api.openai.chunks import ChunkWriter
from api.openai.schemas import ChatCompletionRequest
from api.relay.progress import ClientToolCall
from domain.assistants import TODO_ASSISTANT
from domain.chat import ModelParams
from domain.events import ClientToolCallDelta, RunEvent, TextDelta
from domain.run_request import ChatJob
from domain.settings import load_settings
from switchboard.cli import declare_asyncio, tune_gc
from workers.agent_runner import RunOutcome
from workers.event_sink import EventSink
from workers.general_agent import GeneralAgentRunner
from workers.llm import create_http_client, create_model, speaks_openai_chat
from workers.publisher import RunPublisher
from workers.text_pacing import TextPacing

_END = object()
BENCH_USER = "bench"
RUN_ROWS_PER_INSERT = 200


class QueueSink(EventSink):
    """The workers' event sink, but into this request's queue instead of Redis: `RunPublisher` sends
    its (coalesced) events here, and the response streams them."""

    def __init__(self) -> None:  # no EventLog, no sender task: a queue needs no round trip
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def send(self, event: RunEvent, *, urgent: bool = False) -> None:
        self.queue.put_nowait(event)

    async def deliver(self, event: RunEvent) -> None:
        self.queue.put_nowait(event)


class RunRows:
    """Run rows in `running` state for the todo runner's fenced tool calls, made in batches."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._free: list[str] = []
        self._lock = asyncio.Lock()

    async def take(self) -> str:
        if not self._free:
            async with self._lock:
                if not self._free:
                    await self._make(RUN_ROWS_PER_INSERT)
        return self._free.pop()

    async def _make(self, count: int) -> None:
        from sqlalchemy import insert

        from domain.models import Run

        ids = ["run_" + secrets.token_hex(12) for _ in range(count)]
        rows = [
            {"id": run_id, "user_id": BENCH_USER, "assistant": TODO_ASSISTANT, "status": "running", "attempt": 1}
            for run_id in ids
        ]
        async with self._engine.begin() as connection:
            await connection.execute(insert(Run), rows)
        self._free.extend(ids)


def create_app(llm_base_url: str, llm_model: str = "fake-model", todo_database_url: str | None = None) -> Starlette:
    settings = load_settings(
        llm_provider="openai", llm_base_url=llm_base_url, llm_api_key="fake-llm-key", llm_model=llm_model
    )
    # One per process, as in a worker: the more runs stream at once, the longer each holds its text.
    pacing = TextPacing(settings.delta_coalesce_ms / 1000)
    http_client = create_http_client(settings)
    model = create_model(settings, http_client)
    runner: Any = GeneralAgentRunner(model, pass_raw_openai_fields=speaks_openai_chat(settings))
    todo_runner: Any = None
    run_rows: RunRows | None = None
    db_engine: Any = None
    if todo_database_url is not None:
        from domain.database import create_engine
        from todo.server import create_todo_server
        from workers.agents_model import create_agents_model
        from workers.todo_agent import TodoAgentRunner

        # The workers' pool size, so that the todo baseline's database access is tuned like theirs.
        db_engine = create_engine(todo_database_url, pool_size=settings.db_pool_size)
        todo_runner = TodoAgentRunner(
            model=create_agents_model(settings, http_client),
            todo_server=create_todo_server(db_engine=db_engine),
            db_engine=db_engine,
            lease_s=settings.run_lease_s,
        )
        run_rows = RunRows(db_engine)

    async def chat_completions(request: Request) -> Response:
        try:
            body = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, status_code=400)
        todo = body.model == TODO_ASSISTANT and todo_runner is not None
        run_id = await run_rows.take() if todo and run_rows is not None else "run_" + secrets.token_hex(12)
        job = ChatJob(
            run_id=run_id,
            user_id=BENCH_USER,
            assistant=body.model,
            request_id=run_id,
            conversation_id=None,
            attempt=1,
            history=body.messages,
            params=ModelParams(temperature=body.temperature, max_tokens=body.max_tokens),
        )
        sink = QueueSink()
        publisher = RunPublisher(sink, run_id=run_id, attempt=1, pacing=pacing)
        chosen = todo_runner if todo else runner
        task = asyncio.create_task(chosen.run(job, job.history or [], publisher))

        def ended(_: object) -> None:
            publisher.flush()  # coalesced text still waiting for its timer goes out first
            publisher.close()
            sink.queue.put_nowait(_END)

        task.add_done_callback(ended)
        writer = ChunkWriter(completion_id="chatcmpl-" + run_id[4:], created=int(time.time()), model=body.model)
        return StreamingResponse(_stream(task, sink.queue, writer), media_type="text/event-stream")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http_client.aclose()
            if db_engine is not None:
                await db_engine.dispose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _stream(
    task: asyncio.Task[RunOutcome], queue: asyncio.Queue[Any], writer: ChunkWriter
) -> AsyncIterator[bytes]:
    try:
        ended = False
        while not ended:
            # Whatever is waiting goes out in one write, consecutive text deltas as one chunk: a busy
            # server writes what it has, not one chunk per delta that piled up meanwhile (Switchboard's
            # worker likewise joins a run's deltas that meet in one Redis batch).
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            out: list[str] = []
            text: list[str] = []
            for item in items:
                if isinstance(item, TextDelta):
                    text.append(item.text)
                    continue
                if text:
                    out.append(f"data: {writer.text(''.join(text))}\n\n")
                    text.clear()
                if item is _END:
                    ended = True
                    break
                if isinstance(item, ClientToolCallDelta):
                    piece = ClientToolCall(
                        index=item.index, call_id=item.call_id, name=item.name, arguments=item.arguments
                    )
                    out.append(f"data: {writer.tool_call(piece)}\n\n")
            if text:
                out.append(f"data: {writer.text(''.join(text))}\n\n")
            if out:
                yield "".join(out).encode()
        try:
            outcome = task.result()
        except Exception as exc:  # the run failed: tell the client the OpenAI way
            error = {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}}
            yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
            return
        yield f"data: {writer.finish(outcome.finish_reason)}\n\ndata: [DONE]\n\n".encode()
    finally:
        if not task.done():
            task.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess_app", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm-base-url", required=True)
    parser.add_argument("--llm-model", default="fake-model")
    parser.add_argument("--todo-database-url", default=None, help="PostgreSQL for the todo assistant (migrated)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(args.llm_base_url, args.llm_model, args.todo_database_url)
    # The same process tuning as `switchboard api` and `switchboard worker`, so that the comparison
    # measures the architecture, not the runtime settings.
    tune_gc()
    declare_asyncio()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
