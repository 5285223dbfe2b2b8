// Switchboard todo assistant: the whole client. Vanilla JS, no build step, no third-party code.
//
// Safety rule for this file: text from the user, the model or the server is only ever put on the
// page with textContent / text nodes (the `h()` helper below), never as HTML.
"use strict";

(() => {
  // ------------------------------------------------------------------ credential storage

  // The credential lives in sessionStorage, not localStorage: it survives a reload (the page restores
  // the session) but belongs to this tab alone and is gone when the tab closes, so a bearer key is not
  // left on disk for whoever uses the browser next, and another tab can sign in as someone else.
  const CREDENTIAL_KEY = "switchboard.credential";

  function readCredential() {
    try { return window.sessionStorage.getItem(CREDENTIAL_KEY); } catch { return null; }
  }
  function storeCredential(value) {
    try { window.sessionStorage.setItem(CREDENTIAL_KEY, value); } catch { /* private mode: this tab only */ }
  }
  function clearCredential() {
    try { window.sessionStorage.removeItem(CREDENTIAL_KEY); } catch { /* nothing stored */ }
  }

  // The assistant picked last, for a new conversation after a reload (a stored one names its own).
  const MODEL_KEY = "switchboard.model";
  function readModel() {
    try { return window.sessionStorage.getItem(MODEL_KEY); } catch { return null; }
  }
  function storeModel(value) {
    try { window.sessionStorage.setItem(MODEL_KEY, value); } catch { /* this page only */ }
  }

  // ------------------------------------------------------------------ small helpers

  const $ = (selector) => document.querySelector(selector);

  /** Build an element: h("p", {class: "x"}, "text", child). Strings become text nodes, never HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value == null) continue;
      if (name === "class") el.className = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child == null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const NETWORK_MESSAGE = "Can't reach the server. Check your connection and try again.";

  // The todo assistant has an API of its own (`/api/{user}/chat`); any other goes through
  // `/v1/chat/completions`, and what it does is read from its run's events.
  const TODO_MODEL = "todo";

  class ApiError extends Error {
    constructor(message, status, type, code) {
      super(message);
      this.status = status;
      this.type = type;
      this.code = code;
    }
  }

  const isAbort = (err) => err && err.name === "AbortError";

  function sentence(text) {
    const s = String(text || "").trim();
    if (!s) return "";
    const first = s[0].toUpperCase() + s.slice(1);
    return /[.!?]$/.test(first) ? first : first + ".";
  }

  /** Server times are UTC; SQLite hands them back without an offset. */
  function parseTime(iso) {
    if (!iso) return null;
    const text = /(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z";
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  function timeAgo(iso) {
    const date = parseTime(iso);
    if (!date) return "";
    const seconds = (date.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return "just now";
    if (abs < 45 * 60) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 22 * 3600) return relative.format(Math.round(seconds / 3600), "hour");
    if (abs < 6 * 86400) return relative.format(Math.round(seconds / 86400), "day");
    return shortDate(date);
  }
  function shortDate(date) {
    const sameYear = date.getFullYear() === new Date().getFullYear();
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric", year: sameYear ? undefined : "numeric" });
  }
  function clockTime(iso) {
    const date = parseTime(iso);
    return date ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "";
  }
  function fullTime(iso) {
    const date = parseTime(iso);
    return date ? date.toLocaleString() : "";
  }

  function truncate(text, max) {
    const s = String(text);
    return s.length > max ? s.slice(0, max - 1).trimEnd() + "…" : s;
  }

  // ------------------------------------------------------------------ state

  const state = {
    credential: null,
    userId: null,
    conversationId: null,
    conversations: [],
    conversationsCursor: null,
    titles: new Map(), // conversation id -> its first user message, as seen in this tab
    filter: "all",
    tasks: [],
    tasksCursor: null,
    knownTaskIds: null, // ids shown last time (same filter), to highlight new ones
    stream: null, // {controller, reason, runId, stopping}: the answer this tab is showing as it streams
    afterStream: [], // what waits for that answer to end: going on with a run once its calls are decided
    models: [], // [{id, description}] from /v1/models
    model: TODO_MODEL, // the assistant the next message goes to
    approvals: new Map(), // run id -> the tool calls it stopped at, as shown in this conversation
    seq: { conversations: 0, messages: 0, tasks: 0 },
  };

  // ------------------------------------------------------------------ HTTP

  function userPath(...segments) {
    return ["/api", state.userId, ...segments].map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join("/");
  }

  async function errorFrom(response) {
    let message = "";
    let type;
    let code;
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.message === "string") {
        message = body.error.message;
        type = body.error.type;
        code = body.error.code;
      }
    } catch { /* not JSON: a proxy's page, say */ }
    if (!message) {
      const what = `${response.status} ${response.statusText}`.trim();
      message = response.status >= 500
        ? `The server had a problem (${what}). Try again in a moment`
        : `The request was refused (${what})`;
    }
    return new ApiError(sentence(message), response.status, type, code);
  }

  async function api(path, init = {}, credential = state.credential) {
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", `Bearer ${credential}`);
    if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
    let response;
    try {
      response = await fetch(path, { ...init, headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new ApiError(NETWORK_MESSAGE, 0, "network_error");
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  /** Server-Sent Events from a fetch body (EventSource can neither POST nor send headers). */
  async function* readSse(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        // Normalise line ends, but keep a trailing \r: its \n may be in the next chunk.
        const keep = buffer.endsWith("\r") ? "\r" : "";
        buffer = buffer.slice(0, buffer.length - keep.length).replace(/\r\n?/g, "\n") + keep;
        let end;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          let id = null;
          const data = [];
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue; // comments are keep-alive pings
            const colon = line.indexOf(":");
            const field = colon === -1 ? line : line.slice(0, colon);
            let value = colon === -1 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            if (field === "event") event = value;
            else if (field === "data") data.push(value);
            else if (field === "id") id = value;
          }
          if (data.length) yield { event, data: data.join("\n"), id };
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ------------------------------------------------------------------ elements

  const els = {};
  function collectElements() {
    for (const id of [
      "signin", "signin-form", "credential", "signin-error", "signin-button", "app", "sidebar",
      "new-conversation", "conversation-list", "conversations-empty", "conversations-more", "avatar",
      "user-id", "sign-out", "open-sidebar", "chat-title", "open-tasks", "task-badge", "banner",
      "banner-text", "banner-close", "scroller", "welcome", "loading-messages", "messages", "composer",
      "message-input", "stop", "stop-label", "send", "tasks-pane", "tasks-refresh", "tasks-error", "task-list",
      "tasks-empty", "tasks-more", "scrim", "announcer", "model-select", "model-description",
    ]) {
      els[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = document.getElementById(id);
    }
  }

  function announce(text) {
    els.announcer.textContent = "";
    window.setTimeout(() => { els.announcer.textContent = text; }, 30);
  }

  function showBanner(text) {
    els.bannerText.textContent = text;
    els.banner.hidden = false;
  }
  function hideBanner() {
    els.banner.hidden = true;
    els.bannerText.textContent = "";
  }

  /** Every failed call ends here: 401 means the credential is no good any more. */
  function report(err, context) {
    if (isAbort(err)) return;
    if (err instanceof ApiError && err.status === 401) {
      signOut(`You were signed out: ${err.message} Sign in again to continue.`);
      return;
    }
    showBanner(context ? `${context}. ${err.message}` : err.message);
  }

  // ------------------------------------------------------------------ sign-in / sign-out

  function showSignin(message) {
    els.app.hidden = true;
    els.signin.hidden = false;
    els.signinError.textContent = message || "";
    els.signinError.hidden = !message;
    els.credential.setAttribute("aria-invalid", message ? "true" : "false");
    els.credential.focus();
  }

  async function signIn(credential, { restoring = false } = {}) {
    els.signinButton.disabled = true;
    els.signinButton.textContent = "Signing in…";
    try {
      const me = await (await api("/api/me", {}, credential)).json();
      state.credential = credential;
      state.userId = me.user_id;
      storeCredential(credential);
      startApp();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        if (restoring) clearCredential();
        showSignin(restoring
          ? `Your saved sign-in is no longer accepted: ${err.message} Please sign in again.`
          : `That key or token was not accepted: ${err.message}`);
      } else {
        showSignin(err.message || NETWORK_MESSAGE);
        els.credential.value = credential; // so "Sign in" simply tries again
      }
    } finally {
      els.signinButton.disabled = false;
      els.signinButton.textContent = "Sign in";
    }
  }

  function signOut(message) {
    stopStream("signout");
    clearCredential();
    Object.assign(state, {
      credential: null, userId: null, conversationId: null, conversations: [], conversationsCursor: null,
      tasks: [], tasksCursor: null, knownTaskIds: null, models: [],
    });
    state.titles.clear();
    state.approvals.clear();
    state.afterStream.length = 0;
    state.seq.conversations++;
    state.seq.messages++;
    state.seq.tasks++;
    // The open conversation belongs to the account that just left: drop it from the address.
    history.replaceState(null, "", location.pathname + location.search);
    els.messages.replaceChildren();
    els.conversationList.replaceChildren();
    els.taskList.replaceChildren();
    els.credential.value = "";
    closeDrawers();
    hideBanner();
    showSignin(message);
    announce(message || "Signed out.");
  }

  function startApp() {
    els.signin.hidden = true;
    els.app.hidden = false;
    els.userId.textContent = state.userId;
    state.model = readModel() || TODO_MODEL;
    renderModels();
    els.avatar.textContent = (state.userId || "?").slice(0, 1);
    hideBanner();
    loadModels();
    loadConversations();
    loadTasks();
    const fromHash = hashConversation();
    if (fromHash) openConversation(fromHash, { updateHash: false });
    else showNewConversation();
    els.messageInput.focus();
  }

  // ------------------------------------------------------------------ the address: #c=<conversation id>

  function hashConversation() {
    const id = new URLSearchParams(location.hash.slice(1)).get("c");
    return id || null;
  }

  function setHash(id, { replace = false } = {}) {
    const url = id == null ? location.pathname + location.search : `#c=${encodeURIComponent(id)}`;
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }

  function onLocationChange() {
    if (!state.userId) return;
    const id = hashConversation();
    if (id === state.conversationId) return;
    if (id) openConversation(id, { updateHash: false });
    else showNewConversation({ updateHash: false });
  }

  // ------------------------------------------------------------------ conversations

  function conversationTitle(conversation) {
    if (conversation.title) return conversation.title;
    const first = state.titles.get(conversation.id);
    if (first) return truncate(first, 60);
    const created = parseTime(conversation.created_at);
    if (!created) return "Conversation";
    const today = created.toDateString() === new Date().toDateString();
    return `Chat ${today ? "at" : "of"} ${today ? clockTime(conversation.created_at) : shortDate(created)}`;
  }

  async function loadConversations({ more = false } = {}) {
    if (!state.userId) return;
    const seq = ++state.seq.conversations;
    const params = new URLSearchParams({ limit: "50" });
    if (more && state.conversationsCursor) params.set("cursor", state.conversationsCursor);
    try {
      const body = await (await api(`${userPath("conversations")}?${params}`)).json();
      if (seq !== state.seq.conversations) return;
      state.conversations = more ? state.conversations.concat(body.data) : body.data;
      state.conversationsCursor = body.next_cursor || null;
      renderConversations();
    } catch (err) {
      if (seq === state.seq.conversations) report(err, "Couldn't load your conversations");
    }
  }

  function renderConversations() {
    const items = state.conversations.map((conversation) => {
      const title = conversationTitle(conversation);
      const current = conversation.id === state.conversationId;
      return h("li", { "data-conversation-id": conversation.id },
        h("button", {
          type: "button",
          class: "conversation",
          "aria-current": current ? "page" : false,
          title: fullTime(conversation.updated_at),
          onclick: () => {
            if (conversation.id !== state.conversationId) openConversation(conversation.id);
            closeDrawers();
          },
        },
        h("span", { class: "conversation-title" }, title),
        h("span", { class: "conversation-time" }, timeAgo(conversation.updated_at))),
        h("button", {
          type: "button",
          class: "icon-button conversation-delete",
          "aria-label": `Delete conversation “${title}”`,
          title: "Delete conversation",
          onclick: () => deleteConversation(conversation.id, title),
        }, "✕"));
    });
    els.conversationList.replaceChildren(...items);
    els.conversationsEmpty.hidden = items.length > 0;
    els.conversationsMore.hidden = !state.conversationsCursor;
  }

  async function deleteConversation(id, title) {
    if (!window.confirm(`Delete “${title}”? Its messages will be gone for good; your tasks stay.`)) return;
    try {
      await api(userPath("conversations", id), { method: "DELETE" });
      if (id === state.conversationId) showNewConversation();
      state.conversations = state.conversations.filter((c) => c.id !== id);
      renderConversations();
      announce("Conversation deleted.");
      loadConversations();
    } catch (err) {
      report(err, "Couldn't delete the conversation");
    }
  }

  function setTitle(text) {
    els.chatTitle.textContent = text;
    document.title = `${text} · Todo assistant`;
  }

  function showNewConversation({ updateHash = true } = {}) {
    stopStream("switch");
    state.seq.messages++;
    state.conversationId = null;
    state.approvals.clear();
    if (updateHash && hashConversation()) setHash(null);
    els.messages.replaceChildren();
    els.loadingMessages.hidden = true;
    els.welcome.hidden = false;
    setTitle("New conversation");
    renderConversations();
  }

  async function openConversation(id, { updateHash = true } = {}) {
    stopStream("switch");
    const seq = ++state.seq.messages;
    state.conversationId = id;
    state.approvals.clear();
    if (updateHash) setHash(id);
    hideBanner();
    els.messages.replaceChildren();
    els.welcome.hidden = true;
    els.loadingMessages.hidden = false;
    setTitle(state.titles.has(id) ? truncate(state.titles.get(id), 80) : "Conversation");
    renderConversations();
    try {
      const history = await loadHistory(id, () => seq !== state.seq.messages);
      if (!history) return;
      const { messages, unfinished, runs } = history;
      const firstUser = messages.find((m) => m.role === "user" && m.content);
      if (firstUser) state.titles.set(id, firstUser.content);
      setTitle(firstUser ? truncate(firstUser.content, 80) : "Conversation");
      renderConversations();
      const stopped = stoppedAnswers(messages, runs);
      const rendered = messages.map((m) => renderStoredMessage(m, stopped.has(m.id))).filter(Boolean);
      els.messages.replaceChildren(...rendered);
      els.welcome.hidden = rendered.length > 0 || unfinished.length > 0;
      // The conversation goes on with the assistant it last talked to (runs come newest first).
      if (runs.length) pickModel(runs[0].assistant, { remember: false });
      const pauses = storedPauses(messages);
      // A run that stopped before tool calls its owner must decide: its question is stored; show the cards.
      const awaiting = runs.filter((run) => run.status === AWAITING).reverse();
      for (const run of awaiting) await showStoredApprovals(run, pauses.get(run.id) || 0, () => seq !== state.seq.messages);
      if (seq !== state.seq.messages) return;
      scrollToEnd(true);
      // An answer still being written (this page was reloaded mid-answer, or another tab asked):
      // show what it said so far and follow the rest.
      if (unfinished.length) rejoin(unfinished, pauses);
    } catch (err) {
      if (seq !== state.seq.messages) return;
      if (err instanceof ApiError && err.status === 404) {
        showNewConversation({ updateHash: false });
        setHash(null, { replace: true });
        showBanner("That conversation wasn't found. It may have been deleted, or it belongs to another account.");
      } else {
        report(err, "Couldn't load this conversation");
      }
    } finally {
      if (seq === state.seq.messages) els.loadingMessages.hidden = true;
    }
  }

  async function loadMessages(id, stale) {
    const messages = [];
    let cursor = null;
    do { // A conversation's whole history, a page at a time.
      const params = new URLSearchParams({ limit: "200" });
      if (cursor) params.set("cursor", cursor);
      const body = await (await api(`${userPath("conversations", id, "messages")}?${params}`)).json();
      if (stale()) return null;
      messages.push(...body.data);
      cursor = body.next_cursor;
    } while (cursor);
    return messages;
  }

  /** Runs of the conversation still queued or running, oldest first (the order they answer in). */
  async function unfinishedRuns(id) {
    const lists = await Promise.all(["running", "queued"].map(async (status) => {
      const params = new URLSearchParams({ conversation_id: id, status, limit: "50" });
      return (await (await api(`/v1/runs?${params}`)).json()).data;
    }));
    return lists.flat().sort((a, b) => (a.created_at ?? 0) - (b.created_at ?? 0));
  }

  /** The conversation's newest runs, any state (to tell which stored answers were stopped). */
  async function recentRuns(id) {
    const params = new URLSearchParams({ conversation_id: id, limit: "200" });
    return (await (await api(`/v1/runs?${params}`)).json()).data;
  }

  /**
   * The stored messages, and the runs that were unfinished all the while they were read. Runs are
   * asked for before and after the messages: when both answers name the same runs, none of them
   * stored its answer (or a new question) in between, so following them from their first event
   * shows every answer exactly once. Otherwise something finished meanwhile: read again.
   */
  async function loadHistory(id, stale) {
    for (let attempt = 1; ; attempt++) {
      const before = await unfinishedRuns(id).catch(runsUnavailable);
      if (stale()) return null;
      const messages = await loadMessages(id, stale);
      if (!messages) return null;
      const [unfinished, runs] = await Promise.all([
        unfinishedRuns(id).catch(runsUnavailable),
        recentRuns(id).catch(runsUnavailable),
      ]);
      if (stale()) return null;
      const same = before.length === unfinished.length && before.every((run, i) => run.id === unfinished[i].id);
      if (same || attempt >= 3) return { messages, unfinished, runs };
    }
  }

  /** Without the runs API the stored history still shows; only rejoining and the stopped marks go. */
  function runsUnavailable(err) {
    if (isAbort(err) || (err instanceof ApiError && err.status === 401)) throw err;
    return [];
  }

  /**
   * Ids of the stored assistant messages whose run was cancelled. A message that names its run
   * (`run_id`) is looked up directly. One that does not is matched by time: a cancelled run stores
   * its partial answer in the same transaction that marks it finished, so the message is stamped
   * milliseconds after the run's end, and `finished_at` is that end cut to whole seconds. It is marked
   * only when exactly one of the conversation's runs ended then, and that one was cancelled: never a
   * guess between two (two turns ending within the same second leave both unmarked).
   */
  function stoppedAnswers(messages, runs) {
    const cancelled = new Set(runs.filter((run) => run.status === "cancelled").map((run) => run.id));
    const marks = new Set();
    if (!cancelled.size) return marks;
    const ended = runs.filter((run) => run.finished_at != null);
    for (const message of messages) {
      if (message.role !== "assistant") continue;
      if (message.run_id) {
        if (cancelled.has(message.run_id)) marks.add(message.id);
        continue;
      }
      const stamped = parseTime(message.created_at);
      if (!stamped) continue;
      const t = stamped.getTime() / 1000;
      const near = ended.filter((run) => t >= run.finished_at - 0.05 && t < run.finished_at + 1.25);
      if (near.length === 1 && cancelled.has(near[0].id)) marks.add(message.id);
    }
    return marks;
  }

  // ------------------------------------------------------------------ messages

  function userMessage(text, createdAt) {
    return h("li", { class: "message user", title: createdAt ? fullTime(createdAt) : false },
      h("span", { class: "message-role visually-hidden" }, "You:"),
      h("p", { class: "message-text" }, text));
  }

  function renderStoredMessage(message, stopped = false) {
    if (message.role === "user") return userMessage(message.content || "", message.created_at);
    if (message.role !== "assistant") return null;
    const reply = assistantMessage(message.created_at);
    if (message.run_id) reply.el.dataset.runId = message.run_id;
    for (const call of message.tool_calls || []) {
      reply.toolCall(call.tool, call.args);
      reply.toolResult(call.tool, call.result, call.is_error === true);
    }
    if (message.content) reply.text(message.content);
    if (stopped) reply.markStopped();
    reply.finish();
    return reply.el;
  }

  /** One assistant reply: text segments and tool-call chips, in the order they happened. */
  function assistantMessage(createdAt) {
    const time = h("time", { datetime: createdAt || false }, createdAt ? clockTime(createdAt) : "");
    const body = h("div", { class: "message-body" });
    const el = h("li", { class: "message assistant" },
      h("span", { class: "message-role" }, "Assistant ", createdAt ? "· " : "", time),
      body);
    const typing = h("span", { class: "typing", "aria-label": "The assistant is replying" },
      h("span"), h("span"), h("span"));
    let segment = null;
    let gotText = false;
    let finished = false;
    let stopped = false;
    const pending = [];

    const reply = {
      el,
      startTyping() { body.append(typing); },
      text(chunk) {
        if (!chunk) return;
        if (!segment) {
          segment = h("p", { class: "message-text" });
          body.insertBefore(segment, typing.parentNode === body ? typing : null);
        }
        segment.append(document.createTextNode(chunk));
        gotText = true;
      },
      toolCall(tool, args) {
        const chip = toolChip(tool, args);
        body.insertBefore(chip.el, typing.parentNode === body ? typing : null);
        pending.push(chip);
        segment = null; // text after a tool call starts a new paragraph
      },
      toolResult(tool, result, isError = false) {
        let index = pending.findIndex((chip) => chip.tool === tool);
        if (index === -1) {
          reply.toolCall(tool, undefined);
          index = pending.length - 1;
        }
        const [chip] = pending.splice(index, 1);
        chip.resolve(result, false, isError);
      },
      error(message) {
        body.insertBefore(h("p", { class: "message-error" }, message), typing.parentNode === body ? typing : null);
        gotText = true;
      },
      note(message) {
        body.insertBefore(h("p", { class: "message-note" }, message), typing.parentNode === body ? typing : null);
        gotText = true;
      },
      /** The run was stopped: what it said until then is the whole answer. */
      markStopped() {
        if (stopped) return;
        stopped = true;
        el.classList.add("stopped");
        body.append(h("p", {
          class: "message-stopped",
          title: "This answer was stopped before it finished. What it said until then is kept.",
        }, "Stopped"));
      },
      finish(done) {
        if (finished) return;
        finished = true;
        if (!gotText && done && done.response) reply.text(done.response);
        typing.remove();
        for (const chip of pending.splice(0)) chip.resolve(undefined, true);
        if (!gotText && !body.querySelector(".tool-call, .approvals")) {
          const note = h("p", { class: "message-note" }, stopped ? "(stopped before it said anything)" : "(no reply)");
          body.insertBefore(note, body.querySelector(".message-stopped"));
        }
        if (createdAt == null) {
          const now = new Date().toISOString();
          time.textContent = clockTime(now);
          time.setAttribute("datetime", now);
          time.before("· ");
        }
      },
      get stopped() { return stopped; },
      get hasContent() { return gotText || pending.length > 0 || Boolean(body.querySelector(".tool-call")); },
    };
    return reply;
  }

  function parseMaybeJson(value) {
    if (typeof value !== "string") return value;
    const s = value.trim();
    if (!/^[[{]/.test(s)) return value;
    try { return JSON.parse(s); } catch { return value; }
  }

  const quoted = (text) => `“${truncate(String(text), 60)}”`;
  const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
  const taskRef = (id) => (id != null && id !== "" ? `task #${id}` : "a task");
  const named = (ref, title) => (title ? `${ref} ${quoted(title)}` : ref);

  /**
   * The todo tools in words: what a call is doing (`running`), what it did (`done`, from its result),
   * and what it could not do (`failed`, followed by the tool's own message). `a` is the call's
   * arguments, `r` its result (both objects, possibly empty).
   */
  const TODO_WORDS = {
    add_task: {
      running: (a) => (a.title ? `Adding task ${quoted(a.title)}…` : "Adding a task…"),
      done: (a, r) => `Added task ${quoted(r.title ?? a.title ?? "")}`,
      failed: (a) => (a.title ? `Couldn't add task ${quoted(a.title)}` : "Couldn't add the task"),
    },
    list_tasks: {
      running: (a) => `Looking at your ${listed(a.status)}tasks…`,
      done: (a, r) => {
        const items = Array.isArray(r) ? r : [];
        if (!items.length) return `No ${listed(a.status)}tasks`;
        const titles = items.map((item) => (item && typeof item === "object" ? item.title : null)).filter(Boolean);
        const count = `Found ${plural(items.length, `${listed(a.status)}task`)}`;
        return titles.length ? `${count}: ${truncate(titles.join(", "), 90)}` : count;
      },
      failed: () => "Couldn't list your tasks",
    },
    complete_task: {
      running: (a) => `Marking ${taskRef(a.task_id)} as done…`,
      done: (a, r) => `Marked ${named(taskRef(r.task_id ?? a.task_id), r.title)} as done`,
      failed: (a) => `Couldn't mark ${taskRef(a.task_id)} as done`,
    },
    delete_task: {
      running: (a) => `Deleting ${taskRef(a.task_id)}…`,
      done: (a, r) => `Deleted ${named(taskRef(r.task_id ?? a.task_id), r.title)}`,
      failed: (a) => `Couldn't delete ${taskRef(a.task_id)}`,
    },
    update_task: {
      running: (a) => `Updating ${taskRef(a.task_id)}…`,
      done: (a, r) => `Updated ${named(taskRef(r.task_id ?? a.task_id), r.title ?? a.title)}`,
      failed: (a) => `Couldn't update ${taskRef(a.task_id)}`,
    },
  };

  function listed(status) {
    return status === "pending" || status === "completed" ? `${status} ` : "";
  }

  /** Any other tool (an assistant's MCP server's `server.tool`): its name in words, its server after. */
  function toolWords(tool) {
    const name = String(tool);
    const dot = name.indexOf(".");
    const server = dot > 0 ? name.slice(0, dot) : "";
    const words = (dot > 0 ? name.slice(dot + 1) : name).replace(/[_\-.]+/g, " ").trim() || name;
    return server ? `“${words}” (${server})` : `“${words}”`;
  }

  /** A tool's result: the failure message when it failed, else null. */
  function failureOf(tool, result, isError) {
    if (result && typeof result === "object" && !Array.isArray(result) && "error" in result) return String(result.error);
    if (isError) return typeof result === "string" ? result : JSON.stringify(result);
    // The todo tools answer objects and lists; their failures are a message alone.
    if (tool in TODO_WORDS) return typeof result === "string" ? result : null;
    if (typeof result === "string" && /\b(error|not found|fail)/i.test(result)) return result;
    return null;
  }

  /** A short phrase for a result of a tool the page does not know, or "". */
  function resultPhrase(result) {
    if (result === null || result === undefined || result === "") return "";
    if (typeof result === "string") return truncate(result, 100);
    if (Array.isArray(result)) return plural(result.length, "item");
    return "";
  }

  /**
   * The line a tool call reads as on the page, for a person: "Added task “Buy milk”". `phase` is
   * running, done, failed or unknown (the reply ended without its result). The tool's name, arguments
   * and result are behind the chip's toggle.
   */
  function describeCall(tool, args, phase, result) {
    const a = args && typeof args === "object" && !Array.isArray(args) ? args : {};
    const words = Object.hasOwn(TODO_WORDS, tool) ? TODO_WORDS[tool] : null;
    if (phase === "failed") {
      const message = String(result || "").trim().replace(/\.$/, "");
      const lead = words ? words.failed(a) : `${sentence(toolWords(tool)).replace(/\.$/, "")} failed`;
      return message ? `${lead}: ${message}` : lead;
    }
    if (phase === "done") {
      if (words) {
        const r = result && typeof result === "object" ? result : {};
        return words.done(a, Array.isArray(result) ? result : r);
      }
      const phrase = resultPhrase(result);
      return `Used ${toolWords(tool)}${phrase ? `: ${phrase}` : ""}`;
    }
    const running = words ? words.running(a) : `Using ${toolWords(tool)}…`;
    return phase === "unknown" ? `${running.replace(/…$/, "")} (no result reported)` : running;
  }

  function pretty(value) {
    const parsed = parseMaybeJson(value);
    return typeof parsed === "string" ? parsed : JSON.stringify(parsed, null, 2);
  }

  /** One tool call: a line in words, and behind the toggle the tool's name, arguments and result. */
  function toolChip(tool, args) {
    const parsedArgs = parseMaybeJson(args);
    const line = h("span", { class: "tool-summary" }, describeCall(tool, parsedArgs, "running"));
    const resultDetail = h("pre", { class: "tool-output" }, "(waiting)");
    const el = h("details", { class: "tool-call", "data-state": "running", "data-tool": tool },
      h("summary", { title: "Show the details" },
        h("span", { class: "tool-dot", "aria-hidden": "true" }),
        line),
      h("div", { class: "tool-detail" },
        h("h4", {}, "Tool"), h("pre", {}, h("code", { class: "tool-name" }, tool)),
        h("h4", {}, "Arguments"), h("pre", { class: "tool-args" }, args === undefined ? "(not shown)" : pretty(args)),
        h("h4", {}, "Result"), resultDetail));
    return {
      el,
      tool,
      resolve(result, unknown = false, isError = false) {
        if (unknown) {
          el.dataset.state = "done";
          line.textContent = describeCall(tool, parsedArgs, "unknown");
          resultDetail.textContent = "(none)";
          return;
        }
        const parsed = parseMaybeJson(result);
        const failure = failureOf(tool, parsed, isError);
        el.dataset.state = failure != null ? "error" : "done";
        line.textContent = failure != null
          ? describeCall(tool, parsedArgs, "failed", failure)
          : describeCall(tool, parsedArgs, "done", parsed);
        resultDetail.textContent = result === undefined ? "(none)" : pretty(result);
      },
    };
  }

  function nearBottom() {
    const s = els.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }
  function scrollToEnd(force = false) {
    if (force || nearBottom()) els.scroller.scrollTop = els.scroller.scrollHeight;
  }

  // ------------------------------------------------------------------ approvals

  // A run may stop before tool calls that need its owner's yes. The page shows a card per call (the
  // tool, its arguments, Approve / Deny); deciding posts to the runs API, and once no call of the run
  // is pending the run goes on, on any worker: the page follows it after the stop, into a new reply.
  const AWAITING = "awaiting_approval";
  const APPROVE_WORDS = ["approve", "approved", "yes", "y", "ok", "/approve"];
  const DENY_WORDS = ["deny", "denied", "no", "n", "/deny"];
  const MAX_TIMER_MS = 2 ** 31 - 1;

  /** The decision a chat message states, as the server reads it ("approve", "yes"; "deny", "no"), or null. */
  function decisionIn(text) {
    const word = String(text).trim().replace(/^[.!]+|[.!]+$/g, "").trim().toLowerCase();
    if (APPROVE_WORDS.includes(word)) return "approve";
    if (DENY_WORDS.includes(word)) return "deny";
    return null;
  }

  /**
   * The calls one stop of run `runId` waits for, as shown in this conversation. `seq` is the stop's
   * event, to follow the run after it; unknown for a stop read back from the history, which is then
   * found as the run's `pauses`-th (its earlier stops' questions are stored, so each stop is one).
   */
  function approvalGroup(runId, { seq = null, pauses = 0 } = {}) {
    const group = {
      runId,
      seq,
      pauses,
      conversationId: state.conversationId,
      cards: [],
      followed: false,
      pending() { return group.cards.filter((card) => card.open); },
      /** Every call still open is settled some other way (in the chat, by expiry). */
      settle(next, message) {
        for (const card of group.pending()) card.set(next, message);
      },
      /** Where to follow the run from once it goes on; it is followed once. */
      goingOn() {
        group.followed = true;
        return group.seq != null ? { after: group.seq } : { skipPauses: group.pauses };
      },
    };
    state.approvals.set(runId, group);
    return group;
  }

  /** The cards of `group` at the end of the reply `host` (an assistant message's element). */
  function attachApprovals(host, group, calls) {
    const body = host.querySelector(".message-body");
    const list = h("div", { class: "approvals" });
    for (const call of calls) {
      const card = approvalCard(group, call);
      group.cards.push(card);
      list.append(card.el);
    }
    body.append(list);
    const tools = calls.map((call) => call.tool).join(", ");
    announce(`The assistant needs your approval to run ${tools}.`);
  }

  /**
   * The run stopped for approval while this tab followed it (`asked` is its event). Shows the cards
   * and finishes the reply. False when the run is no longer waiting (decided meanwhile, in another
   * tab): the caller follows it on. The run as it stands gives each call's expiry.
   */
  async function showApprovals(reply, asked, signal) {
    let run = null;
    try {
      run = await (await api(`/v1/runs/${encodeURIComponent(asked.runId)}`, { signal })).json();
    } catch (err) {
      if (isAbort(err) || (err instanceof ApiError && err.status === 401)) throw err;
      // The event says what was asked; deciding will tell whether it still is.
    }
    if (run && run.status !== AWAITING && run.status !== "cancelled") {
      reply.finish();
      return false;
    }
    const pending = run && run.status === AWAITING ? run.pending_approvals || [] : [];
    const group = approvalGroup(asked.runId, { seq: asked.seq });
    attachApprovals(reply.el, group, pending.length ? pending : asked.approvals);
    reply.finish();
    if (run && run.status === "cancelled") group.settle("expired", "Not pending any more: the run was stopped.");
    scrollToEnd(true);
    return true;
  }

  /** After a reload: the cards of a run of this conversation that waits for approval. */
  async function showStoredApprovals(run, pauses, stale) {
    let current;
    try {
      current = await (await api(`/v1/runs/${encodeURIComponent(run.id)}`)).json();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      return; // the stored question still says what it waits for
    }
    if (stale() || current.status !== AWAITING || !(current.pending_approvals || []).length) return;
    const asked = [...els.messages.querySelectorAll(".message.assistant")].filter((el) => el.dataset.runId === run.id);
    let host = asked[asked.length - 1];
    if (!host) {
      const reply = assistantMessage(null);
      reply.text("The assistant is waiting for your decision.");
      reply.finish();
      els.messages.append(reply.el);
      host = reply.el;
    }
    attachApprovals(host, approvalGroup(run.id, { pauses }), current.pending_approvals);
  }

  /** How many questions each run stored before stopping for approval (its stored answers, so far). */
  function storedPauses(messages) {
    const counts = new Map();
    for (const message of messages) {
      if (message.role === "assistant" && message.run_id) counts.set(message.run_id, (counts.get(message.run_id) || 0) + 1);
    }
    return counts;
  }

  /**
   * A message was just sent to this conversation. The server reads it as the answer to any question
   * the conversation's stopped run asked: "approve" or "deny" decides its calls (and `runId`, the run
   * answering, is that run going on); any other message denies them. The cards say so once the run
   * confirms it no longer waits.
   */
  function noticeDecisions(text, runId) {
    const said = decisionIn(text);
    for (const group of state.approvals.values()) {
      if (!group.pending().length) continue;
      if (group.runId === runId) {
        group.settle(said === "deny" ? "denied" : "approved", `You replied “${text.trim()}”.`);
        continue;
      }
      (async () => {
        try {
          const run = await (await api(`/v1/runs/${encodeURIComponent(group.runId)}`)).json();
          if (run.status === AWAITING) return;
          if (run.status === "cancelled") group.settle("expired", "Not pending any more: the run was stopped.");
          else if (said) group.settle("elsewhere", "Decided in the chat.");
          else group.settle("denied", "Not approved: you sent another message instead.");
        } catch { /* the cards stay; deciding will tell */ }
      })();
    }
  }

  let approvalIds = 0;
  const BADGES = {
    pending: "Waiting for you",
    deciding: "Sending…",
    approved: "Approved",
    denied: "Denied",
    expired: "Expired",
    elsewhere: "Already decided",
    failed: "Not decided",
  };
  const TITLES = {
    approved: "You approved this tool call",
    denied: "You denied this tool call",
    expired: "This request expired",
    elsewhere: "Decided elsewhere",
  };

  /** One call to decide: the tool, its arguments, Approve / Deny, and what became of it. */
  function approvalCard(group, call) {
    const n = ++approvalIds;
    const titleId = `approval-${n}-title`;
    const whatId = `approval-${n}-what`;
    const expires = parseTime(call.expires_at);
    const badge = h("span", { class: "approval-badge" });
    const title = h("h3", { class: "approval-title", id: titleId });
    const expiry = expires
      ? h("span", { class: "approval-expiry", title: fullTime(call.expires_at) }, ` · expires ${timeAgo(call.expires_at)}`)
      : null;
    const status = h("p", { class: "approval-status", role: "status" });
    const approve = h("button", { type: "button", class: "button primary approve", "aria-describedby": whatId }, "Approve");
    const deny = h("button", { type: "button", class: "button deny", "aria-describedby": whatId }, "Deny");
    const actions = h("div", { class: "approval-actions" }, approve, deny);
    const el = h("section", {
      class: "approval",
      "data-state": "pending",
      "data-tool": call.tool,
      "data-call-id": call.call_id,
      "aria-labelledby": titleId,
      tabindex: "-1",
    },
    h("div", { class: "approval-head" },
      h("span", { class: "approval-icon", "aria-hidden": "true" }),
      h("div", { class: "approval-heading" },
        title,
        h("p", { class: "approval-what", id: whatId },
          "Run ", h("code", { class: "approval-tool" }, call.tool), " with these arguments", expiry)),
      badge),
    h("pre", { class: "approval-args", "aria-label": "Arguments" }, pretty(call.arguments ?? {})),
    actions,
    status);

    const card = {
      el,
      call,
      state: "pending",
      get open() { return card.state === "pending" || card.state === "deciding" || (card.state === "failed" && card.retry); },
      retry: false,
      /** pending | deciding | approved | denied | expired | elsewhere | failed; `retry`: the buttons stay (a failure that may mend). */
      set(next, message = "", { retry = false, decision = null } = {}) {
        const hadFocus = el.contains(document.activeElement);
        card.state = next;
        card.retry = next === "failed" && retry;
        el.dataset.state = next;
        badge.textContent = BADGES[next];
        title.textContent = TITLES[next] || (card.retry || next !== "failed" ? "Approval needed" : "Not decided here");
        if (expiry) expiry.hidden = !card.open;
        status.textContent = message;
        const deciding = next === "deciding";
        approve.textContent = deciding && decision === "approve" ? "Approving…" : "Approve";
        deny.textContent = deciding && decision === "deny" ? "Denying…" : "Deny";
        // aria-disabled, not disabled: the pressed button keeps the keyboard focus while it is sent.
        for (const button of [approve, deny]) button.setAttribute("aria-disabled", deciding ? "true" : "false");
        el.setAttribute("aria-busy", deciding ? "true" : "false");
        actions.hidden = !(next === "pending" || deciding || card.retry);
        if (actions.hidden && hadFocus) el.focus();
      },
    };
    card.set("pending");
    approve.addEventListener("click", () => decideCall(group, card, "approve"));
    deny.addEventListener("click", () => decideCall(group, card, "deny"));
    if (expires) {
      const due = Math.max(0, expires.getTime() - Date.now());
      window.setTimeout(() => {
        if (card.state === "pending" && el.isConnected) card.set("expired", "Nobody decided in time: the assistant will not run it.");
      }, Math.min(due, MAX_TIMER_MS));
    }
    return card;
  }

  async function decideCall(group, card, decision) {
    if (card.state === "deciding" || !card.open) return;
    const tool = card.call.tool;
    card.set("deciding", "", { decision });
    const runPath = `/v1/runs/${encodeURIComponent(group.runId)}`;
    try {
      const body = { call_id: card.call.call_id, decision };
      // The server checks that what is decided is what this card shows.
      if (card.call.arguments_hash) body.arguments_hash = card.call.arguments_hash;
      const run = await (await api(`${runPath}/approvals`, { method: "POST", body: JSON.stringify(body) })).json();
      const approved = decision === "approve";
      const goesOn = run.status !== AWAITING;
      card.set(approved ? "approved" : "denied", approved
        ? (goesOn ? "Approved. The assistant is going on." : "Approved. The assistant goes on once the other calls are decided.")
        : (goesOn ? "Denied. The assistant was told and is going on." : "Denied. The assistant goes on once the other calls are decided."));
      announce(`${approved ? "Approved" : "Denied"} ${tool}.`);
      if (goesOn) goOn(group);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        card.set("failed", err.message, { retry: true });
        report(err);
        return;
      }
      if (err instanceof ApiError && (err.status === 404 || err.status === 409)) {
        // Not pending any more: stopped, expired, or decided elsewhere (another tab, the chat).
        let run = null;
        try { run = await (await api(runPath)).json(); } catch { /* the refusal says enough */ }
        if (run && run.status === "cancelled") card.set("expired", `${err.message} The run was stopped, or nobody decided in time.`);
        else card.set(run && run.status !== AWAITING ? "elsewhere" : "failed", err.message);
        announce(`${tool} was not decided here. ${err.message}`);
        if (run && run.status !== AWAITING && run.status !== "cancelled") goOn(group);
        return;
      }
      // The network or the server: nothing was decided, or it was and asking again is refused (409).
      card.set("failed", `${err.message || NETWORK_MESSAGE} Try again.`, { retry: true });
      announce(`Couldn't send the decision for ${tool}.`);
    }
  }

  /** The run's calls are all decided: follow it going on, as the next reply, in this conversation. */
  function goOn(group) {
    if (group.followed) return;
    group.followed = true;
    const start = () => {
      if (!state.userId || state.conversationId !== group.conversationId) return;
      if (state.stream) {
        state.afterStream.push(start);
        return;
      }
      followGoingOn(group);
    };
    start();
  }

  async function followGoingOn(group) {
    const stream = newStream();
    stream.runId = group.runId;
    const reply = assistantMessage(null);
    reply.startTyping();
    els.welcome.hidden = true;
    els.messages.append(reply.el);
    scrollToEnd(true);
    try {
      await followRun(stream, reply, group.goingOn());
    } finally {
      endStream(stream);
    }
  }

  // ------------------------------------------------------------------ assistants (models)

  async function loadModels() {
    try {
      const body = await (await api("/v1/models")).json();
      state.models = (body.data || []).map((model) => ({ id: String(model.id), description: model.description || "" }));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        report(err);
        return;
      }
      state.models = []; // the picker keeps the assistant in use; chatting still works
    }
    renderModels();
  }

  function renderModels() {
    const known = state.models.length ? state.models : [{ id: state.model, description: "" }];
    if (!known.some((model) => model.id === state.model)) {
      state.model = known.some((model) => model.id === TODO_MODEL) ? TODO_MODEL : known[0].id;
    }
    els.modelSelect.replaceChildren(...known.map((model) => h("option", {
      value: model.id,
      title: model.description || false,
    }, model.id)));
    els.modelSelect.value = state.model;
    describeModel();
  }

  function describeModel() {
    const model = state.models.find((m) => m.id === state.model);
    const description = model ? model.description : "";
    els.modelSelect.title = description;
    els.modelDescription.textContent = description;
  }

  /** Talk to `id` from the next message on (a stored conversation goes on with its own assistant). */
  function pickModel(id, { remember = true } = {}) {
    if (!id) return;
    if (state.models.length && !state.models.some((model) => model.id === id)) return; // no longer offered
    state.model = id;
    if (remember) storeModel(id);
    if (![...els.modelSelect.options].some((option) => option.value === id)) {
      els.modelSelect.append(h("option", { value: id }, id));
    }
    els.modelSelect.value = id;
    describeModel();
  }

  // ------------------------------------------------------------------ chat

  function setStreaming(on) {
    els.stop.hidden = !on;
    els.stop.disabled = false;
    els.stopLabel.textContent = "Stop";
    els.messages.setAttribute("aria-busy", on ? "true" : "false");
    updateSendButton();
  }

  function updateSendButton() {
    els.send.disabled = Boolean(state.stream) || !els.messageInput.value.trim();
  }

  /** "stop": ask the server to stop the run. Anything else (another conversation, signing out):
   *  this tab stops listening, and the run goes on and is saved (reopening the conversation rejoins it). */
  function stopStream(reason) {
    const stream = state.stream;
    if (!stream) return;
    if (reason === "stop") {
      requestStop(stream);
      return;
    }
    stream.reason = reason;
    stream.controller.abort();
  }

  function requestStop(stream) {
    if (stream.stopping) return;
    stream.stopping = true;
    els.stop.disabled = true;
    els.stopLabel.textContent = "Stopping…";
    // Before the server has named the run there is nothing to cancel yet: send() does it on hearing the id.
    if (stream.runId) cancelRun(stream);
  }

  /** Cancel the run; the stream being read then ends with the run's `cancelled` event. */
  async function cancelRun(stream) {
    const runId = stream.runId;
    try {
      await api(`/v1/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
    } catch (err) {
      if (state.stream !== stream || stream.runId !== runId) return;
      stream.stopping = false;
      els.stop.disabled = false;
      els.stopLabel.textContent = "Stop";
      report(err, "Couldn't stop the answer");
      return;
    }
    // The end normally arrives within a second. Should it not, stop listening rather than spin.
    window.setTimeout(() => {
      if (state.stream === stream && stream.runId === runId) {
        stream.reason = "stop";
        stream.controller.abort();
      }
    }, 10_000);
  }

  function adoptConversation(id, firstMessage) {
    if (state.conversationId === id) return;
    state.conversationId = id;
    state.titles.set(id, firstMessage);
    setHash(id, { replace: true });
    setTitle(truncate(firstMessage, 80));
  }

  function newStream() {
    const stream = { controller: new AbortController(), reason: null, runId: null, stopping: false };
    state.stream = stream;
    setStreaming(true);
    return stream;
  }

  function endStream(stream) {
    if (state.stream === stream) {
      state.stream = null;
      setStreaming(false);
      // A run whose calls were decided while this answer streamed goes on now.
      const next = state.afterStream.shift();
      if (next) next();
    }
    if (state.userId) {
      loadTasks();
      loadConversations();
    }
    scrollToEnd();
  }

  /** What a reply says when this tab stopped listening (the run itself was not stopped). */
  function abandoned(reply, stream) {
    if (stream.reason === "stop") {
      reply.note("Stopped listening. If the assistant is still answering, its answer will be saved.");
    }
    reply.finish();
  }

  async function send(text) {
    if (!text.trim() || state.stream || !state.userId) return;
    hideBanner();
    els.welcome.hidden = true;
    const startedIn = state.conversationId;
    const model = state.model;
    const sent = userMessage(text);
    els.messages.append(sent);
    let reply = assistantMessage(null);
    reply.startTyping();
    els.messages.append(reply.el);
    els.messageInput.value = "";
    autosize();
    const stream = newStream();
    scrollToEnd(true);

    let settled = false;
    let responded = false;
    let follow = false; // the reply's stream broke off: read the rest from the run's events
    try {
      const response = await (model === TODO_MODEL ? askTodo(text, startedIn, stream) : askModel(model, text, startedIn, stream));
      responded = true;
      stream.runId = response.headers.get("X-Run-ID");
      if (stream.stopping && stream.runId) cancelRun(stream); // Stop was pressed before the answer began
      const given = response.headers.get("X-Conversation-ID");
      if (given && startedIn == null) adoptConversation(given, text);
      if (startedIn != null) noticeDecisions(text, stream.runId);
      if (model !== TODO_MODEL) {
        // Chat Completions chunks carry only the text: the run's own events also tell its tool calls
        // and where it stops for approval. Closing this stream leaves the run going (it is not cancelled).
        response.body.cancel().catch(() => {});
        if (!stream.runId) throw new ApiError("The server did not say which run answers.", 0, "server_error");
        // A message that decided a stopped run ("approve") is answered by that run, going on from its stop.
        const decided = state.approvals.get(stream.runId);
        reply = await followRun(stream, reply, decided ? decided.goingOn() : {});
        return;
      }
      for await (const { event, data } of readSse(response.body)) {
        let payload;
        try { payload = JSON.parse(data); } catch { continue; }
        if (event === "delta") {
          reply.text(payload.text || "");
        } else if (event === "tool_call") {
          reply.toolCall(payload.tool, payload.args);
        } else if (event === "tool_result") {
          reply.toolResult(payload.tool, payload.result);
          loadTasks();
        } else if (event === "done") {
          if (payload.conversation_id && startedIn == null) adoptConversation(String(payload.conversation_id), text);
          reply.finish(payload);
          settled = true;
        } else if (event === "cancelled") {
          reply.markStopped();
          reply.finish(payload);
          announce("Stopped.");
          settled = true;
        } else if (event === "awaiting_approval" && stream.runId) {
          follow = true; // the run's events say where it stopped, to go on from there once decided
          break;
        } else if (event === "error") {
          if (payload.code === "run_restarted" && stream.runId) {
            follow = true; // the run started over on another worker: its events tell the new attempt
            break;
          }
          reply.error(sentence(payload.message || "The assistant ran into a problem"));
          reply.finish();
          settled = true;
        }
        scrollToEnd();
        if (settled) break;
      }
      if (!settled && stream.runId) follow = true;
      if (follow) {
        // Start the reply over from the run's first event: nothing doubled, nothing missing.
        const fresh = assistantMessage(null);
        fresh.startTyping();
        reply.el.replaceWith(fresh.el);
        reply = await followRun(stream, fresh);
      } else if (!settled) {
        reply.error("The connection closed before the reply finished. The answer will still be saved: reopen this conversation in a moment to see it.");
        reply.finish();
      }
    } catch (err) {
      if (isAbort(err)) {
        abandoned(reply, stream);
      } else if (err instanceof ApiError && err.status === 401) {
        report(err);
      } else {
        if (responded) {
          reply.error(err.message || NETWORK_MESSAGE);
        } else {
          // Nothing reached the assistant: say so, and give the words back to send again.
          sent.classList.add("unsent");
          reply.error(`Your message wasn't sent. ${err.message || NETWORK_MESSAGE}`);
          if (!els.messageInput.value) {
            els.messageInput.value = text;
            autosize();
          }
        }
        reply.finish();
      }
    } finally {
      endStream(stream);
    }
  }

  /** One turn with the todo assistant, through the todo API: its SSE tells text and tool calls. */
  function askTodo(text, conversationId, stream) {
    const body = { message: text };
    if (conversationId != null) body.conversation_id = conversationId;
    return api(userPath("chat"), {
      method: "POST",
      headers: { Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: stream.controller.signal,
    });
  }

  /** One turn with any other assistant: the newest message alone, the server keeps the history. */
  function askModel(model, text, conversationId, stream) {
    const headers = { Accept: "text/event-stream" };
    if (conversationId != null) headers["X-Conversation-ID"] = conversationId;
    return api("/v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: text }] }),
      signal: stream.controller.signal,
    });
  }

  const sleep = (ms, signal) => new Promise((resolve, reject) => {
    const timer = window.setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      window.clearTimeout(timer);
      reject(new DOMException("Aborted", "AbortError"));
    }, { once: true });
  });

  /**
   * Follow the run `stream.runId` into `reply`, from its first event or after event `after`,
   * reconnecting after a break with the last event's id, until its terminal event, or until it stops
   * for approval (then the reply ends with a card per call to decide). Events up to the run's
   * `skipPauses`-th stop for approval are not shown: what it said until then is stored and on the page.
   * Returns the reply in use (an attempt that starts over replaces it, and so does going on after a
   * stop decided elsewhere), finished, also when this tab stopped listening (the stream's signal aborted).
   */
  async function followRun(stream, reply, { after = 0, skipPauses = 0 } = {}) {
    const runId = stream.runId;
    let attempt = null;
    let breaks = 0;
    for (;;) {
      let reconnect = false; // the stream ended where it should, at a stop the run has gone on from
      try {
        const headers = { Accept: "text/event-stream" };
        if (after) headers["Last-Event-ID"] = String(after);
        const response = await api(`/v1/runs/${encodeURIComponent(runId)}/events`, {
          headers,
          signal: stream.controller.signal,
        });
        for await (const { event, data, id } of readSse(response.body)) {
          let payload;
          try { payload = JSON.parse(data); } catch { continue; }
          const seq = Number(id ?? payload.seq);
          if (Number.isFinite(seq) && seq > after) after = seq;
          breaks = 0;
          if (skipPauses > 0 && !["run.awaiting_approval", "run.completed", "run.cancelled", "run.failed"].includes(event)) {
            continue;
          }
          if (event === "run.started") {
            const started = Number(payload.attempt) || 0;
            if (attempt != null && started > attempt) {
              // The run started over: what the earlier attempt said is void.
              const fresh = assistantMessage(null);
              fresh.startTyping();
              reply.el.replaceWith(fresh.el);
              reply = fresh;
            }
            if (attempt == null || started > attempt) attempt = started;
          } else if (event === "text.delta") {
            reply.text(payload.text || "");
          } else if (event === "tool.call") {
            reply.toolCall(payload.tool, payload.args);
          } else if (event === "tool.result") {
            reply.toolResult(payload.tool, payload.result, payload.is_error === true);
            loadTasks();
          } else if (event === "run.awaiting_approval") {
            // Going on after a stop is a new attempt, not the run starting over.
            attempt = null;
            if (skipPauses > 0) {
              skipPauses -= 1;
              reconnect = true;
              break;
            }
            const asked = { runId, seq, approvals: payload.approvals || [] };
            const stillAsking = await showApprovals(reply, asked, stream.controller.signal);
            if (stillAsking) return reply;
            // Decided already (in another tab, say): its going on is the next reply.
            reply.finish();
            const fresh = assistantMessage(null);
            fresh.startTyping();
            reply.el.after(fresh.el);
            reply = fresh;
            reconnect = true;
            break;
          } else if (event === "run.completed") {
            reply.finish();
            return reply;
          } else if (event === "run.cancelled") {
            reply.markStopped();
            reply.finish();
            announce("Stopped.");
            return reply;
          } else if (event === "run.failed") {
            reply.error(sentence(payload.message || "The assistant ran into a problem"));
            reply.finish();
            return reply;
          }
          scrollToEnd();
        }
      } catch (err) {
        if (isAbort(err)) {
          abandoned(reply, stream);
          return reply;
        }
        // A refusal (the key, a vanished run) will not mend by asking again; a network or server hiccup may.
        if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
          if (err.status === 401) report(err);
          else reply.error(err.message);
          reply.finish();
          return reply;
        }
      }
      if (reconnect) continue;
      // The stream ended before the run did: pick up after the last event seen.
      breaks += 1;
      if (breaks > 5) {
        reply.error("Lost the connection while the answer was coming in. It will still be saved: reopen this conversation to see it.");
        reply.finish();
        return reply;
      }
      try {
        await sleep(400 * breaks, stream.controller.signal);
      } catch {
        abandoned(reply, stream);
        return reply;
      }
    }
  }

  /** Show the runs still answering in this conversation, one after another, as they go on. `pauses`:
   *  how many times each stopped for approval, its question stored (the stored part is not shown again). */
  async function rejoin(runs, pauses = new Map()) {
    if (state.stream) return;
    const stream = newStream();
    try {
      for (const run of runs) {
        stream.runId = run.id;
        stream.stopping = false;
        setStreaming(true);
        const reply = assistantMessage(null);
        reply.startTyping();
        els.welcome.hidden = true;
        els.messages.append(reply.el);
        scrollToEnd(true);
        await followRun(stream, reply, { skipPauses: pauses.get(run.id) || 0 });
        if (stream.controller.signal.aborted || state.stream !== stream) break;
      }
    } finally {
      endStream(stream);
    }
  }

  function autosize() {
    const input = els.messageInput;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
    updateSendButton();
  }

  // ------------------------------------------------------------------ tasks

  const EMPTY_TASKS = {
    all: "No tasks yet. Ask the assistant to add one.",
    pending: "Nothing pending. Enjoy the free time.",
    completed: "No completed tasks yet.",
  };

  async function loadTasks({ more = false } = {}) {
    if (!state.userId) return;
    const seq = ++state.seq.tasks;
    const filter = state.filter;
    const params = new URLSearchParams({ status: filter, limit: "100" });
    if (more && state.tasksCursor) params.set("cursor", state.tasksCursor);
    els.taskList.setAttribute("aria-busy", "true");
    try {
      const body = await (await api(`${userPath("tasks")}?${params}`)).json();
      if (seq !== state.seq.tasks) return;
      state.tasks = more ? state.tasks.concat(body.data) : body.data;
      state.tasksCursor = body.next_cursor || null;
      els.tasksError.hidden = true;
      renderTasks();
    } catch (err) {
      if (seq !== state.seq.tasks || isAbort(err)) return;
      if (err instanceof ApiError && err.status === 401) {
        report(err);
        return;
      }
      els.tasksError.textContent = `Couldn't load your tasks. ${err.message}`;
      els.tasksError.hidden = false;
    } finally {
      if (seq === state.seq.tasks) els.taskList.setAttribute("aria-busy", "false");
    }
  }

  /**
   * The round mark beside a task. A pending task's is a button that completes it through the todo
   * assistant's own `complete_task` tool, over `/mcp` with the user's credential (the same tool, the
   * same checks, the same user as when the assistant does it). A completed task's is only a tick:
   * no tool takes a task back.
   */
  function taskMark(task) {
    if (task.completed) return h("span", { class: "task-check", "aria-hidden": "true" }, "✓");
    const button = h("button", {
      type: "button",
      class: "task-check",
      title: "Mark as done",
      "aria-label": `Mark “${truncate(task.title, 80)}” as done`,
      "aria-disabled": "false",
    }, "✓");
    button.addEventListener("click", () => completeTask(task, button));
    return button;
  }

  let mcpIds = 0;

  /** Call one of the todo tools as the signed-in user: its result, or an ApiError with its message. */
  async function callTodoTool(name, args) {
    let response;
    try {
      response = await api("/mcp", {
        method: "POST",
        headers: { Accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++mcpIds, method: "tools/call", params: { name, arguments: args } }),
      });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 421 || err.status === 403)) {
        // The MCP endpoint's DNS-rebinding check: this page's address is not one it answers.
        throw new ApiError(
          "This server does not accept tool calls at this address (see SWITCHBOARD_MCP_ALLOWED_HOSTS). Ask the assistant instead.",
          err.status, err.type, err.code);
      }
      throw err;
    }
    const body = await response.json().catch(() => null);
    if (!body || body.error || !body.result) {
      const message = body && body.error && body.error.message ? body.error.message : "The server gave no result";
      throw new ApiError(sentence(message), response.status, "tool_error");
    }
    const text = (body.result.content || []).map((part) => part.text || "").join("");
    if (body.result.isError) throw new ApiError(sentence(text || "The tool failed"), response.status, "tool_error");
    return parseMaybeJson(text);
  }

  async function completeTask(task, button) {
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    button.classList.add("busy");
    els.tasksError.hidden = true;
    const place = [...els.taskList.children].findIndex((item) => item.contains(button));
    try {
      await callTodoTool("complete_task", { task_id: task.id });
      const done = els.taskList.querySelector(`[data-task-id="${CSS.escape(String(task.id))}"]`);
      if (done) done.classList.add("completed");
      announce(`Marked “${task.title}” as done.`);
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.status === 401) {
        report(err);
        return;
      }
      els.tasksError.textContent = `Couldn't mark “${truncate(task.title, 60)}” as done. ${err.message}`;
      els.tasksError.hidden = false;
      button.setAttribute("aria-disabled", "false");
      button.classList.remove("busy");
      button.focus();
    }
    await loadTasks();
    // The pressed mark is gone with the list it was in: keep the keyboard near where it was.
    if (!document.activeElement || document.activeElement === document.body) {
      const items = [...els.taskList.children];
      const near = items.slice(Math.max(place, 0)).concat(items.slice(0, Math.max(place, 0)).reverse());
      const next = near.map((item) => item.querySelector("button.task-check")).find(Boolean);
      (next || els.tasksRefresh).focus();
    }
  }

  function renderTasks() {
    const known = state.knownTaskIds;
    const items = state.tasks.map((task) => {
      const fresh = known && !known.has(task.id);
      return h("li", {
        class: `task${task.completed ? " completed" : ""}${fresh ? " fresh" : ""}`,
        "data-task-id": task.id,
      },
      taskMark(task),
      h("div", {},
        h("div", { class: "task-title" }, task.title),
        h("span", { class: "visually-hidden" }, task.completed ? " (completed)" : " (pending)"),
        task.description ? h("p", { class: "task-description" }, task.description) : null,
        h("div", { class: "task-meta", title: fullTime(task.created_at) },
          `#${task.id} · added ${timeAgo(task.created_at)}`)));
    });
    els.taskList.replaceChildren(...items);
    state.knownTaskIds = new Set(state.tasks.map((task) => task.id));
    els.tasksEmpty.textContent = EMPTY_TASKS[state.filter];
    els.tasksEmpty.hidden = items.length > 0;
    els.tasksMore.hidden = !state.tasksCursor;
    const pending = state.tasks.filter((task) => !task.completed).length;
    els.taskBadge.textContent = String(pending);
    els.taskBadge.hidden = state.filter === "completed" || pending === 0;
    els.taskBadge.setAttribute("aria-label", `${pending} pending`);
  }

  // ------------------------------------------------------------------ drawers (narrow screens)

  let drawerOpener = null;

  function openDrawer(name, opener) {
    closeDrawers({ restoreFocus: false });
    els.app.classList.add(`show-${name}`);
    els.scrim.hidden = false;
    opener.setAttribute("aria-expanded", "true");
    drawerOpener = opener;
    const pane = name === "sidebar" ? els.sidebar : els.tasksPane;
    const target = pane.querySelector("[data-close-drawer]");
    if (target) target.focus();
  }

  function closeDrawers({ restoreFocus = true } = {}) {
    const wasOpen = els.app.classList.contains("show-sidebar") || els.app.classList.contains("show-tasks");
    els.app.classList.remove("show-sidebar", "show-tasks");
    els.scrim.hidden = true;
    els.openSidebar.setAttribute("aria-expanded", "false");
    els.openTasks.setAttribute("aria-expanded", "false");
    if (wasOpen && restoreFocus && drawerOpener) drawerOpener.focus();
    drawerOpener = null;
  }

  // ------------------------------------------------------------------ wiring

  function bindEvents() {
    els.signinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const credential = els.credential.value.trim();
      if (!credential) {
        showSignin("Enter your API key or token.");
        return;
      }
      signIn(credential);
    });

    els.signOut.addEventListener("click", () => signOut("You signed out."));
    els.newConversation.addEventListener("click", () => {
      showNewConversation();
      closeDrawers({ restoreFocus: false });
      els.messageInput.focus();
    });
    els.conversationsMore.addEventListener("click", () => loadConversations({ more: true }));
    els.bannerClose.addEventListener("click", hideBanner);

    els.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      send(els.messageInput.value);
    });
    els.messageInput.addEventListener("input", autosize);
    els.modelSelect.addEventListener("change", () => pickModel(els.modelSelect.value));
    els.messageInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey) {
        event.preventDefault();
        send(els.messageInput.value);
      }
    });
    els.stop.addEventListener("click", () => {
      stopStream("stop");
      els.messageInput.focus();
    });
    for (const button of document.querySelectorAll(".suggestion")) {
      button.addEventListener("click", () => send(button.textContent));
    }

    for (const radio of document.querySelectorAll("input[name=task-filter]")) {
      radio.addEventListener("change", () => {
        if (!radio.checked) return;
        state.filter = radio.value;
        state.knownTaskIds = null;
        state.tasksCursor = null;
        loadTasks();
      });
    }
    els.tasksRefresh.addEventListener("click", () => loadTasks());
    els.tasksMore.addEventListener("click", () => loadTasks({ more: true }));

    els.openSidebar.addEventListener("click", () => openDrawer("sidebar", els.openSidebar));
    els.openTasks.addEventListener("click", () => {
      if (els.app.classList.contains("show-tasks")) closeDrawers();
      else openDrawer("tasks", els.openTasks);
    });
    els.scrim.addEventListener("click", () => closeDrawers());
    for (const button of document.querySelectorAll("[data-close-drawer]")) {
      button.addEventListener("click", () => closeDrawers());
    }
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !els.scrim.hidden) closeDrawers();
    });
    window.addEventListener("popstate", onLocationChange);
    window.addEventListener("hashchange", onLocationChange);
  }

  function boot() {
    collectElements();
    bindEvents();
    const saved = readCredential();
    if (saved) signIn(saved, { restoring: true });
    else showSignin();
  }

  boot();
})();
