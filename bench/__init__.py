"""Switchboard benchmark: direct vs in-process agent vs the full queue path, against the fake LLM.

Run it with ``.venv/bin/python -m bench`` (``--help`` for the knobs, ``--quick`` for a short run).
Modules:

``bench.run``            the orchestrator: starts the servers, runs every cell and part, writes the results
``bench.loadgen``        the load generator, run as its own process (lean asyncio HTTP/1.1 + SSE client)
``bench.streams``        open streams at once, and a slow reader (the API's memory per stream)
``bench.inprocess_app``  the in-process baselines: the same agents (general and todo) inside one Starlette endpoint
``bench.fake_llm``       the tests' fake LLM plus a directive for large replies in large chunks
``bench.procstat``       CPU time of processes from /proc/<pid>/stat
``bench.profile``        summarising py-spy raw (collapsed) profiles
``bench.plots``          PNG plots of a run (matplotlib, from the ``bench`` extra)
``bench.report``         BENCHMARKS.md and results.json
"""
