"""The in-process baseline: Switchboard's agent run inside one Starlette endpoint, no queue.

    python -m bench.inprocess_app --port P --llm-base-url http://127.0.0.1:Q/v1

The same ``GeneralAgentRunner`` the workers run, with the model and pooled HTTP client built by
``workers.llm`` from ``Settings`` (provider ``openai``), is run by the request handler itself. Its
publisher feeds an ``asyncio.Queue`` that the response streams from as OpenAI-style SSE, rendered by
the API's own ``ChunkWriter``. No auth, no validation beyond the request schema, no database, no
Redis: this is the floor for the agent work, as the original one-process design had it.
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
from domain.chat import ModelParams
from domain.events import ClientToolCallDelta, RunEvent
from domain.run_request import ChatJob
from domain.settings import load_settings
from switchboard.cli import declare_asyncio, tune_gc
from workers.agent_runner import RunOutcome
from workers.general_agent import GeneralAgentRunner
from workers.llm import create_http_client, create_model, speaks_openai_chat

_END = object()


class QueuePublisher:
    """What the engine needs of a publisher (`text`, `emit`, `run_id`, `attempt`), feeding a queue."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.attempt = 1
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def text(self, delta: str) -> None:
        if delta:
            self.queue.put_nowait(delta)

    async def emit(self, event: RunEvent) -> None:
        self.queue.put_nowait(event)

    async def flush(self) -> None:
        return None


def create_app(llm_base_url: str, llm_model: str = "fake-model") -> Starlette:
    settings = load_settings(
        llm_provider="openai", llm_base_url=llm_base_url, llm_api_key="fake-llm-key", llm_model=llm_model
    )
    http_client = create_http_client(settings)
    model = create_model(settings, http_client)
    runner = GeneralAgentRunner(model, pass_raw_openai_fields=speaks_openai_chat(settings))

    async def chat_completions(request: Request) -> Response:
        try:
            body = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, status_code=400)
        run_id = "run_" + secrets.token_hex(12)
        job = ChatJob(
            run_id=run_id,
            user_id="bench",
            assistant=body.model,
            request_id=run_id,
            conversation_id=None,
            attempt=1,
            history=body.messages,
            params=ModelParams(temperature=body.temperature, max_tokens=body.max_tokens),
        )
        publisher = QueuePublisher(run_id)
        task = asyncio.create_task(runner.run(job, job.history or [], publisher))  # type: ignore[arg-type]
        task.add_done_callback(lambda _: publisher.queue.put_nowait(_END))
        writer = ChunkWriter(completion_id="chatcmpl-" + run_id[4:], created=int(time.time()), model=body.model)
        return StreamingResponse(_stream(task, publisher, writer), media_type="text/event-stream")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http_client.aclose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _stream(
    task: asyncio.Task[RunOutcome], publisher: QueuePublisher, writer: ChunkWriter
) -> AsyncIterator[bytes]:
    queue = publisher.queue
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, str):
                yield f"data: {writer.text(item)}\n\n".encode()
            elif isinstance(item, ClientToolCallDelta):
                piece = ClientToolCall(index=item.index, call_id=item.call_id, name=item.name, arguments=item.arguments)
                yield f"data: {writer.tool_call(piece)}\n\n".encode()
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(args.llm_base_url, args.llm_model)
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
