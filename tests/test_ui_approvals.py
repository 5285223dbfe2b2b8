"""Approval on the web page (issue 11, section 2), in headless Chromium against a real deployment.

The page talks to the file's `helper` assistant (`tests/test_assistants_file.py`), whose
`box.append_line` tool needs approval: the fake LLM calls it when the message says
`[[tool:box_append_line {"text": MARK}]]` and answers `tool said: <result>` once the result is in.
When the run stops, the page shows a card with the tool, its arguments and Approve / Deny; the
decision goes to the runs API, and the page follows the run going on.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Locator, Page, Route, expect

from tests.deployment import Deployment
from tests.test_assistants_file import deployed, lines, marker, web_server, workdir
from tests.test_ui_browser import REPLY_TIMEOUT_MS, Watched, browser, open_page, screenshot, sign_in

__all__ = ["browser", "deployed", "web_server", "workdir"]  # fixtures, shared with their modules

MODEL = "helper"
TOOL = "box.append_line"


def append_call(mark: str) -> str:
    return f'[[tool:box_append_line {{"text": "{mark}"}}]]'


def question(mark: str) -> str:
    return f'I want to run this tool:\n- `{TOOL}` with arguments `{{"text": "{mark}"}}`\n\nReply approve or deny.'


def marked(workdir: Path, mark: str) -> list[str]:
    return [line for line in lines(workdir / "box.log") if mark in line]


async def signed_in(browser: Browser, deployed: Deployment, user: str = "alice") -> Watched:
    watched = await open_page(browser)
    await watched.page.goto(deployed.base_url + "/")
    await sign_in(watched.page, user)
    return watched


async def ask_helper(page: Page, text: str) -> tuple[str, str]:
    """Send `text` to `helper`: the conversation's id and the run's id."""
    await page.get_by_label("Assistant", exact=True).select_option(MODEL)
    composer = page.get_by_label("Message to the assistant")
    await composer.fill(text)
    async with page.expect_response(lambda response: response.url.endswith("/v1/chat/completions")) as chat:
        await composer.press("Enter")
    response: Any = await chat.value
    assert response.status == 200, await response.text()
    return response.headers["x-conversation-id"], response.headers["x-run-id"]


async def the_card(page: Page, mark: str) -> Locator:
    """The card of the one call waiting, checked to show the tool and its arguments."""
    card = page.locator(f".approval[data-tool='{TOOL}']")
    await expect(card).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    await expect(card).to_have_attribute("data-state", "pending")
    await expect(card.locator(".approval-tool")).to_have_text(TOOL)
    await expect(card.locator(".approval-badge")).to_have_text("Waiting for you")
    shown = await card.locator(".approval-args").text_content()
    assert shown is not None and json.loads(shown) == {"text": mark}
    await expect(card.get_by_role("button", name="Approve")).to_be_enabled()
    await expect(card.get_by_role("button", name="Deny")).to_be_enabled()
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    return card


async def run_of(deployed: Deployment, run_id: str) -> dict[str, Any]:
    async with deployed.http("alice") as http:
        response = await http.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_picker_lists_the_assistants_the_user_may_use(browser: Browser, deployed: Deployment) -> None:
    watched = await signed_in(browser, deployed)
    picker = watched.page.get_by_label("Assistant", exact=True)
    await expect(picker.locator("option")).to_have_text(["assistant", "todo", "helper", "agent-helper"])
    await expect(picker).to_have_value("todo")
    await picker.select_option(MODEL)
    await expect(picker).to_have_attribute("title", "Test helper (PydanticAI)")
    # The choice holds for this tab across a reload.
    await watched.page.reload()
    await expect(watched.page.locator("#user-id")).to_have_text("alice")
    await expect(picker).to_have_value(MODEL)
    bob = await signed_in(browser, deployed, "bob")
    await expect(bob.page.get_by_label("Assistant", exact=True).locator("option")).to_contain_text(["bob-only"])
    assert watched.errors == [] and bob.errors == []


async def test_approve_on_the_card_runs_the_tool_once_and_shows_the_result(
    browser: Browser, deployed: Deployment, workdir: Path
) -> None:
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    conversation_id, run_id = await ask_helper(page, append_call(mark))

    card = await the_card(page, mark)
    replies = page.locator(".message.assistant")
    await expect(replies).to_have_count(1)
    await expect(replies.first.locator(".message-text")).to_have_text(question(mark))
    assert (await run_of(deployed, run_id))["status"] == "awaiting_approval"
    assert marked(workdir, mark) == []
    await screenshot(page, "approval-card")

    # With the keyboard: Tab reaches Approve, Enter presses it.
    approve = card.get_by_role("button", name="Approve")
    await approve.focus()
    await expect(approve).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(card).to_have_attribute("data-state", "approved")
    await expect(card.locator(".approval-badge")).to_have_text("Approved")
    await expect(card.get_by_role("button")).to_have_count(0)

    # The run goes on, as the next reply: the tool's call and what the model made of its result.
    await expect(replies).to_have_count(2)
    result = replies.last
    await expect(result.locator(".message-text")).to_have_text(f"tool said: appended {mark}", timeout=REPLY_TIMEOUT_MS)
    chip = result.locator(f".tool-call[data-tool='{TOOL}']")
    await expect(chip).to_have_attribute("data-state", "done")
    # The call reads as words; the tool's name and its arguments are behind the toggle.
    await expect(chip.locator("summary")).to_have_text(f"Used “append line” (box): appended {mark}")
    await expect(chip.locator(".tool-name")).to_be_hidden()
    await chip.locator("summary").click()
    await expect(chip.locator(".tool-name")).to_have_text(TOOL)
    assert json.loads(await chip.locator(".tool-args").inner_text()) == {"text": mark}
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(page.locator("#messages")).to_have_attribute("aria-busy", "false")
    assert marked(workdir, mark) == [mark]
    assert (await run_of(deployed, run_id))["status"] == "succeeded"
    await screenshot(page, "approval-approved")

    # A reload shows the history as stored: the question, then the answer; nothing left to decide.
    await page.reload()
    assert page.url.endswith("#c=" + conversation_id)
    await expect(replies.locator(".message-text")).to_have_text([question(mark), f"tool said: appended {mark}"])
    await expect(page.locator(".approval")).to_have_count(0)
    await expect(page.get_by_label("Assistant", exact=True)).to_have_value(MODEL)
    assert marked(workdir, mark) == [mark]
    assert watched.errors == []


async def test_deny_on_the_card_never_runs_the_tool_and_shows_what_the_model_said(
    browser: Browser, deployed: Deployment, workdir: Path
) -> None:
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    _, run_id = await ask_helper(page, append_call(mark))
    card = await the_card(page, mark)

    await card.get_by_role("button", name="Deny").click()
    await expect(card).to_have_attribute("data-state", "denied")
    await expect(card.locator(".approval-badge")).to_have_text("Denied")
    result = page.locator(".message.assistant").nth(1)
    await expect(result.locator(".message-text")).to_have_text(
        re.compile(r"^tool said: .*denied"), timeout=REPLY_TIMEOUT_MS
    )
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert (await run_of(deployed, run_id))["status"] == "succeeded"
    assert marked(workdir, mark) == []
    await screenshot(page, "approval-denied")
    assert watched.errors == []


async def test_a_reloaded_conversation_shows_the_card_and_goes_on_after_the_stored_question(
    browser: Browser, deployed: Deployment, workdir: Path
) -> None:
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    conversation_id, run_id = await ask_helper(page, append_call(mark))
    await the_card(page, mark)

    # Another tab on the same conversation, opened while the run waits, shows the card too.
    await page.reload()
    await expect(page.locator("#user-id")).to_have_text("alice")
    card = await the_card(page, mark)
    replies = page.locator(".message.assistant")
    await expect(replies).to_have_count(1)
    await expect(replies.first.locator(".approval")).to_have_count(1)
    await screenshot(page, "approval-after-reload")
    # On a phone's width the card still shows everything, and both buttons.
    await page.set_viewport_size({"width": 390, "height": 760})
    await expect(card.get_by_role("button", name="Deny")).to_be_in_viewport()
    await screenshot(page, "approval-narrow")
    await page.set_viewport_size({"width": 1280, "height": 800})

    await card.get_by_role("button", name="Approve").click()
    await expect(replies.nth(1).locator(".message-text")).to_have_text(
        f"tool said: appended {mark}", timeout=REPLY_TIMEOUT_MS
    )
    # The question is not shown again: the reply is the run going on from where it stopped.
    await expect(replies).to_have_count(2)
    await expect(replies.first.locator(".message-text")).to_have_text(question(mark))
    assert marked(workdir, mark) == [mark]
    assert (await run_of(deployed, run_id))["status"] == "succeeded"
    assert page.url.endswith("#c=" + conversation_id)
    assert watched.errors == []


async def test_a_reload_while_the_run_goes_on_rejoins_it_after_its_stored_question(
    browser: Browser, deployed: Deployment, workdir: Path
) -> None:
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    # Each model step waits 2 s: after the approved call, the model's answer is still to come.
    _, run_id = await ask_helper(page, append_call(mark) + " [[delay:2]]")
    card = await the_card(page, mark)
    await card.get_by_role("button", name="Approve").click()
    replies = page.locator(".message.assistant")
    await expect(replies.nth(1).locator(f".tool-call[data-tool='{TOOL}']")).to_have_attribute("data-state", "done")
    assert (await run_of(deployed, run_id))["status"] == "running"

    await page.reload()
    await expect(page.locator("#user-id")).to_have_text("alice")
    await expect(replies.nth(1).locator(".message-text")).to_have_text(
        f"tool said: appended {mark}", timeout=REPLY_TIMEOUT_MS
    )
    # The stored question once, then the run going on (its call replayed), nothing doubled.
    await expect(replies).to_have_count(2)
    await expect(replies.first.locator(".message-text")).to_have_text(question(mark))
    await expect(replies.nth(1).locator(f".tool-call[data-tool='{TOOL}']")).to_have_count(1)
    await expect(page.locator(".approval")).to_have_count(0)
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert marked(workdir, mark) == [mark]
    assert watched.errors == []


async def test_approve_said_in_the_chat_settles_the_card_and_shows_the_run_going_on(
    browser: Browser, deployed: Deployment, workdir: Path
) -> None:
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    _, run_id = await ask_helper(page, append_call(mark))
    card = await the_card(page, mark)

    # The question says "Reply approve or deny.": the reply is the decision, and its answer the run going on.
    _, answered_by = await ask_helper(page, "approve")
    assert answered_by == run_id
    await expect(card).to_have_attribute("data-state", "approved")
    await expect(card.locator(".approval-status")).to_have_text("You replied “approve”.")
    replies = page.locator(".message.assistant")
    await expect(replies.nth(1).locator(".message-text")).to_have_text(
        f"tool said: appended {mark}", timeout=REPLY_TIMEOUT_MS
    )
    await expect(replies).to_have_count(2)
    await expect(page.locator(".message.user .message-text")).to_have_text([append_call(mark), "approve"])
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert marked(workdir, mark) == [mark]
    assert watched.errors == []


async def test_a_decision_that_fails_says_why(browser: Browser, deployed: Deployment, workdir: Path) -> None:
    """The decision is stubbed in the browser: no network (try again), then a refusal from the server."""
    watched = await signed_in(browser, deployed)
    page = watched.page
    mark = marker()
    _, run_id = await ask_helper(page, append_call(mark))
    card = await the_card(page, mark)
    decisions = f"{deployed.base_url}/v1/runs/{run_id}/approvals"

    # While the decision is on its way the card says so, and the pressed button keeps the focus.
    released = asyncio.Event()

    async def lost(route: Route) -> None:
        await released.wait()
        await route.abort("connectionrefused")

    await page.route(decisions, lost)
    approve = card.get_by_role("button", name="Approve")
    await approve.focus()
    await page.keyboard.press("Enter")
    await expect(card).to_have_attribute("data-state", "deciding")
    await expect(card.locator(".approval-badge")).to_have_text("Sending…")
    await expect(card.get_by_role("button", name="Approving…")).to_be_focused()
    await expect(card.get_by_role("button", name="Deny")).to_have_attribute("aria-disabled", "true")
    await card.get_by_role("button", name="Deny").click(force=True)  # ignored while the first one is on its way
    await screenshot(page, "approval-deciding")
    released.set()
    await expect(card).to_have_attribute("data-state", "failed")
    await expect(card.locator(".approval-status")).to_have_text(re.compile("Can't reach the server.*Try again"))
    await expect(card.get_by_role("button", name="Approve")).to_be_visible()  # it may be tried again

    refusal = json.dumps(
        {
            "error": {
                "message": "call was already decided (deny)",
                "type": "invalid_request_error",
                "code": "already_decided",
            }
        }
    )
    await page.unroute(decisions)
    await page.route(decisions, lambda route: route.fulfill(status=409, content_type="application/json", body=refusal))
    await card.get_by_role("button", name="Approve").click()
    await expect(card.locator(".approval-status")).to_have_text("Call was already decided (deny).")
    await expect(card.get_by_role("button")).to_have_count(0)
    await expect(card.locator(".approval-title")).to_have_text("Not decided here")
    await screenshot(page, "approval-failed")

    # The run still waits (nothing reached it): cancel it, as the page would leave it to expire.
    assert (await run_of(deployed, run_id))["status"] == "awaiting_approval"
    async with deployed.http("alice") as http:
        assert (await http.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
    assert marked(workdir, mark) == []
    assert watched.errors == []
