// Lantern's web client: asks for the device token once, streams answers, shows citations.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("lantern-token"), conversationId: null, controller: null };

function takeTokenFromLink() {
  // `lantern pair` puts the token in the URL fragment, which never reaches any server.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    localStorage.setItem("lantern-token", state.token);
    history.replaceState(null, "", location.pathname);
  }
}

function showPairing(message) {
  $("pairing").hidden = false;
  $("pairing-error").textContent = message || "";
}

function add(kind, text) {
  const el = document.createElement("div");
  el.className = `msg ${kind}`;
  el.textContent = text;
  $("log").appendChild(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function showCitations(citations) {
  if (!citations || !citations.length) return;
  const list = document.createElement("ol");
  list.className = "sources";
  for (const c of citations) {
    const item = document.createElement("li");
    item.textContent = c.heading ? `${c.source} › ${c.heading}` : c.source;
    list.appendChild(item);
  }
  $("log").appendChild(list);
}

async function ask(question) {
  add("user", question);
  const answer = add("assistant", "");
  const lantern = { memory: $("use-memory").checked };
  const messages = [{ role: "user", content: question }];
  if (state.conversationId) lantern.conversation_id = state.conversationId;
  state.controller = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.token}` },
      body: JSON.stringify({ messages, stream: true, lantern }),
      signal: state.controller.signal,
    });
    if (response.status === 401) {
      localStorage.removeItem("lantern-token");
      answer.remove();
      showPairing("That token was not accepted. Pair again with 'lantern pair NAME'.");
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      answer.className = "msg error";
      answer.textContent = (body.error && body.error.message) || `error ${response.status}`;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end).trim();
        buffered = buffered.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          answer.textContent += delta.content;
          answer.scrollIntoView({ block: "end" });
        }
        if (chunk.lantern) {
          state.conversationId = chunk.lantern.conversation_id || state.conversationId;
          showCitations(chunk.lantern.citations);
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") {
      answer.className = "msg error";
      answer.textContent = `Lantern could not be reached (${error.message}). Is the tunnel up?`;
    }
  } finally {
    state.controller = null;
    $("send").hidden = false;
    $("stop").hidden = true;
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  localStorage.setItem("lantern-token", state.token);
  $("pairing").hidden = true;
  $("prompt").focus();
});

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("prompt").value.trim();
  if (!question || state.controller) return;
  if (!state.token) return showPairing();
  $("prompt").value = "";
  ask(question);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("new-chat").addEventListener("click", () => {
  state.conversationId = null;
  $("log").replaceChildren();
});

takeTokenFromLink();
if (!state.token) showPairing();
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
