// Talking to Lantern: the device token, JSON requests, the chat stream, the health probe.

const TOKEN = "lantern-token";

export class Unreachable extends Error {} // no answer at all: the tunnel or the server is down
export class NotPaired extends Error {} // 401: no token, or a wrong or revoked one
export class ApiError extends Error {
  constructor(status, message, code, retryAfter) {
    super(message);
    Object.assign(this, { status, code, retryAfter });
  }
}

export const token = {
  get: () => localStorage.getItem(TOKEN),
  set: (value) => localStorage.setItem(TOKEN, value),
  clear: () => localStorage.removeItem(TOKEN),
};

/** A request to the API: parsed JSON (null for 204), or the Response itself with `raw`. */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Unreachable(error.message);
  }
  if (response.status === 401) throw new NotPaired();
  if (!response.ok) {
    const error = (await response.json().catch(() => ({}))).error || {};
    const retry = parseFloat(response.headers.get("Retry-After") || "") || 0;
    // A tunnel whose far end is down answers 502/504 itself: that is "unreachable", not an error.
    if ((response.status === 502 || response.status === 504) && !error.message) throw new Unreachable(`HTTP ${response.status}`);
    throw new ApiError(response.status, error.message || `Lantern answered ${response.status}`, error.code, retry);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** The chunks of a server-sent event stream, parsed. */
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 2);
      if (!event.startsWith("data:")) continue;
      const data = event.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

/** True when Lantern answers its health probe (no token needed) within a few seconds. */
export async function reachable() {
  const control = new AbortController();
  const timer = setTimeout(() => control.abort(), 4000);
  try {
    const response = await fetch("/v1/lantern/health", { cache: "no-store", signal: control.signal });
    return response.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
