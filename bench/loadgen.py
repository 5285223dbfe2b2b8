"""A lean load generator: streaming chat completions over keep-alive HTTP/1.1, measured per request.

Run as its own process by ``bench.run`` so that its CPU never mixes with the servers'::

    python -m bench.loadgen --port P --model M --prompt '[[tokens:20]]' --concurrency 10 --requests 500

One connection per concurrent worker, reused for every request it sends. The client writes a
prebuilt POST and parses just enough of the response: the status line and headers, chunked (or
Content-Length) framing, the first non-empty ``"content"`` delta (time to first token) and
``data: [DONE]``. Nothing else is decoded.

Protocol with the orchestrator (one JSON object per line on stdout):

1. warm-up requests at the same concurrency, then ``{"event": "ready", ...}``;
2. wait for a line on stdin (``go``), then the measured requests;
3. ``{"event": "done", "ttft_ms": [...], "total_ms": [...], "errors": {...}, "wall_s": ...}``;
4. wait for another line (or end of file) on stdin, and exit.

Requests only ever go to 127.0.0.1, each has a timeout, and each phase has a request count and a
deadline, so a run always ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter

HOST = "127.0.0.1"

# A non-empty content delta, in compact (`"content":"x`) or spaced (`"content": "x`) JSON.
_CONTENT = re.compile(rb'"content": ?"[^"]')
_DONE = b"data: [DONE]"
_ERROR = b'data: {"error"'

_HEAD, _SIZE, _DATA, _DATA_CRLF, _TRAILER, _BODY = range(6)

perf = time.perf_counter


class RequestFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that runs one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._state = _HEAD
        self._remaining = 0
        self._status = 0
        self._close_after = False
        self._found_content = False
        self._scan = bytearray()  # payload kept only until the first content delta is found
        self._tail = b""  # last bytes of payload, for markers split across reads
        self.t_first = 0.0
        self.saw_done = False
        self.saw_error = False

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection")

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            return
        self._buf += data
        try:
            self._parse()
        except (ValueError, IndexError):
            self._fail("bad_response")

    # ------------------------------------------------------------------ requests

    def request(self, payload: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._buf.clear()
        self._scan.clear()
        self._tail = b""
        self._state = _HEAD
        self._status = 0
        self._close_after = False
        self._found_content = False
        self.t_first = 0.0
        self.saw_done = False
        self.saw_error = False
        self.transport.write(payload)
        return self._waiter

    def abort(self, reason: str) -> None:
        self._fail(reason)
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    def _fail(self, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(RequestFailed(reason))

    def _finish(self) -> None:
        if self._close_after:
            self.close()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._status != 200:
            waiter.set_exception(RequestFailed(f"http_{self._status}"))
        elif self.saw_error:
            waiter.set_exception(RequestFailed("error_event"))
        elif not self._found_content:
            waiter.set_exception(RequestFailed("no_content"))
        elif not self.saw_done:
            waiter.set_exception(RequestFailed("no_done"))
        else:
            waiter.set_result(None)

    # ------------------------------------------------------------------ parsing

    def _payload(self, chunk: bytes | bytearray | memoryview) -> None:
        if not self._found_content:
            self._scan += chunk
            if _CONTENT.search(self._scan) is not None:
                self.t_first = perf()
                self._found_content = True
            window = bytes(self._scan)
            self._scan_tail(window)
            if self._found_content:
                self._scan.clear()
            return
        self._scan_tail(self._tail + bytes(chunk))

    def _scan_tail(self, window: bytes) -> None:
        if _DONE in window:
            self.saw_done = True
        if _ERROR in window:
            self.saw_error = True
        self._tail = window[-16:]

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        while pos < end or (self._state == _BODY and self._remaining == 0):
            state = self._state
            if state == _HEAD:
                i = buf.find(b"\r\n\r\n", pos)
                if i < 0:
                    break
                head = bytes(buf[pos:i]).lower()
                pos = i + 4
                self._status = int(head[9:12])
                self._close_after = b"\r\nconnection: close" in head
                if b"\r\ntransfer-encoding: chunked" in head:
                    self._state = _SIZE
                else:
                    m = re.search(rb"\r\ncontent-length: *(\d+)", head)
                    self._remaining = int(m.group(1)) if m else 0
                    self._state = _BODY
            elif state == _SIZE:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    break
                size = int(bytes(buf[pos:i]).split(b";", 1)[0], 16)
                pos = i + 2
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._remaining = size
                    self._state = _DATA
            elif state == _DATA:
                take = min(end - pos, self._remaining)
                self._payload(memoryview(buf)[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                if end - pos < 2:
                    break
                pos += 2
                self._state = _SIZE
            elif state == _TRAILER:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    break
                done = i == pos
                pos = i + 2
                if done:
                    self._state = _HEAD
                    del buf[:pos]
                    self._finish()
                    return
            else:  # _BODY with Content-Length
                take = min(end - pos, self._remaining)
                if take:
                    self._payload(memoryview(buf)[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _HEAD
                    del buf[:pos]
                    self._finish()
                    return
        del buf[:pos]


def build_request(*, port: int, path: str, model: str, prompt: str, api_key: str | None) -> bytes:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True},
        separators=(",", ":"),
    ).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Phase:
    """A bounded number of requests at a fixed concurrency, with a deadline."""

    def __init__(self, total: int, deadline_s: float) -> None:
        self.total = total
        self.issued = 0
        self.deadline = perf() + deadline_s
        self.ttft_ms: list[float] = []
        self.total_ms: list[float] = []
        self.errors: Counter[str] = Counter()

    def take(self) -> bool:
        if self.issued >= self.total or perf() > self.deadline:
            return False
        self.issued += 1
        return True


class LoadGenerator:
    def __init__(self, *, port: int, payload: bytes, concurrency: int, timeout_s: float) -> None:
        self.port = port
        self.payload = payload
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.connections: list[Connection | None] = [None] * concurrency

    async def _connect(self, slot: int) -> Connection:
        existing = self.connections[slot]
        if existing is not None and not existing.closed:
            return existing
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(Connection, HOST, self.port), self.timeout_s)
        self.connections[slot] = conn
        return conn

    async def _one(self, slot: int, phase: Phase) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn = await self._connect(slot)
        except (OSError, TimeoutError):
            phase.errors["connect"] += 1
            await asyncio.sleep(0.05)
            return
        t0 = perf()
        waiter = conn.request(self.payload)
        timer = loop.call_later(self.timeout_s, conn.abort, "timeout")
        try:
            await waiter
        except RequestFailed as exc:
            phase.errors[exc.reason] += 1
            if exc.reason == "bad_response":
                conn.abort(exc.reason)
            return
        finally:
            timer.cancel()
        t_end = perf()
        phase.ttft_ms.append((conn.t_first - t0) * 1000)
        phase.total_ms.append((t_end - t0) * 1000)

    async def _worker(self, slot: int, phase: Phase) -> None:
        while phase.take():
            await self._one(slot, phase)

    async def run(self, total: int, deadline_s: float) -> tuple[Phase, float]:
        phase = Phase(total, deadline_s)
        start = perf()
        await asyncio.gather(*(self._worker(slot, phase) for slot in range(self.concurrency)))
        return phase, perf() - start

    def close(self) -> None:
        for conn in self.connections:
            if conn is not None:
                conn.close()


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    payload = build_request(port=args.port, path=args.path, model=args.model, prompt=args.prompt, api_key=args.api_key)
    gen = LoadGenerator(port=args.port, payload=payload, concurrency=args.concurrency, timeout_s=args.timeout)
    warm, warm_wall = await gen.run(args.warmup, args.max_phase_s)
    _emit({"event": "ready", "warmup": args.warmup, "warmup_errors": dict(warm.errors), "warmup_s": warm_wall})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    phase, wall = await gen.run(args.requests, args.duration or args.max_phase_s)
    cpu = time.process_time() - cpu0
    gen.close()
    _emit(
        {
            "event": "done",
            "requests": phase.issued,
            "ok": len(phase.total_ms),
            "errors": dict(phase.errors),
            "wall_s": wall,
            "self_cpu_s": cpu,
            "ttft_ms": [round(x, 3) for x in phase.ttft_ms],
            "total_ms": [round(x, 3) for x in phase.total_ms],
        }
    )
    # Stay alive (idle) until told to go, so the orchestrator can read our CPU time from /proc.
    await loop.run_in_executor(None, sys.stdin.readline)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", default="[[tokens:20]]")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--requests", type=int, required=True, help="upper bound of measured requests")
    parser.add_argument("--duration", type=float, default=0.0, help="stop issuing after this many seconds (0 = off)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    parser.add_argument("--max-phase-s", type=float, default=600.0, help="deadline for issuing requests per phase")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))


if __name__ == "__main__":
    main()
