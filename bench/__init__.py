"""Switchboard benchmark: direct vs in-process agent vs the full queue path, against the fake LLM.

Run it with ``.venv/bin/python -m bench`` (``--help`` for the knobs, ``--quick`` for a short run).
Modules:

``bench.run``            the orchestrator: starts the servers, runs every cell, writes the results
``bench.loadgen``        the load generator, run as its own process (lean asyncio HTTP/1.1 + SSE client)
``bench.inprocess_app``  the in-process baseline: the same agent inside one Starlette endpoint
``bench.procstat``       CPU time of processes from /proc/<pid>/stat
``bench.profile``        summarising py-spy raw (collapsed) profiles
``bench.report``         BENCHMARKS.md and results.json
"""
