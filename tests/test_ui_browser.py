"""The todo web page at `/`, driven in a real browser: sign in, chat, tasks, reload, and isolation.

Headless Chromium from Debian's `chromium` package through Playwright (no browser download), against
a deployment on the demo model, so no LLM server is involved. The machine has no internet: the
flags below keep Chromium from calling home, and the test checks the page itself never leaves the
deployment's origin.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import DeployFactory
from tests.deployment import USERS, Deployment

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package; Playwright downloads no browser
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPLY_TIMEOUT_MS = 15_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        message = "Chromium is not installed: sudo apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this is an error, not a skip)", pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        # `launch` gives every run a fresh, throw-away user-data-dir, and each context is a clean profile.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page plus what it did: JavaScript errors, and every URL it asked for."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.urls.append(request.url))
        # A Content-Security-Policy violation shows only as a console message.
        page.on(
            "console",
            lambda message: "Content Security Policy" in message.text and self.errors.append(message.text),
        )


async def open_page(browser: Browser) -> Watched:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    return Watched(await context.new_page())


async def sign_in(page: Page, user: str) -> None:
    await page.get_by_label("API key or token").fill(USERS[user])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#user-id")).to_have_text(user)


async def test_the_page_is_public_self_contained_and_not_cached(deployment: Deployment) -> None:
    async with httpx2.AsyncClient(base_url=deployment.base_url) as client:
        page = await client.get("/")
        script = await client.get("/static/app.js")
        style = await client.get("/static/app.css")
        revalidated = await client.get("/static/app.js", headers={"If-None-Match": script.headers["etag"]})
        missing = await client.get("/static/nothing-here.js")
        outside = await client.get("/static/../web.py")
        direct = await client.get("/static/index.html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    assert revalidated.status_code == 304
    assert missing.status_code == 404 and outside.status_code == 404
    assert direct.headers["content-security-policy"] == policy
    for body in (page.text, script.text, style.text):
        assert not re.search(r"https?://", body), "the page must not load anything from elsewhere"
    assert "innerHTML" not in script.text


async def test_chat_tasks_reload_and_another_user(browser: Browser, deploy: DeployFactory) -> None:
    deployment = await deploy({"SWITCHBOARD_LLM_PROVIDER": "demo"})
    alice = await open_page(browser)
    page = alice.page

    # 1. Sign in with alice's key.
    await page.goto(deployment.base_url + "/")
    await expect(page.get_by_label("API key or token")).to_be_focused()
    await sign_in(page, "alice")
    composer = page.get_by_label("Message to the assistant")
    await expect(composer).to_be_focused()

    # 2. Ask for a task, with Enter; the reply streams as Server-Sent Events.
    await composer.fill("Add a task to buy milk")
    async with page.expect_response(lambda response: response.url.endswith("/api/alice/chat")) as chat:
        await composer.press("Enter")
    response: Any = await chat.value
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    conversation_id = response.headers["x-conversation-id"]

    # 3. The streamed reply, its tool call with the result, and the task in the panel.
    reply = page.locator(".message.assistant").last
    await expect(reply.locator(".message-text")).to_contain_text(re.compile("milk", re.I), timeout=REPLY_TIMEOUT_MS)
    tool_call = reply.locator(".tool-call[data-tool='add_task']")
    await expect(tool_call).to_have_attribute("data-state", "done")
    # A line in words; the tool's own name, arguments and result only behind the toggle.
    summary = tool_call.locator("summary")
    await expect(summary).to_have_text("Added task “Buy milk”")
    details = tool_call.locator(".tool-detail")
    await expect(details).to_be_hidden()
    await summary.click()
    await expect(tool_call).to_have_attribute("open", "")
    await expect(details.locator(".tool-name")).to_have_text("add_task")
    assert json.loads(await details.locator(".tool-args").inner_text()) == {"title": "Buy milk"}
    assert json.loads(await details.locator(".tool-output").inner_text())["status"] == "created"
    await summary.click()
    await expect(details).to_be_hidden()
    tasks = page.locator("#task-list .task")
    await expect(tasks).to_have_count(1)
    await expect(tasks.first).to_contain_text(re.compile("buy milk", re.I))
    await expect(page.locator("#messages")).to_have_attribute("aria-busy", "false")
    assert page.url.endswith("#c=" + conversation_id)
    current = page.locator(".conversation[aria-current='page']")
    await expect(current).to_contain_text("Add a task to buy milk")

    # The filter: the new task is pending, not completed.
    await page.get_by_text("Completed", exact=True).click()
    await expect(page.locator("#tasks-empty")).to_be_visible()
    await page.get_by_text("Pending", exact=True).click()
    await expect(tasks).to_have_count(1)
    await page.get_by_text("All", exact=True).click()
    await expect(tasks).to_have_count(1)

    # 4. Reload: still signed in, the same conversation open, with its history.
    await page.reload()
    await expect(page.locator("#user-id")).to_have_text("alice")
    assert page.url.endswith("#c=" + conversation_id)
    await expect(page.locator(".message.user .message-text")).to_have_text(["Add a task to buy milk"])
    history = page.locator(".message.assistant")
    await expect(history).to_have_count(1)
    await expect(history.locator(".message-text")).to_contain_text(re.compile("milk", re.I))
    await expect(history.locator(".tool-call[data-tool='add_task'][data-state='done']")).to_have_count(1)
    await expect(page.locator(".conversation[aria-current='page']")).to_have_count(1)
    await expect(page.locator("#chat-title")).to_have_text("Add a task to buy milk")
    await expect(tasks).to_have_count(1)
    await expect(history.locator(".tool-call summary")).to_have_text(["Added task “Buy milk”"])

    # 5. The round mark beside the task is a button that completes it, through the todo tool over
    # `/mcp`, as alice. A tool error says so and leaves the task as it was.
    mark = tasks.first.get_by_role("button", name="Mark “Buy milk” as done")
    refused = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"content": [{"type": "text", "text": "task 1 not found"}], "isError": True},
        }
    )
    mcp = f"{deployment.base_url}/mcp"
    await page.route(mcp, lambda route: route.fulfill(status=200, content_type="application/json", body=refused))
    await mark.click()
    await expect(page.locator("#tasks-error")).to_have_text("Couldn't mark “Buy milk” as done. Task 1 not found.")
    await expect(tasks.first).not_to_have_class(re.compile(r"\bcompleted\b"))
    await page.unroute(mcp)
    async with page.expect_response(lambda response: response.url == mcp) as call:
        await mark.click()
    response = await call.value
    assert response.status == 200 and response.request.post_data_json["params"] == {
        "name": "complete_task",
        "arguments": {"task_id": 1},
    }
    await expect(tasks.first).to_have_class(re.compile(r"\bcompleted\b"))
    await expect(page.locator("#tasks-error")).to_be_hidden()
    await expect(page.locator("#task-list button.task-check")).to_have_count(0)  # nothing takes a task back
    async with deployment.http("alice") as client:
        listed = (await client.get("/api/alice/tasks")).json()["data"]
    assert [(task["title"], task["completed"]) for task in listed] == [("Buy milk", True)]

    # 6. Bob, in a browser context of his own, even handed alice's link, sees none of it.
    bob = await open_page(browser)
    await bob.page.goto(f"{deployment.base_url}/#c={conversation_id}")
    await sign_in(bob.page, "bob")
    await expect(bob.page.locator("#banner")).to_contain_text("wasn't found")
    await expect(bob.page.locator("#conversations-empty")).to_be_visible()
    await expect(bob.page.locator("#tasks-empty")).to_be_visible()
    await expect(bob.page.locator(".conversation")).to_have_count(0)
    await expect(bob.page.locator("#task-list .task")).to_have_count(0)
    await expect(bob.page.locator(".message")).to_have_count(0)
    seen = bob.page.locator("#sidebar, #messages, #tasks-pane").filter(has_text=re.compile("milk", re.I))
    await expect(seen).to_have_count(0)
    await expect(bob.page.locator("#chat-title")).to_have_text("New conversation")
    assert "#c=" not in bob.page.url

    # Signing out forgets the key: a reload asks for it again.
    await bob.page.get_by_role("button", name="Sign out").click()
    await expect(bob.page.get_by_label("API key or token")).to_be_visible()
    await bob.page.reload()
    await expect(bob.page.get_by_label("API key or token")).to_be_visible()

    for watched in (alice, bob):
        assert watched.errors == []
        strangers = [url for url in watched.urls if not url.startswith(deployment.base_url + "/")]
        assert strangers == [], "the page asked for something outside the deployment"


def sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def error_json(message: str, type_: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}})


async def test_errors_read_as_sentences(browser: Browser, deployment: Deployment) -> None:
    """The chat endpoint is stubbed in the browser: an SSE `error` event, an error body, no network, a 401."""
    watched = await open_page(browser)
    page = watched.page
    await page.goto(deployment.base_url + "/")
    await sign_in(page, "carol")
    composer = page.get_by_label("Message to the assistant")
    chat = f"{deployment.base_url}/api/carol/chat"
    replies = page.locator(".message.assistant")

    stream = sse(
        ("tool_call", {"tool": "add_task", "args": {"title": "x"}}),
        ("tool_result", {"tool": "add_task", "result": {"error": "the title is too long"}}),
        ("error", {"message": "the model provider did not answer", "code": "provider_timeout"}),
    )
    await page.route(chat, lambda route: route.fulfill(status=200, content_type="text/event-stream", body=stream))
    await composer.fill("first")
    await composer.press("Enter")
    await expect(replies.last.locator(".tool-call")).to_have_attribute("data-state", "error")
    await expect(replies.last.locator(".tool-call summary")).to_have_text(
        "Couldn't add task “x”: the title is too long"
    )
    await expect(replies.last.locator(".message-error")).to_have_text("The model provider did not answer.")

    await page.unroute(chat)
    body = error_json("the database is unreachable", "service_unavailable_error")
    await page.route(chat, lambda route: route.fulfill(status=503, content_type="application/json", body=body))
    await composer.fill("second")
    await composer.press("Enter")
    await expect(replies.last).to_contain_text("wasn't sent. The database is unreachable.")
    await expect(composer).to_have_value("second")  # given back, to send again

    await page.unroute(chat)
    await page.route(chat, lambda route: route.abort("connectionrefused"))
    await composer.press("Enter")
    await expect(replies.last).to_contain_text("Can't reach the server")

    await page.unroute(chat)
    body = error_json("token expired", "authentication_error")
    await page.route(chat, lambda route: route.fulfill(status=401, content_type="application/json", body=body))
    await composer.fill("third")
    await composer.press("Enter")
    await expect(page.locator("#signin-error")).to_contain_text("Token expired")
    await expect(page.get_by_label("API key or token")).to_be_focused()
    assert await page.evaluate("sessionStorage.length") == 0
    assert watched.errors == []


# ---------------------------------------------------------------------------- run control (issue 9, section 4)

SCREENSHOTS = os.environ.get("UI_SCREENSHOT_DIR")  # set it to look at the page in these states


async def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"))


def slow(tokens: int, delay_s: float) -> str:
    """A message the fake model answers with `tokens` pieces "tok ", one every `delay_s` seconds."""
    return f"[[tokens:{tokens}]] [[tokendelay:{delay_s:g}]]"


async def reply_text(page: Page, index: int = -1) -> str:
    """The text of an assistant reply exactly as shown (textContent: no whitespace folded)."""
    texts: list[str] = await page.locator(".message.assistant").evaluate_all(
        "replies => replies.map(r => [...r.querySelectorAll('.message-text')].map(p => p.textContent).join(''))"
    )
    return texts[index]


async def stored_answers(deployment: Deployment, user: str, conversation_id: str) -> list[str]:
    async with deployment.http(user) as client:
        response = await client.get(f"/api/{user}/conversations/{conversation_id}/messages")
    response.raise_for_status()
    return [m["content"] for m in response.json()["data"] if m["role"] == "assistant"]


async def send_slow(page: Page, text: str) -> tuple[str, str]:
    """Send `text`; the conversation's id and the run's id, from the response's headers."""
    composer = page.get_by_label("Message to the assistant")
    await composer.fill(text)
    async with page.expect_response(lambda response: response.url.endswith("/chat")) as chat:
        await composer.press("Enter")
    response: Any = await chat.value
    return response.headers["x-conversation-id"], response.headers["x-run-id"]


async def wait_for_tokens(page: Page, at_least: int) -> None:
    pattern = re.compile(f"(tok ){{{at_least}}}")
    await expect(page.locator(".message.assistant").last.locator(".message-text")).to_have_text(
        pattern, timeout=REPLY_TIMEOUT_MS
    )


async def test_reload_and_a_second_tab_rejoin_a_streaming_answer(browser: Browser, deployment: Deployment) -> None:
    first = await open_page(browser)
    page = first.page
    await page.goto(deployment.base_url + "/")
    await sign_in(page, "alice")
    conversation_id, run_id = await send_slow(page, slow(50, 0.1))
    stop = page.get_by_role("button", name="Stop")
    await expect(stop).to_be_visible()
    await wait_for_tokens(page, 8)

    # Reload mid-answer: the text so far is back at once (replayed, not re-streamed), then the rest.
    await page.reload()
    await expect(page.locator("#user-id")).to_have_text("alice")
    await expect(page.locator(".message.user .message-text")).to_have_text([slow(50, 0.1)])
    await expect(page.locator(".message.assistant .message-text")).to_have_text(re.compile(r"(tok ){8}"))
    await expect(stop).to_be_visible()
    assert (await reply_text(page)).count("tok") < 50, "the answer should still be coming in"
    await screenshot(page, "rejoined")

    # A second tab on the same conversation joins it too.
    second = await open_page(browser)
    await second.page.goto(f"{deployment.base_url}/#c={conversation_id}")
    await sign_in(second.page, "alice")
    await expect(second.page.locator(".message.assistant .message-text")).to_contain_text("tok ")
    await expect(second.page.get_by_role("button", name="Stop")).to_be_visible()

    whole = "tok " * 50
    for watched in (first, second):
        await expect(watched.page.get_by_role("button", name="Stop")).to_be_hidden(timeout=REPLY_TIMEOUT_MS)
        await expect(watched.page.locator("#messages")).to_have_attribute("aria-busy", "false")
        await expect(watched.page.locator(".message.assistant")).to_have_count(1)
        await expect(watched.page.locator(".message.assistant.stopped")).to_have_count(0)
        assert await reply_text(watched.page) == whole  # nothing doubled, nothing missing
    assert await stored_answers(deployment, "alice", conversation_id) == [whole]
    async with deployment.http("alice") as client:
        assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded"

    # Once it has finished, a reload shows the stored answer alone, not marked as stopped.
    await page.reload()
    await expect(page.locator(".message.assistant")).to_have_count(1)
    await expect(page.locator(".message.assistant .message-text")).to_have_text(re.compile(r"(tok ){50}"))
    await expect(page.locator(".message.assistant.stopped")).to_have_count(0)
    await expect(stop).to_be_hidden()
    for watched in (first, second):
        assert watched.errors == []


async def test_stop_keeps_the_partial_answer_marked_as_stopped(browser: Browser, deployment: Deployment) -> None:
    watched = await open_page(browser)
    page = watched.page
    await page.goto(deployment.base_url + "/")
    await sign_in(page, "bob")
    stop = page.get_by_role("button", name="Stop")
    replies = page.locator(".message.assistant")

    # 1. Stop the answer this tab asked for.
    conversation_id, first_run = await send_slow(page, slow(300, 0.05))
    await wait_for_tokens(page, 5)
    await screenshot(page, "streaming")
    await stop.click()
    await expect(replies.first).to_have_class(re.compile(r"\bstopped\b"), timeout=5_000)
    await expect(replies.first.locator(".message-stopped")).to_have_text("Stopped")
    await expect(stop).to_be_hidden()
    await expect(page.get_by_label("Message to the assistant")).to_be_focused()
    shown = await reply_text(page, 0)
    assert 5 <= shown.count("tok") < 300

    # 2. Ask again, reload mid-answer, and stop the rejoined answer.
    _, second_run = await send_slow(page, slow(300, 0.05))
    await wait_for_tokens(page, 5)
    await page.reload()
    await expect(replies).to_have_count(2)
    await expect(stop).to_be_visible()
    # Well over a second after the first stop: a stored answer says nothing of its run, so the page
    # tells a stopped one by its run's end time, and leaves two ends within one second unmarked.
    await wait_for_tokens(page, 40)
    await stop.click()
    await expect(replies.last).to_have_class(re.compile(r"\bstopped\b"), timeout=5_000)
    await expect(stop).to_be_hidden()
    shown_again = await reply_text(page, 1)
    assert 40 <= shown_again.count("tok") < 300
    await screenshot(page, "stopped")

    async with deployment.http("bob") as client:
        for run_id in (first_run, second_run):
            assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "cancelled"
    assert await stored_answers(deployment, "bob", conversation_id) == [shown, shown_again]

    # 3. After a reload both partial answers are there, as they were, and still marked as stopped.
    await page.reload()
    await expect(replies).to_have_count(2)
    await expect(page.locator(".message.assistant.stopped .message-stopped")).to_have_text(["Stopped", "Stopped"])
    assert [await reply_text(page, 0), await reply_text(page, 1)] == [shown, shown_again]
    await expect(stop).to_be_hidden()
    await screenshot(page, "stopped-after-reload")
    assert watched.errors == []
