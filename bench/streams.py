"""Open streams and slow readers: the memory an API process spends per stream, run as its own process.

    python -m bench.streams hold --port P --model M --api-key K --streams 1000 --prompt '[[tokens:30]] [[tokendelay:1]]'
    python -m bench.streams slow --port P --model M --api-key K --bytes 8000000 --chunk 8192

``hold`` opens ``--streams`` connections at once, sends one slow streaming request on each, and
follows them all with the load generator's lean parser (``bench.loadgen.Connection``). Protocol (one
JSON object per line on stdout, like ``bench.loadgen``): warm-up requests, then ``ready``; after a line
on stdin, the streams, with a ``progress`` line every 0.25 s (connected, response heads, streams that
have had content and are not finished yet, finished, errors); then ``done`` with the error kinds and
latencies; then it waits for a last line on stdin, so the orchestrator can read its CPU time.

``slow`` sends one request for a ``--bytes`` reply (the bench fake LLM's ``[[bulk:BYTES:CHUNK]]``) on a
socket with a small receive buffer, reads nothing until told (a line on stdin), then reads it all and
reports what it got: ``sent``, then ``done`` with bytes, content characters and whether ``[DONE]``
came.

The soft limit of open files is raised to the hard limit first (1,000 sockets need more than the
common 1,024). Requests only go to 127.0.0.1, and every phase has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import sys
import time
from collections import Counter
from typing import Any

from bench.loadgen import HOST, Connection, LoadGenerator, RequestFailed, build_request

perf = time.perf_counter


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# ----------------------------------------------------------------------------- hold


async def hold(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    if args.warmup:
        warm_payload = build_request(
            port=args.port, path=args.path, model=args.model, prompt=args.warmup_prompt, api_key=args.api_key
        )
        gen = LoadGenerator(port=args.port, payload=warm_payload, concurrency=min(args.warmup, 20), timeout_s=60)
        warm, _ = await gen.run(args.warmup, 120)
        gen.close()
        warmup_errors = dict(warm.errors)
    else:
        warmup_errors = {}
    _emit({"event": "ready", "warmup": args.warmup, "warmup_errors": warmup_errors, "nofile": list(nofile)})
    await _stdin_line()

    loop = asyncio.get_running_loop()
    payload = build_request(port=args.port, path=args.path, model=args.model, prompt=args.prompt, api_key=args.api_key)
    n = args.streams
    conns: list[Connection | None] = [None] * n
    errors: Counter[str] = Counter()
    ttft: list[float] = []
    total: list[float] = []
    finished = 0
    start = perf()
    deadline = start + args.timeout

    async def one(i: int) -> None:
        nonlocal finished
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(Connection, HOST, args.port), args.timeout)
        except (OSError, TimeoutError) as exc:
            errors[
                "connect" if not isinstance(exc, OSError) or exc.errno is None else f"connect_errno_{exc.errno}"
            ] += 1
            finished += 1
            return
        conns[i] = conn
        t0 = perf()
        waiter = conn.request(payload)
        timer = loop.call_at(loop.time() + max(0.0, deadline - perf()), conn.abort, "timeout")
        try:
            await waiter
        except RequestFailed as exc:
            errors[exc.reason] += 1
            return
        finally:
            timer.cancel()
            finished += 1
            conn.close()
        ttft.append((conn.t_first - t0) * 1000)
        total.append((perf() - t0) * 1000)

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    max_streaming = 0
    t_all_streaming: float | None = None
    cpu0 = time.process_time()
    while True:
        done = all(t.done() for t in tasks)
        live = [c for c in conns if c is not None]
        heads = sum(1 for c in live if c._status)
        streaming = sum(1 for c in live if c._found_content and not (c.closed or c._waiter is None or c._waiter.done()))
        if streaming > max_streaming:
            max_streaming = streaming
        if t_all_streaming is None and streaming >= n:
            t_all_streaming = perf() - start
        _emit(
            {
                "event": "progress",
                "t": round(perf() - start, 3),
                "connected": len(live),
                "heads": heads,
                "streaming": streaming,
                "finished": finished,
                "errors": sum(errors.values()),
            }
        )
        if done:
            break
        await asyncio.sleep(0.25)
    await asyncio.gather(*tasks, return_exceptions=True)
    _emit(
        {
            "event": "done",
            "streams": n,
            "ok": len(total),
            "errors": dict(errors),
            "wall_s": perf() - start,
            "self_cpu_s": time.process_time() - cpu0,
            "max_streaming": max_streaming,
            "all_streaming_after_s": t_all_streaming,
            "ttft_ms": [round(x, 3) for x in ttft],
            "total_ms": [round(x, 3) for x in total],
        }
    )
    await _stdin_line()


# ----------------------------------------------------------------------------- slow reader


async def slow(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    prompt = f"[[bulk:{args.bytes}:{args.chunk}]]"
    payload = build_request(port=args.port, path=args.path, model=args.model, prompt=prompt, api_key=args.api_key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window (set before connecting, so it is what the connection advertises): the
    # kernel buffers little on our side, and the server's writes stall soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.setblocking(False)
    await asyncio.wait_for(loop.sock_connect(sock, (HOST, args.port)), 30)
    await loop.sock_sendall(sock, payload)
    _emit({"event": "sent", "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)})
    await _stdin_line()  # "read": the orchestrator has measured the server while we did not read
    t0 = perf()
    received = bytearray()
    deadline = perf() + args.timeout
    while perf() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), max(0.1, deadline - perf()))
        except TimeoutError:
            break
        if not data:
            break
        received += data
        if received.endswith(b"0\r\n\r\n") and b"data: [DONE]" in received[-256:]:
            break
    read_s = perf() - t0
    sock.close()
    content = 0
    error = False
    for line in bytes(received).split(b"\n"):
        if line.startswith(b'data: {"error"'):
            error = True
        elif line.startswith(b"data: {"):
            try:
                chunk = json.loads(line[6:])
            except ValueError:
                continue  # a line cut by the chunked framing: counted as missing content
            for choice in chunk.get("choices") or ():
                content += len((choice.get("delta") or {}).get("content") or "")
    head = bytes(received[:12])
    _emit(
        {
            "event": "done",
            "status": int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0,
            "bytes": len(received),
            "content_chars": content,
            "saw_done": b"data: [DONE]" in received[-4096:],
            "error_event": error,
            "read_s": read_s,
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["hold", "slow"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--prompt", default="[[tokens:30]] [[tokendelay:1]]")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--warmup-prompt", default="[[tokens:20]]")
    parser.add_argument("--bytes", type=int, default=8_000_000)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--rcvbuf", type=int, default=16384)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    runner(hold(args) if args.mode == "hold" else slow(args))


if __name__ == "__main__":
    main()
