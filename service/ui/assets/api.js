// The public /v1 API, as the dashboard uses it: JSON requests with the keys the user typed,
// the API's own error message on failure, and a job's server-sent events read with fetch
// (EventSource cannot send the X-API-Key header that a read key needs).

const API = new URL("../v1/", document.baseURI); // the page is /ui/, the API /v1/
const STORE = { admin: "zscl.adminKey", read: "zscl.readKey" };
export const KEY_HEADER = "X-API-Key";
export const VERSION_HEADER = "X-Model-Version";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Keys live in this tab's sessionStorage only: never in a URL, a cookie or a log line.
export const keys = {
  get: (kind) => sessionStorage.getItem(STORE[kind]),
  set: (kind, value) => sessionStorage.setItem(STORE[kind], value),
  forget: (kind) => sessionStorage.removeItem(STORE[kind]),
};

function authHeaders(admin) {
  // the admin key opens every route; a read needs only the read (inference) key
  const key = admin ? keys.get("admin") : keys.get("admin") || keys.get("read");
  return key ? { [KEY_HEADER]: key } : {};
}

/** The API's message for a failed response: its "detail", verbatim. */
export async function errorMessage(response) {
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return text || `${response.status} ${response.statusText}`;
  }
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's own validation errors (a bad query parameter): "where: what"
    return detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  }
  return JSON.stringify(detail ?? body);
}

/**
 * One API call. `admin` sends the admin key; `raw` returns the Response itself.
 * Throws ApiError(status, the API's message) unless the response is a 2xx.
 */
export async function api(path, { method = "GET", body, headers = {}, admin = false,
  raw = false, signal } = {}) {
  let payload = body;
  const sent = { ...authHeaders(admin), ...headers };
  if (body !== undefined && !(body instanceof Blob) && !(body instanceof FormData)) {
    payload = JSON.stringify(body);
    sent["Content-Type"] = "application/json";
  }
  const response = await fetch(new URL(path, API), { method, body: payload, headers: sent, signal });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/**
 * An object URL of an image the API serves behind a key (an <img src> cannot send the
 * X-API-Key header). The caller revokes it once the image has loaded.
 */
export async function imageURL(path, signal) {
  const response = await api(path, { raw: true, signal });
  return URL.createObjectURL(await response.blob());
}

/** The service's readiness (open, no key): {status, model_version, detail}. */
export async function readiness() {
  const response = await fetch(new URL("../readyz", API));
  return response.json();
}

/**
 * Follow a job's events (GET /v1/jobs/{id}/events/stream) from event id `after`, calling
 * onEvent({id, kind, data}) for each; resolves with the final state on the "end" event.
 * Reconnects from the last id seen if the connection drops; stops when `signal` aborts.
 */
export async function followJob(jobId, after, onEvent, signal) {
  let cursor = after;
  for (;;) {
    try {
      const response = await api(`jobs/${jobId}/events/stream?after=${cursor}`,
        { raw: true, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.kind === "end") return event.data.state;
          if (event.id !== null) cursor = event.id;
          onEvent(event);
        }
      }
    } catch (error) {
      if (signal.aborted || (error instanceof ApiError && error.status < 500)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000)); // dropped: resume from cursor
    if (signal.aborted) throw new DOMException("stopped", "AbortError");
  }
}

function parseEvent(block) {
  const event = { id: null, kind: "message", data: {} };
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = Number(value);
    else if (field === "event") event.kind = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) event.data = JSON.parse(data.join("\n"));
  return event;
}
