// Talking to the REST API v1 (docs/api.md): JSON requests, uploads with progress,
// the API key, and errors turned into sentences a person understands.

const KEY_STORAGE = "mmv.apiKey";

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code the API's snake_case error code
   * @param {string} message a sentence for the user
   */
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

// The key this page uses; localStorage keeps a copy for the next visit where it can
// (storage can be disabled: private mode, blocked cookies; the key then lasts for this
// page only, but it does last).
let apiKey = null;

export function getApiKey() {
  if (apiKey === null) {
    try {
      apiKey = localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      apiKey = "";
    }
  }
  return apiKey;
}

// A key saved or cleared in another tab of this page holds here too; `onKeyFromAnotherTab`
// lets the page show it (its label, the lists it may now read, links signed for the old).
const keyListeners = [];
export function onKeyFromAnotherTab(listener) {
  keyListeners.push(listener);
}
addEventListener("storage", (e) => {
  if (e.key !== KEY_STORAGE) return;
  apiKey = e.newValue || "";
  for (const listener of keyListeners) listener();
});

export function setApiKey(key) {
  apiKey = key || "";
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled: kept in memory above */
  }
}

function authHeaders() {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Explanations for the statuses where the API's own message is not the whole story.
function explain(status, code, message) {
  if (status === 401) {
    return getApiKey()
      ? "The server did not accept the API key. Check it under “API key” at the top."
      : "This server needs an API key. Enter one under “API key” at the top.";
  }
  if (status === 403) {
    return message
      ? `Your API key may not do this: ${message.replace(/\.$/, "")}.`
      : "Your API key may not do this: a read key may list and search; uploads and " +
        "deletes need a write key.";
  }
  if (status === 413 || code === "too_large") return message || "The file is too large.";
  return message;
}

/** Build an ApiError from a response body in the shape {"error": {"code", "message"}}. */
function errorFrom(status, statusText, bodyText) {
  let code = "http_" + status;
  let message = "";
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || "";
    } else if (body && typeof body.detail === "string") {
      message = body.detail; // a framework error that escaped the API's error shape
    }
  } catch {
    /* not JSON, e.g. a proxy's HTML page */
  }
  if (!message) message = `The server answered ${status} ${statusText || ""}`.trim() + ".";
  return new ApiError(status, code, explain(status, code, message));
}

const unreachable = () =>
  new ApiError(0, "unreachable", "Could not reach the server. Is it running?");

/**
 * One JSON request. Returns the parsed body, or null for 204.
 * @param {string} method
 * @param {string} path e.g. "/v1/search"
 * @param {{json?: any, query?: Record<string, any>, signal?: AbortSignal}} [opts]
 */
export async function request(method, path, opts = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(opts.query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json", ...authHeaders() };
  let body;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  }
  let res;
  try {
    res = await fetch(url, { method, headers, body, signal: opts.signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw unreachable();
  }
  if (res.status === 204) return null;
  const text = await res.text();
  if (!res.ok) throw errorFrom(res.status, res.statusText, text);
  return text ? JSON.parse(text) : null;
}

/**
 * A multipart POST through XMLHttpRequest, because fetch reports no upload progress.
 * @param {string} path
 * @param {FormData} form
 * @param {{query?: Record<string, any>, onProgress?: (sent: number, total: number) => void,
 *          onSent?: () => void}} [opts]
 * @returns {{promise: Promise<{status: number, body: any}>, abort: () => void}}
 */
export function upload(path, form, opts = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(opts.query || {})) url.searchParams.set(k, String(v));
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable && opts.onProgress) opts.onProgress(e.loaded, e.total);
    });
    // The bytes are all sent; the server is now decoding and embedding.
    xhr.upload.addEventListener("load", () => opts.onSent && opts.onSent());
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        let body = null;
        try {
          body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
        } catch {
          reject(new ApiError(xhr.status, "bad_response", "The server sent an unreadable answer."));
          return;
        }
        resolve({ status: xhr.status, body });
      } else {
        reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => reject(unreachable()));
    xhr.addEventListener("abort", () =>
      reject(new ApiError(0, "cancelled", "The upload was cancelled.")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/** A friendly sentence for any error thrown by request() or upload(). */
export function describeError(err) {
  if (err instanceof ApiError) return err.message;
  return `Something went wrong in the page: ${err && err.message ? err.message : err}`;
}

// Media elements cannot send an Authorization header. Without a key the page points
// them at media_url directly; with a key it asks for a signed link to the item's media
// (GET …/media-link, good for hours), which a <video> streams with Range requests like
// any URL: no whole file downloaded before it plays, nothing held in the page's memory.
const links = new Map(); // media_url -> Promise<{url, expiresAt}>, one request per item
const RENEW_BEFORE_MS = 10 * 60 * 1000; // a link this close to its end is asked again

/** Resolve a media_url to something a <video>/<audio>/<img> src can load. */
export async function mediaSource(mediaUrl) {
  if (!getApiKey()) return mediaUrl;
  const cached = links.get(mediaUrl);
  if (cached) {
    const link = await cached.catch(() => null);
    if (link && link.expiresAt - Date.now() > RENEW_BEFORE_MS) return link.url;
  }
  const pending = request("GET", `${mediaUrl}-link`).then(
    (body) => ({ url: body.url, expiresAt: Date.parse(body.expires_at) }));
  links.set(mediaUrl, pending);
  try {
    return (await pending).url;
  } catch (err) {
    if (links.get(mediaUrl) === pending) links.delete(mediaUrl);
    throw err;
  }
}

/** Forget the links to media, e.g. when the key changes or an item is deleted. */
export function forgetMedia(mediaUrl) {
  if (mediaUrl === undefined) links.clear();
  else links.delete(mediaUrl);
}
