// Lantern's web client: conversations, streamed Markdown answers, notes, feedback, and a connection
// that may come and go (an SSH tunnel from a phone). Every text from the server becomes DOM text.

import { api, events, reachable, token, ApiError, NotPaired, Unreachable } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const WELCOME = $("welcome");
const DRAFT = "lantern-draft";
const OPEN = "lantern-conversation";
const state = {
  conversation: null, // {id, title, model} once the server has stored it
  messages: [], // {id, role, content, model, citations, el, body}
  models: null, // GET /v1/lantern/models
  controller: null, // the answer being streamed
  online: true,
  retryDelay: 1000,
  retryTimer: 0,
  countdown: 0,
};

// ---- small DOM helpers ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (typeof value === "function") node.addEventListener(key, value);
    else if (value !== false && value != null) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

function iconButton(name, label, click, extra = {}) {
  return el("button", { type: "button", class: "icon", "aria-label": label, title: label, click, ...extra }, icon(name));
}

function say(text) {
  $("live").textContent = "";
  requestAnimationFrame(() => ($("live").textContent = text));
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), 5000);
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API outside a secure context (a LAN address over http): the old way.
    const area = el("textarea", { class: "sr-only" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.getAttribute("aria-label");
  button.classList.add("done");
  button.setAttribute("aria-label", "Copied");
  if (button.classList.contains("copy-code")) button.textContent = "Copied";
  say("Copied");
  setTimeout(() => {
    button.classList.remove("done");
    button.setAttribute("aria-label", label);
    if (button.classList.contains("copy-code")) button.textContent = "Copy";
  }, 2000);
}

function when(iso) {
  const then = new Date(iso);
  const minutes = (Date.now() - then) / 60000;
  if (!(minutes >= 0)) return "";
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${Math.floor(minutes)} min ago`;
  if (minutes < 24 * 60) return `${Math.floor(minutes / 60)} h ago`;
  return then.toLocaleDateString();
}

// ---- dialogs: <dialog> elements, so Escape, focus and the keyboard work as a browser does ----

function ask(dialog, setup) {
  setup();
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

function confirmAction(text, ok = "Delete") {
  return ask($("confirm"), () => {
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = ok;
  });
}

async function editText(title, value, { line = false, ok = "Save" } = {}) {
  const field = line ? $("editor-line") : $("editor-text");
  const accepted = await ask($("editor"), () => {
    $("editor-title").textContent = title;
    $("editor-ok").textContent = ok;
    $("editor-line").hidden = !line;
    $("editor-text").hidden = line;
    field.value = value;
    setTimeout(() => field.focus(), 0);
  });
  const text = field.value.trim();
  return accepted && text ? text : null;
}

// ---- errors: one place decides what the user sees ----

function handle(error) {
  if (error instanceof NotPaired) showPairing("This device's token was not accepted: it is wrong or was revoked.");
  else if (error instanceof Unreachable) goOffline();
  else if (error.name !== "AbortError") toast(error.message || String(error));
}

// ---- pairing ----

function takeTokenFromLink() {
  // `lantern pair` puts the token in the URL fragment, which never reaches any server.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    token.set(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
}

function showPairing(reason = "") {
  token.clear();
  state.controller?.abort();
  document.body.dataset.view = "pairing";
  $("pairing").hidden = false;
  $("pairing-reason").textContent = reason;
  $("pairing-error").textContent = "";
  $("token").value = "";
  $("token").focus();
}

async function pair(event) {
  event.preventDefault();
  token.set($("token").value.trim());
  try {
    await api("/v1/lantern/models");
  } catch (error) {
    if (error instanceof NotPaired) {
      token.clear();
      $("pairing-error").textContent = "That token was not accepted. Run 'lantern pair NAME' again and use the new one.";
      return;
    }
    if (!(error instanceof Unreachable)) throw error;
  }
  $("pairing").hidden = true;
  start();
}

async function forgetDevice() {
  if (!(await confirmAction("Forget this device? You will need to pair it again to use Lantern.", "Forget"))) return;
  localStorage.removeItem(OPEN);
  newChat();
  showPairing("This device was forgotten.");
}

// ---- connection: a banner, retries with backoff, recovery without a reload ----

function goOffline() {
  if (!state.online) return;
  state.online = false;
  document.body.dataset.conn = "offline";
  $("banner").hidden = false;
  say("Lantern is not reachable. Is the tunnel up?");
  state.retryDelay = 1000;
  scheduleRetry();
}

function scheduleRetry() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  let left = Math.round(state.retryDelay / 1000);
  const show = () => ($("retry-in").textContent = left > 0 ? `Trying again in ${left} s.` : "Trying…");
  show();
  state.countdown = setInterval(() => {
    left--;
    show();
  }, 1000);
  state.retryTimer = setTimeout(probe, state.retryDelay);
}

async function probe() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  $("retry-in").textContent = "Trying…";
  if (await reachable()) return comeBack();
  state.retryDelay = Math.min(state.retryDelay * 2, 10000);
  if (!state.online) scheduleRetry();
}

function comeBack() {
  const wasOffline = !state.online;
  state.online = true;
  document.body.dataset.conn = "online";
  $("banner").hidden = true;
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  if (wasOffline) {
    say("Lantern is reachable again.");
    if (token.get()) refresh().catch(handle);
  }
}

// ---- models and twins ----

async function loadModels() {
  state.models = await api("/v1/lantern/models");
  const picker = $("model");
  const keep = picker.value || state.conversation?.model || state.models.default;
  picker.replaceChildren(
    ...state.models.models.map((m) => el("option", { value: m.id, text: m.kind === "twin" ? `${m.id} · twin` : m.id })),
  );
  pickModel(keep);
}

function pickModel(id) {
  const picker = $("model");
  if (id && ![...picker.options].some((o) => o.value === id)) picker.append(el("option", { value: id, text: id }));
  if (id) picker.value = id;
}

// ---- conversations ----

async function loadConversations() {
  const query = $("conv-search").value.trim();
  const path = `/v1/lantern/conversations?limit=50${query ? `&q=${encodeURIComponent(query)}` : ""}`;
  const { conversations } = await api(path);
  $("conv-list").replaceChildren(...conversations.map(conversationItem));
  $("conv-empty").hidden = conversations.length > 0;
  $("conv-empty").textContent = query ? "Nothing matches." : "No conversations yet.";
  const current = conversations.find((c) => c.id === state.conversation?.id);
  if (current) setTitle(current.title);
}

function conversationItem(c) {
  const meta = [c.model, `${c.messages} messages`, when(c.updated_at)].filter(Boolean).join(" · ");
  return el(
    "li",
    { "data-id": c.id },
    el(
      "button",
      { type: "button", class: "open", "aria-current": c.id === state.conversation?.id ? "true" : false, click: () => openConversation(c.id) },
      el("span", { class: "conv-title", text: c.title }),
      el("span", { class: "muted", text: meta }),
    ),
    iconButton("edit", `Rename ${c.title}`, () => renameConversation(c).catch(handle)),
    iconButton("trash", `Delete ${c.title}`, () => deleteConversation(c).catch(handle)),
  );
}

async function renameConversation(c) {
  const title = await editText("Rename conversation", c.title, { line: true, ok: "Rename" });
  if (!title || title === c.title) return;
  await api(`/v1/lantern/conversations/${encodeURIComponent(c.id)}`, { method: "PATCH", body: { title } });
  if (state.conversation?.id === c.id) setTitle(title);
  say(`Renamed to ${title}`);
  await loadConversations();
}

async function deleteConversation(c) {
  const sure = await confirmAction(`Delete “${c.title}”? It is removed from Lantern on your computer too.`);
  if (!sure) return;
  await api(`/v1/lantern/conversations/${encodeURIComponent(c.id)}`, { method: "DELETE" });
  if (state.conversation?.id === c.id) newChat();
  say(`Deleted ${c.title}`);
  await loadConversations();
}

async function openConversation(id) {
  if (state.controller) return toast("Wait for the answer to finish, or stop it.");
  const c = await api(`/v1/lantern/conversations/${encodeURIComponent(id)}`);
  state.conversation = { id: c.id, title: c.title, model: c.model };
  localStorage.setItem(OPEN, c.id);
  state.messages = [];
  $("thread").replaceChildren();
  for (const m of c.messages) addMessage({ ...m, model: m.model || (m.role === "assistant" ? c.model : null) });
  markLast();
  setTitle(c.title);
  pickModel(c.model);
  closeDrawer();
  for (const item of $("conv-list").children) item.firstChild.setAttribute("aria-current", String(item.dataset.id === c.id));
  $("log").scrollTop = $("log").scrollHeight;
  $("prompt").focus();
}

function newChat() {
  state.controller?.abort();
  state.conversation = null;
  state.messages = [];
  localStorage.removeItem(OPEN);
  $("thread").replaceChildren(WELCOME);
  setTitle("Lantern");
  if (state.models) pickModel(state.models.default);
  for (const item of $("conv-list").children) item.firstChild.setAttribute("aria-current", "false");
  closeDrawer();
  $("prompt").focus();
}

function setTitle(text) {
  $("title").textContent = text;
  document.title = text === "Lantern" ? "Lantern" : `${text} · Lantern`;
}

function openDrawer() {
  document.body.classList.add("drawer-open");
  $("scrim").hidden = false;
  $("menu").setAttribute("aria-expanded", "true");
  $("conv-search").focus();
  loadConversations().catch(handle);
}

function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  $("scrim").hidden = true;
  $("menu").setAttribute("aria-expanded", "false");
}

// ---- messages ----

function addMessage(m) {
  WELCOME.remove();
  state.messages.push(m);
  if (m.role === "user") {
    m.body = el("div", { class: "bubble", text: m.content });
    m.el = el("div", { class: "msg user" }, m.body, el("div", { class: "actions" }, iconButton("edit", "Edit and resend", () => editLast().catch(handle), { class: "icon last-only" })));
  } else {
    m.label = el("div", { class: "model", text: m.model || "" });
    m.body = el("div", { class: "md" });
    m.sources = el("ol", { class: "sources", "aria-label": "Sources" });
    m.status = el("p", { class: "status muted", role: "status" });
    m.actions = el("div", { class: "actions" });
    m.el = el("article", { class: "msg assistant" }, m.label, m.body, m.sources, m.status, m.actions);
    render(m);
    showSources(m);
    showActions(m);
    if (m.cut) m.status.textContent = "The engine broke off; this answer is partial.";
  }
  $("thread").append(m.el);
  return m;
}

function render(m) {
  m.frame = 0;
  renderMarkdown(m.content, m.body, copyText);
}

function showSources(m) {
  const citations = m.citations || [];
  m.sources.replaceChildren(
    ...citations.map((c, n) =>
      el("li", {}, el("button", { type: "button", class: "source", click: () => openPassage(c), text: `[${n + 1}] ${c.cite || (c.heading ? `${c.source} › ${c.heading}` : c.source)}` })),
    ),
  );
  m.sources.hidden = !citations.length;
}

function showActions(m) {
  // A second tap on the same thumb would only store the same judgement twice.
  const rate = (rating, button) =>
    button.getAttribute("aria-pressed") !== "true" && sendFeedback(m, rating, null, button).catch(handle);
  m.up = iconButton("up", "Good answer", () => rate(1, m.up), { "aria-pressed": "false" });
  m.down = iconButton("down", "Bad answer", () => rate(-1, m.down), { "aria-pressed": "false" });
  const edit = iconButton("edit", "Edit answer", () => editAnswer(m).catch(handle));
  const feedback = m.id != null && state.conversation ? [m.up, m.down, edit] : [];
  m.actions.replaceChildren(
    iconButton("copy", "Copy answer", (e) => copyText(m.content, e.currentTarget)),
    ...feedback,
    iconButton("redo", "Regenerate", () => regenerate().catch(handle), { class: "icon last-only" }),
  );
}

function markLast() {
  const lastOf = (role) => [...state.messages].reverse().find((m) => m.role === role);
  for (const m of state.messages) m.el.classList.remove("last");
  const user = lastOf("user");
  const answer = lastOf("assistant");
  if (state.conversation && user && answer && state.messages[state.messages.length - 1] === answer) {
    user.el.classList.add("last");
    answer.el.classList.add("last");
  }
}

async function sendFeedback(m, rating, edited, button) {
  const body = { conversation_id: state.conversation.id, message_id: m.id, rating };
  if (edited) body.edited = edited;
  await api("/v1/lantern/feedback", { method: "POST", body });
  if (button) {
    m.up.setAttribute("aria-pressed", String(button === m.up));
    m.down.setAttribute("aria-pressed", String(button === m.down));
  }
  m.status.textContent = edited ? "Your better answer is saved for your twin." : "Thanks, noted for your twin.";
}

async function editAnswer(m) {
  const better = await editText("Edit the answer: your version teaches your twin", m.content);
  if (better && better !== m.content) await sendFeedback(m, -1, better, null);
}

function openPassage(c) {
  $("passage-source").textContent = c.source;
  $("passage-heading").textContent = c.heading || "";
  $("passage-heading").hidden = !c.heading;
  $("passage-text").textContent = c.text;
  $("passage").showModal();
}

// ---- asking ----

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function submit(event) {
  event?.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  if (!token.get()) return showPairing();
  if (!state.online) {
    say("Not sent: Lantern is not reachable. Your message is kept.");
    $("banner").classList.remove("flash");
    void $("banner").offsetWidth;
    $("banner").classList.add("flash");
    probe().then(() => state.online && submit()); // back already: send it now
    return;
  }
  $("prompt").value = "";
  fitPrompt();
  const user = addMessage({ role: "user", content: text });
  answer(user, {}).catch(handle);
}

async function regenerate() {
  const user = [...state.messages].reverse().find((m) => m.role === "user");
  if (!user || state.controller) return;
  await answer(user, { regenerate: true });
}

async function editLast() {
  const user = [...state.messages].reverse().find((m) => m.role === "user");
  if (!user || state.controller) return;
  const text = await editText("Edit your message", user.content, { ok: "Send" });
  if (!text) return;
  user.content = text;
  user.body.textContent = text;
  await answer(user, { regenerate: true });
}

/** Stream the answer to `user` (a message already shown); with `regenerate`, replace the last one. */
async function answer(user, { regenerate = false }) {
  const replaced = regenerate ? state.messages.pop() : null;
  replaced?.el.remove();
  const m = addMessage({ role: "assistant", content: "", model: $("model").value, citations: [] });
  m.el.classList.add("streaming");
  m.el.setAttribute("aria-busy", "true");
  markLast();
  scrollDown(true);
  const lantern = { memory: $("use-memory").checked };
  if (state.conversation) lantern.conversation_id = state.conversation.id;
  else lantern.save = true;
  if (regenerate) lantern.regenerate = true;
  const body = { messages: [{ role: "user", content: user.content }], stream: true, lantern };
  // A model the server no longer offers (a removed twin) is left to the server: the conversation's, or the default.
  const picked = $("model").value;
  if (state.models?.models.some((choice) => choice.id === picked)) body.model = picked;
  state.controller = new AbortController();
  setBusy(true);
  let final = null;
  try {
    const response = await chat(body, m);
    if (localStorage.getItem(DRAFT) === user.content) localStorage.removeItem(DRAFT);
    for await (const chunk of events(response)) {
      if (chunk.model && chunk.model !== m.model) m.label.textContent = m.model = chunk.model;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        const first = !m.content;
        m.content += piece;
        if (first) render(m); // the first words show at once; the rest once per frame
        else if (!m.frame) m.frame = requestAnimationFrame(() => render(m));
        scrollDown();
      }
      if (chunk.lantern) final = { ...final, ...chunk.lantern }; // the first names the conversation, the last the answer
    }
  } catch (caught) {
    // A stream cut by the network fails as a TypeError from the reader.
    const error = caught instanceof TypeError ? new Unreachable(caught.message) : caught;
    if (!m.content) {
      // Nothing came back: the question goes back in the box, not lost.
      m.el.remove();
      state.messages.pop();
      if (replaced) {
        state.messages.push(replaced);
        $("thread").append(replaced.el);
      } else if (error.name !== "AbortError") {
        user.el.remove();
        state.messages.pop();
        if (!$("prompt").value) $("prompt").value = user.content;
        localStorage.setItem(DRAFT, $("prompt").value);
        fitPrompt();
      }
    } else {
      m.status.textContent = error.name === "AbortError" ? "Stopped." : "The connection broke; the answer was cut off.";
    }
    if (error.name === "AbortError" && m.content) say("Stopped.");
    handle(error);
  } finally {
    cancelAnimationFrame(m.frame);
    if (m.el.isConnected) render(m);
    m.el.classList.remove("streaming");
    m.el.removeAttribute("aria-busy");
    state.controller = null;
    setBusy(false);
  }
  if (final) {
    m.id = final.message_id;
    m.citations = final.citations || [];
    if (final.model) m.label.textContent = m.model = final.model;
    if (final.conversation_id && !state.conversation) {
      state.conversation = { id: final.conversation_id, title: user.content, model: m.model };
      localStorage.setItem(OPEN, final.conversation_id);
    }
    showSources(m);
    showActions(m);
    say(m.content);
  }
  markLast();
  if (state.online) loadConversations().catch(handle);
}

async function chat(body, m) {
  // A model or twin being loaded answers 503 with Retry-After: wait and try again, a few times.
  for (let attempt = 0; ; attempt++) {
    try {
      return await api("/v1/chat/completions", { method: "POST", body, signal: state.controller.signal, raw: true });
    } catch (error) {
      const busy = error instanceof ApiError && (error.code === "model_busy" || error.code === "overloaded");
      if (!busy || attempt >= 5) throw error;
      m.status.textContent = `${error.message} Trying again…`;
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, Math.max(error.retryAfter, 1) * 1000);
        state.controller.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(new DOMException("stopped", "AbortError"));
        });
      });
      m.status.textContent = "";
    }
  }
}

function scrollDown(force = false) {
  const log = $("log");
  if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
}

function fitPrompt() {
  const box = $("prompt");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 200)}px`;
}

// ---- notes ----

async function searchNotes(event) {
  event.preventDefault();
  const query = $("note-query").value.trim();
  if (!query) return;
  const { hits } = await api("/v1/lantern/memory/search", { method: "POST", body: { query, k: 8 } });
  $("note-hits").replaceChildren(
    ...hits.map((h) =>
      el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: "hit", click: () => openPassage(h) },
          el("strong", { text: h.heading ? `${h.source} › ${h.heading}` : h.source }),
          el("span", { class: "muted", text: h.text.length > 160 ? `${h.text.slice(0, 160)}…` : h.text }),
        ),
      ),
    ),
  );
  $("notes-status").textContent = hits.length ? `${hits.length} passages found.` : "Nothing in your notes matches.";
}

async function addNote(event) {
  event.preventDefault();
  const title = $("note-title").value.trim();
  const text = $("note-text").value.trim();
  if (!title || !text) return;
  const saved = await api("/v1/lantern/notes", { method: "POST", body: { title, text } });
  $("note-title").value = $("note-text").value = "";
  $("notes-status").textContent = `Saved “${saved.title}” to your notes.`;
}

async function rememberChat() {
  if (!state.conversation || !state.messages.length) {
    $("notes-status").textContent = "Open or start a conversation first.";
    return;
  }
  const text = state.messages.map((m) => `${m.role === "user" ? "Me" : "Lantern"}: ${m.content}`).join("\n\n");
  const title = `Chat: ${state.conversation.title || $("title").textContent}`.slice(0, 200);
  await api("/v1/lantern/notes", { method: "POST", body: { title, text: text.slice(0, 200000) } });
  $("notes-status").textContent = `This chat is in your notes as “${title}”.`;
}

// ---- start ----

async function refresh() {
  await Promise.all([loadModels(), loadConversations()]);
  const open = localStorage.getItem(OPEN);
  if (open && !state.conversation && !state.messages.length) {
    await openConversation(open).catch((error) => {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      localStorage.removeItem(OPEN);
    });
  }
  document.body.dataset.ready = "1";
}

async function start() {
  document.body.dataset.view = "app";
  $("pairing").hidden = true;
  if (!(await reachable())) return goOffline();
  comeBack();
  await refresh().catch(handle);
}

function bind() {
  $("token-form").addEventListener("submit", (e) => pair(e).catch(handle));
  $("ask-form").addEventListener("submit", submit);
  $("prompt").addEventListener("keydown", (e) => {
    // Enter sends with a keyboard; on a touch screen it is a new line. Ctrl/Cmd+Enter sends on both.
    const send = e.ctrlKey || e.metaKey || (!e.shiftKey && matchMedia("(pointer: fine)").matches);
    if (e.key === "Enter" && !e.isComposing && send) submit(e);
  });
  $("prompt").addEventListener("input", () => {
    localStorage.setItem(DRAFT, $("prompt").value);
    fitPrompt();
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", newChat);
  $("menu").addEventListener("click", openDrawer);
  $("scrim").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => e.key === "Escape" && closeDrawer());
  $("forget").addEventListener("click", () => forgetDevice().catch(handle));
  $("retry-now").addEventListener("click", probe);
  let typing = 0;
  $("conv-search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadConversations().catch(handle), 250);
  });
  $("open-notes").addEventListener("click", () => $("notes").showModal());
  for (const button of document.querySelectorAll("dialog .close")) button.addEventListener("click", (e) => e.target.closest("dialog").close());
  $("note-search").addEventListener("submit", (e) => searchNotes(e).catch(handle));
  $("note-add").addEventListener("submit", (e) => addNote(e).catch(handle));
  $("remember-chat").addEventListener("click", () => rememberChat().catch(handle));
  $("use-memory").addEventListener("change", () => localStorage.setItem("lantern-memory", $("use-memory").checked ? "on" : "off"));
  window.addEventListener("online", probe);
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && !state.online && probe());
}

takeTokenFromLink();
bind();
$("prompt").value = localStorage.getItem(DRAFT) || "";
$("use-memory").checked = localStorage.getItem("lantern-memory") !== "off";
if (token.get()) start();
else showPairing();
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
