"""The admin command line (issue 13, section 2): `switchboard status`, `switchboard runs list | show |
cancel | retry`, `--version` and the help texts.

Every command runs as a real subprocess, as an operator would run it, in a scratch directory with only
SWITCHBOARD_DATABASE_URL and SWITCHBOARD_REDIS_URL set, against a real deployment (API, worker, fake
model) whose runs are started over HTTP.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from pathlib import Path
from typing import Any

import httpx2
from redis import asyncio as aioredis

from domain import keys
from domain.run_views import RUN_STATUSES
from tests._services import free_port
from tests.deployment import Deployment
from tests.test_approvals import paused
from tests.test_assistants_file import deployed, web_server, workdir
from tests.test_assistants_file import marker as approval_marker
from tests.test_cli import clean_env, run_switchboard
from tests.test_openai_wire import CHAT, MODEL, marker, user

__all__ = ["deployed", "web_server", "workdir"]  # fixtures: the assistants file whose tool needs approval

EXIT_FAILED = 1


def operator_env(deployment: Deployment, **overrides: str) -> dict[str, str]:
    return clean_env(
        **{
            "SWITCHBOARD_DATABASE_URL": deployment.database_url,
            "SWITCHBOARD_REDIS_URL": deployment.redis_url,
            **overrides,
        }
    )


async def admin(deployment: Deployment, tmp_path: Path, *args: str, **overrides: str) -> tuple[int, str, str]:
    return await run_switchboard(*args, env=operator_env(deployment, **overrides), cwd=tmp_path)


async def admin_ok(deployment: Deployment, tmp_path: Path, *args: str) -> str:
    code, stdout, stderr = await admin(deployment, tmp_path, *args)
    assert code == 0, (args, stdout, stderr)
    assert "Traceback" not in stderr
    return stdout


def start_turn(client: httpx2.AsyncClient, text: str, *, conversation: str) -> asyncio.Task[httpx2.Response]:
    """A non-streaming turn, answered when its run ends: started, not awaited."""
    body = {"model": MODEL, "messages": user(text)}
    return asyncio.create_task(client.post(CHAT, json=body, headers={"X-Conversation-ID": conversation}))


async def runs_of(deployment: Deployment, conversation: str, **where: str) -> list[dict[str, Any]]:
    condition = "".join(f" AND r.{column} = :{column}" for column in where)
    return await deployment.query(
        "SELECT r.id, r.status, r.attempt, r.user_id, r.assistant, r.conversation_id FROM runs r "
        f"JOIN conversations c ON c.id = r.conversation_id WHERE c.key = :key{condition} "
        "ORDER BY r.created_at",
        key=conversation,
        **where,
    )


async def wait_for_run(deployment: Deployment, conversation: str, *, timeout_s: float = 20, **where: str) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await runs_of(deployment, conversation, **where)
        if found:
            return str(found[-1]["id"])
        assert time.monotonic() < deadline, f"no run {where} in {conversation}"
        await asyncio.sleep(0.05)


async def wait_for_status(deployment: Deployment, run_id: str, statuses: set[str], *, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        [row] = await deployment.query("SELECT status FROM runs WHERE id = :id", id=run_id)
        if row["status"] in statuses:
            return str(row["status"])
        assert time.monotonic() < deadline, f"{run_id} is still {row['status']}"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ version and help


async def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    code, stdout, stderr = await run_switchboard("--version", env=clean_env(), cwd=tmp_path)
    assert code == 0, stderr
    assert stdout.strip() == f"switchboard {importlib.metadata.version('switchboard')}"


HELP = {
    ("status",): ("Redis", ["SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_REDIS_URL"]),
    ("runs",): ("runs", ["SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_REDIS_URL"]),
    ("runs", "list"): ("newest first", ["SWITCHBOARD_DATABASE_URL"]),
    ("runs", "show"): ("pending approvals", ["SWITCHBOARD_DATABASE_URL"]),
    ("runs", "cancel"): ("/cancel", ["SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_REDIS_URL"]),
    ("runs", "retry"): ("NEW run", ["SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_REDIS_URL"]),
    ("api",): ("HTTP API", ["SWITCHBOARD_*"]),
    ("worker",): ("executes chat runs", ["SWITCHBOARD_*"]),
    ("migrate",): ("schema", ["SWITCHBOARD_DATABASE_URL"]),
    ("healthcheck",): ("heartbeat", ["SWITCHBOARD_REDIS_URL"]),
    ("dev",): ("demo model", ["SWITCHBOARD_*"]),
}


async def test_every_command_says_what_it_does_and_which_settings_it_reads(tmp_path: Path) -> None:
    env = clean_env()
    # A few at a time: a dozen interpreters starting at once on a small, busy machine time out.
    gate = asyncio.Semaphore(3)

    async def helped(*command: str) -> tuple[int, str, str]:
        async with gate:
            return await run_switchboard(*command, "--help", env=env, cwd=tmp_path, timeout_s=60)

    top, *results = await asyncio.gather(helped(), *(helped(*command) for command in HELP))
    assert top[0] == 0 and "status" in top[1] and "runs" in top[1] and "--version" in top[1]
    for (command, (does, settings)), (code, stdout, stderr) in zip(HELP.items(), results, strict=True):
        assert code == 0, stderr
        assert stdout.startswith(f"usage: switchboard {' '.join(command)}"), stdout
        flat = " ".join(stdout.split())
        assert does in flat, f"`{' '.join(command)} --help` does not say what it does:\n{stdout}"
        for setting in settings:
            assert setting in flat, f"`{' '.join(command)} --help` does not name {setting}:\n{stdout}"
    listing_help = " ".join(results[list(HELP).index(("runs", "list"))][1].split())
    assert all(status in listing_help for status in RUN_STATUSES), listing_help


# ------------------------------------------------------------------ status


async def test_status_reports_each_unreachable_dependency_on_one_line(deployment: Deployment, tmp_path: Path) -> None:
    nowhere_redis = f"redis://127.0.0.1:{free_port()}/0"
    code, stdout, stderr = await admin(deployment, tmp_path, "status", SWITCHBOARD_REDIS_URL=nowhere_redis)
    assert code == EXIT_FAILED, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    [line] = stderr.strip().splitlines()
    assert "Redis is unreachable" in line and nowhere_redis in line and "SWITCHBOARD_REDIS_URL" in line
    assert "Redis       UNREACHABLE" in stdout
    assert "Database    reachable, migrated to head" in stdout  # the reachable half is still reported

    nowhere_db = f"postgresql+asyncpg://someone:secret-pw@127.0.0.1:{free_port()}/nothing"
    code, stdout, stderr = await admin(
        deployment,
        tmp_path,
        "status",
        "--json",
        SWITCHBOARD_DATABASE_URL=nowhere_db,
        SWITCHBOARD_REDIS_URL=nowhere_redis,
    )
    assert code == EXIT_FAILED
    assert "Traceback" not in stdout + stderr and "secret-pw" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert "SWITCHBOARD_REDIS_URL" in lines[0] and "SWITCHBOARD_DATABASE_URL" in lines[1]
    report = json.loads(stdout)
    assert report["redis"]["reachable"] is False and report["database"]["reachable"] is False

    code, stdout, stderr = await admin(deployment, tmp_path, "runs", "list", SWITCHBOARD_DATABASE_URL=nowhere_db)
    assert code == EXIT_FAILED and stdout == "" and "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("switchboard: the database is unreachable") and "SWITCHBOARD_DATABASE_URL" in line


async def test_status_shows_the_live_worker_the_queue_and_the_last_hour(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-status-{marker()}"
    async with deployment.http("alice") as client:
        hanging = start_turn(client, f"[[hang]] {marker()}", conversation=conversation)
        running_id = await wait_for_run(deployment, conversation, status="running")
        # A second turn of the same conversation waits, queued, for the first.
        waiting = start_turn(client, f"[[reply:next]] {marker()}", conversation=conversation)
        queued_id = await wait_for_run(deployment, conversation, status="queued")
        try:
            report = json.loads(await admin_ok(deployment, tmp_path, "status", "--json"))
            human = await admin_ok(deployment, tmp_path, "status")
        finally:
            await admin_ok(deployment, tmp_path, "runs", "cancel", queued_id)
            await admin_ok(deployment, tmp_path, "runs", "cancel", running_id)
            await asyncio.wait_for(asyncio.gather(hanging, waiting), 30)

    redis_status, database = report["redis"], report["database"]
    assert redis_status["reachable"] and redis_status["version"]
    assert len(redis_status["workers"]) == 1 and redis_status["workers"][0]["last_heartbeat_s_ago"] < 30
    assert redis_status["queue_depth"] >= 1  # the running run's job
    assert database["reachable"] and database["migrated"] and database["revision"] == database["head"]
    oldest = database["oldest_queued"]
    assert oldest["id"] == queued_id and oldest["waits_for_earlier_turn"] is True and oldest["age_s"] >= 0
    counts = database["runs_last_hour"]
    assert set(counts) >= {"queued", "running", "awaiting_approval", "succeeded", "failed", "cancelled"}
    assert counts["running"] >= 1 and counts["queued"] >= 1

    assert "Redis       reachable, version" in human
    assert "Workers     1 live" in human and redis_status["workers"][0]["id"] in human
    assert f"Oldest      {queued_id} (alice)" in human and "earlier turn" in human
    assert "Last hour" in human and "awaiting_approval" in human


# ------------------------------------------------------------------ runs list and show


async def test_runs_list_and_show_after_a_real_run(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-list-{marker()}"
    async with deployment.http("bob") as client:
        answered = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user("[[reply:hello operator]]")},
            headers={"X-Conversation-ID": conversation},
        )
    assert answered.status_code == 200, answered.text
    run_id = answered.headers["x-run-id"]

    listed = json.loads(await admin_ok(deployment, tmp_path, "runs", "list", "--user", "bob", "--limit", "3", "--json"))
    assert listed[0]["id"] == run_id and len(listed) <= 3
    assert all(run["user_id"] == "bob" for run in listed)
    mine = listed[0]
    assert mine["status"] == "succeeded" and mine["conversation_key"] == conversation and mine["attempt"] == 1
    table = await admin_ok(deployment, tmp_path, "runs", "list", "--status", "succeeded")
    assert table.splitlines()[0].split()[:3] == ["RUN", "STATUS", "USER"]
    assert any(line.startswith(run_id) and "succeeded" in line and "bob" in line for line in table.splitlines())
    assert run_id not in await admin_ok(deployment, tmp_path, "runs", "list", "--status", "failed", "--limit", "100")

    shown = await admin_ok(deployment, tmp_path, "runs", "show", run_id)
    assert f"run           {run_id}" in shown and "succeeded" in shown and conversation in shown
    assert "approvals     0 pending" in shown
    detail = json.loads(await admin_ok(deployment, tmp_path, "runs", "show", run_id, "--json"))
    assert detail["id"] == run_id and detail["user_id"] == "bob" and detail["pending_approvals"] == []

    code, _, stderr = await admin(deployment, tmp_path, "runs", "show", "run_000000000000000000000000")
    assert code == EXIT_FAILED and stderr.strip() == "switchboard: no run run_000000000000000000000000"
    code, _, stderr = await admin(deployment, tmp_path, "runs", "list", "--status", "nonsense")
    assert code == 2 and "invalid choice" in stderr


async def test_show_names_the_error_of_a_failed_run(deployment: Deployment, tmp_path: Path) -> None:
    async with deployment.http("alice") as client:
        failed = await client.post(CHAT, json={"model": MODEL, "messages": user(f"[[error:500]] {marker()}")})
    run_id = failed.headers["x-run-id"]
    shown = await admin_ok(deployment, tmp_path, "runs", "show", run_id)
    [error_line] = [line for line in shown.splitlines() if line.startswith("error")]
    assert "failed" in shown and error_line.split()[1].endswith(":"), shown  # "error  CODE: message"


# ------------------------------------------------------------------ cancel


async def test_cancel_a_queued_and_a_running_run(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-cancel-{marker()}"
    async with deployment.http("carol") as client:
        hanging = start_turn(client, f"[[hang]] {marker()}", conversation=conversation)
        running_id = await wait_for_run(deployment, conversation, status="running")
        waiting = start_turn(client, f"[[reply:never]] {marker()}", conversation=conversation)
        queued_id = await wait_for_run(deployment, conversation, status="queued")

        said = await admin_ok(deployment, tmp_path, "runs", "cancel", queued_id)
        assert said.strip() == f"{queued_id}: cancelled (it was queued)"
        assert await wait_for_status(deployment, queued_id, {"cancelled"}, timeout_s=0.1) == "cancelled"
        # Its waiting client is told at once: the run never started, so no worker would say so.
        assert (await asyncio.wait_for(waiting, 10)).status_code == 200

        asked = time.monotonic()
        said = await admin_ok(deployment, tmp_path, "runs", "cancel", running_id)
        assert said.strip() == f"{running_id}: asked to stop; its worker stops it"
        await wait_for_status(deployment, running_id, {"cancelled"}, timeout_s=10)
        stopped_s = time.monotonic() - asked
        answer = await asyncio.wait_for(hanging, 10)
    assert answer.status_code == 200, answer.text
    assert stopped_s < 5
    [row] = await deployment.query("SELECT cancel_requested_at, attempt FROM runs WHERE id = :id", id=queued_id)
    assert row["cancel_requested_at"] is not None and row["attempt"] == 0  # it never started

    again = await admin_ok(deployment, tmp_path, "runs", "cancel", running_id)
    assert again.strip() == f"{running_id}: already cancelled; nothing to cancel"
    code, _, stderr = await admin(deployment, tmp_path, "runs", "cancel", "run_000000000000000000000000")
    assert code == EXIT_FAILED and "no run" in stderr


# ------------------------------------------------------------------ retry


async def test_retry_a_failed_run_as_a_new_run_in_its_conversation(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-retry-{marker()}"
    question = f"[[error:500]] {marker()}"
    async with deployment.http("alice") as client:
        failed = await client.post(
            CHAT, json={"model": MODEL, "messages": user(question)}, headers={"X-Conversation-ID": conversation}
        )
    assert failed.status_code == 502
    old_id = failed.headers["x-run-id"]

    said = await admin_ok(deployment, tmp_path, "runs", "retry", old_id)
    new_id = said.split(" as ", 1)[1].split()[0]
    assert said.startswith(f"{old_id}: retried as run_") and new_id != old_id
    old, new = await runs_of(deployment, conversation)
    assert (old["id"], new["id"]) == (old_id, new_id)
    assert (new["user_id"], new["assistant"], new["conversation_id"]) == (
        old["user_id"],
        old["assistant"],
        old["conversation_id"],
    )
    # The same question was asked again, by a worker: here the fake model fails it the same way.
    assert await wait_for_status(deployment, new_id, {"failed", "succeeded"}) == "failed"
    [row] = await deployment.query("SELECT attempt, error_code FROM runs WHERE id = :id", id=new_id)
    assert row["attempt"] >= 1
    # The question is stored once: the new run answers the turn of the first.
    messages = await deployment.messages("alice", conversation)
    assert [message["content"] for message in messages if message["role"] == "user"] == [question]

    code, _, stderr = await admin(deployment, tmp_path, "runs", "retry", old_id)
    assert code == EXIT_FAILED and stderr.strip() == f"switchboard: {old_id} was retried already, as {new_id}"
    nowhere_redis = f"redis://127.0.0.1:{free_port()}/0"
    code, _, stderr = await admin(deployment, tmp_path, "runs", "retry", new_id, SWITCHBOARD_REDIS_URL=nowhere_redis)
    [line] = stderr.strip().splitlines()
    assert code == EXIT_FAILED and "Redis is unreachable" in line and "SWITCHBOARD_REDIS_URL" in line
    assert len(await runs_of(deployment, conversation)) == 2


async def test_retry_refuses_what_it_cannot_redo_faithfully(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-refuse-{marker()}"
    async with deployment.http("alice") as client:
        first = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user(f"[[error:500]] {marker()}")},
            headers={"X-Conversation-ID": conversation},
        )
        second = await client.post(
            CHAT,
            json={"model": MODEL, "messages": user("[[reply:fine]]")},
            headers={"X-Conversation-ID": conversation},
        )
    first_id, second_id = first.headers["x-run-id"], second.headers["x-run-id"]

    code, _, stderr = await admin(deployment, tmp_path, "runs", "retry", first_id)
    assert code == EXIT_FAILED and f"{second_id} came after it" in stderr
    code, _, stderr = await admin(deployment, tmp_path, "runs", "retry", second_id)
    assert code == EXIT_FAILED and "it succeeded" in stderr
    assert len(await runs_of(deployment, conversation)) == 2


async def test_retry_queues_a_queued_run_whose_job_was_lost(deploy: Any, tmp_path: Path) -> None:
    workerless = await deploy(start_worker=False)
    conversation = f"admin-lost-{marker()}"
    redis = aioredis.from_url(workerless.redis_url)
    async with workerless.http("alice") as client:
        waiting = start_turn(client, f"[[reply:back]] {marker()}", conversation=conversation)
        run_id = await wait_for_run(workerless, conversation, status="queued")
        try:
            # Redis lost the job (a flush, a failover without persistence).
            assert await redis.delete(f"arq:job:{run_id}") == 1
            await redis.zrem(keys.QUEUE_NAME, run_id)

            report = json.loads(await admin_ok(workerless, tmp_path, "status", "--json"))
            assert report["redis"]["workers"] == [] and report["redis"]["queue_depth"] == 0
            assert report["database"]["oldest_queued"]["id"] == run_id
            assert report["database"]["oldest_queued"]["job_in_redis"] is False
            assert "Workers     0 live" in await admin_ok(workerless, tmp_path, "status")

            said = await admin_ok(workerless, tmp_path, "runs", "retry", run_id)
            assert said.strip() == f"{run_id}: its job was missing from Redis; queued it again"
            assert await redis.exists(f"arq:job:{run_id}") == 1 and await redis.zcard(keys.QUEUE_NAME) == 1
            said = await admin_ok(workerless, tmp_path, "runs", "retry", run_id)
            assert said.strip() == f"{run_id}: queued, and its job is in Redis; nothing to do"
            assert await redis.zcard(keys.QUEUE_NAME) == 1

            # The same run, not a new one, is answered once a worker comes.
            workerless.start_worker()
            answer = await asyncio.wait_for(waiting, 30)
        finally:
            await redis.aclose()
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "back"
    [row] = await runs_of(workerless, conversation)
    assert row["id"] == run_id and row["status"] == "succeeded"


async def test_retry_refuses_a_running_run(deployment: Deployment, tmp_path: Path) -> None:
    conversation = f"admin-busy-{marker()}"
    async with deployment.http("alice") as client:
        hanging = start_turn(client, f"[[hang]] {marker()}", conversation=conversation)
        run_id = await wait_for_run(deployment, conversation, status="running")
        try:
            code, _, stderr = await admin(deployment, tmp_path, "runs", "retry", run_id)
        finally:
            await admin_ok(deployment, tmp_path, "runs", "cancel", run_id)
            await asyncio.wait_for(hanging, 30)
    assert code == EXIT_FAILED and "it is running" in stderr


# ------------------------------------------------------------------ a run awaiting approval


async def test_show_lists_the_pending_approval_and_cancel_ends_the_wait(deployed: Deployment, tmp_path: Path) -> None:
    mark = approval_marker()
    run_id, pending = await paused(deployed, mark)

    shown = await admin_ok(deployed, tmp_path, "runs", "show", run_id)
    assert "awaiting_approval" in shown and "approvals     1 pending" in shown
    assert f"{pending['call_id']}  box.append_line" in shown and mark in shown
    detail = json.loads(await admin_ok(deployed, tmp_path, "runs", "show", run_id, "--json"))
    [call] = detail["pending_approvals"]
    assert call["call_id"] == pending["call_id"] and call["arguments"] == {"text": mark}
    waiting = json.loads(await admin_ok(deployed, tmp_path, "runs", "list", "--status", "awaiting_approval", "--json"))
    assert run_id in [run["id"] for run in waiting]

    code, _, stderr = await admin(deployed, tmp_path, "runs", "retry", run_id)
    assert code == EXIT_FAILED and "waiting for its owner to approve" in stderr
    said = await admin_ok(deployed, tmp_path, "runs", "cancel", run_id)
    assert said.strip() == f"{run_id}: cancelled (it was awaiting_approval)"
    assert await wait_for_status(deployed, run_id, {"cancelled"}, timeout_s=0.1) == "cancelled"
