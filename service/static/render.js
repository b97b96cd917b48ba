// Building the result cards and item rows. Everything from the server goes in as
// text nodes, never as HTML.

import { describeError, forgetMedia, getApiKey, mediaSource } from "./api.js";

/**
 * Create an element: h("p", {class: "x", onclick: fn}, "text", childNode, ...).
 * Attributes whose value is null, undefined or false are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "style") {
      // Through the CSSOM: a style attribute is inline style, which the page's
      // Content-Security-Policy refuses.
      Object.assign(el.style, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const KIND_LABEL = { video: "video", audio: "sound", image: "picture", text: "text" };
const KIND_GLYPH = { video: "▶", audio: "♪", image: "◩", text: "¶" };

export const kindLabel = (kind) => KIND_LABEL[kind] || kind;

/** An item in a sentence: its kind and the name it was uploaded under, else its id. */
export const itemLabel = (item) =>
  `${kindLabel(item.kind)} ${item.filename ? `“${item.filename}”` : item.id}`;

/** "model tiny-3f2a", without doubling the word when the version already says it. */
export const modelLabel = (version) =>
  /^model\b/i.test(version) ? version : `model ${version}`;

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return null;
  // Rounded first, then split: 59.97 s is "1 min 00 s", not "60.0 s"; 119.6 s is
  // "2 min 00 s", not "1 min 60 s"; an hour or more also says its hours.
  if (Math.round(seconds * 10) < 600) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const hours = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return hours ? `${hours} h ${String(m).padStart(2, "0")} min ${s} s` : `${m} min ${s} s`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** An API time (RFC 3339, UTC) in the reader's locale and time zone. */
export function formatDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** Plain text of a transcript that may have been stored as WebVTT. */
export function transcriptText(transcript) {
  if (!transcript) return "";
  if (!/^\uFEFF?WEBVTT/.test(transcript)) return transcript.trim();
  const lines = transcript.split(/\r?\n/);
  const kept = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.includes("-->") || /^(NOTE|STYLE|REGION)\b/.test(line)) continue;
    if (/^\d+$/.test(line) && (lines[i + 1] || "").includes("-->")) continue; // cue number
    kept.push(line.replace(/<[^>]+>/g, "")); // voice/class tags inside cues
  }
  return kept.join(" ");
}

// Words too common to be worth marking in a snippet.
const UNMARKED = new Set(
  "the and but for with while from into onto over under that this then than are was were"
    .split(" "),
);

/**
 * A snippet of `text` around the first word of `query`, with the query's words marked.
 * @returns {Node[]}
 */
export function snippet(text, query, maxChars = 220) {
  const words = (query || "")
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length >= 3 && !UNMARKED.has(w));
  let start = 0;
  if (text.length > maxChars && words.length) {
    const lower = text.toLowerCase();
    const hit = Math.min(...words.map((w) => lower.indexOf(w)).filter((i) => i >= 0));
    if (Number.isFinite(hit)) start = Math.max(0, hit - Math.floor(maxChars / 3));
  }
  let part = text.slice(start, start + maxChars);
  if (start > 0) part = "…" + part;
  if (start + maxChars < text.length) part += "…";
  if (!words.length) return [part];
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(${escaped.join("|")})`, "giu");
  return part.split(re).map((piece, i) => (i % 2 ? h("mark", {}, piece) : piece));
}

/** An item's metadata; with `onFilter`, each value is a button that shows the items
 * sharing it (the collection's filter). */
function metadataList(metadata, onFilter) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return null;
  const shown = (v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  // A whole number beyond 2^53 reached this page rounded (JSON numbers are doubles
  // here): shown as such, and not offered as a filter, which would match another value.
  const rounded = (v) => typeof v === "number" && Number.isInteger(v) && !Number.isSafeInteger(v);
  return h(
    "dl",
    { class: "meta" },
    entries.flatMap(([k, v]) => [
      h("dt", {}, k),
      h("dd", {}, rounded(v)
        ? h("span", { class: "rounded", title: "rounded by the browser; the API has the exact number" }, `≈${shown(v)}`)
        : onFilter
        ? h("button", {
          type: "button", class: "meta-filter", title: `Show only the items with ${k} = ${shown(v)}`,
          onclick: () => onFilter(k, v),
        }, shown(v) || "(empty)")
        : shown(v)),
    ]),
  );
}

const RENEW_AFTER_MS = 60_000; // a player's link renewed at most once a minute

/** Point a media element at an item's media (a signed link when an API key is set). */
function attachSource(el, mediaUrl, onError) {
  if (!getApiKey()) {
    el.src = mediaUrl;
    return;
  }
  mediaSource(mediaUrl)
    .then((src) => {
      el.src = src;
    })
    .catch((err) => onError(describeError(err)));
}

// Players, pictures and signed links are asked for when they come near the screen: a
// page of 1,000 results would otherwise ask at once for 1,000 links and media heads.
const waiting = new Map(); // element -> {run: [callbacks], since: ms}
const nearScreen = typeof IntersectionObserver === "function"
  ? new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) wake(entry.target);
  }, { rootMargin: "1000px 0px" })
  : null;
const SWEEP_ABOVE = 2000; // elements waiting before those of past renders are let go

/** Run `fn` once `el` comes near the screen (at once where that cannot be watched). */
export function whenNear(el, fn) {
  if (!nearScreen) {
    fn();
    return;
  }
  const entry = waiting.get(el);
  if (entry) {
    entry.run.push(fn);
    return;
  }
  waiting.set(el, { run: [fn], since: Date.now() });
  nearScreen.observe(el);
  if (waiting.size > SWEEP_ABOVE) {
    // Cards of earlier searches, replaced before they were seen: no longer watched.
    for (const [old, { since }] of waiting) {
      if (!old.isConnected && Date.now() - since > 10_000) {
        waiting.delete(old);
        nearScreen.unobserve(old);
      }
    }
  }
}

/** Run now what waits for `el` to come near the screen (a player asked to play). */
export function wake(el) {
  const entry = waiting.get(el);
  if (!entry) return;
  waiting.delete(el);
  nearScreen.unobserve(el);
  for (const fn of entry.run) fn();
}

/** The player, picture or text that shows an item. */
export function mediaFor(item, label) {
  const box = h("div", { class: `media media-${item.kind}` });
  const fail = (msg) => box.replaceChildren(h("p", { class: "media-error" }, msg));
  if (item.kind === "text") {
    box.append(h("blockquote", { class: "text-item" }, item.text || transcriptText(item.transcript)));
    return box;
  }
  if (!item.media_url) {
    box.append(h("p", { class: "media-missing" }, "No media stored for this item."));
    return box;
  }
  let el;
  if (item.kind === "video") {
    el = h("video", { controls: true, playsinline: true, preload: "metadata", "aria-label": label });
  } else if (item.kind === "audio") {
    el = h("audio", { controls: true, preload: "metadata", "aria-label": label });
  } else {
    el = h("img", { alt: label, loading: "lazy", decoding: "async" });
  }
  let renewedAt = -Infinity;
  el.addEventListener("error", () => {
    // An <img>/<video> error event has no message; say what can be checked.
    if (!el.getAttribute("src")) return;
    if (getApiKey() && Date.now() - renewedAt > RENEW_AFTER_MS) {
      // A signed link past its hours (a page left open, a day or more): a new link,
      // from where it was; a new link that fails at once is not the link's fault.
      renewedAt = Date.now();
      const at = el.currentTime || 0;
      forgetMedia(item.media_url);
      if (at) el.addEventListener("loadedmetadata", () => { el.currentTime = at; }, { once: true });
      attachSource(el, item.media_url, fail);
      return;
    }
    fail(`The ${kindLabel(item.kind)} could not be loaded or played by this browser.`);
  });
  whenNear(el, () => attachSource(el, item.media_url, fail));
  box.append(el);
  return box;
}

function facts(item) {
  const parts = [];
  const dur = formatDuration(item.duration_s);
  if (dur) parts.push(dur);
  if (item.width && item.height) parts.push(`${item.width}×${item.height}`);
  if (item.size_bytes) parts.push(formatBytes(item.size_bytes));
  if (item.modalities && item.modalities.length) {
    parts.push(`searchable by ${item.modalities.map(kindLabel).join(" + ")}`);
  }
  if (item.transcript_source === "asr") parts.push("transcript by speech recognition");
  if (item.created_at) parts.push(`added ${formatDate(item.created_at)}`);
  return parts.join(" · ");
}

/** The name the file was uploaded under, where one was sent. */
function fileName(item) {
  if (!item.filename) return null;
  return h("span", { class: "filename", title: item.filename }, item.filename);
}

function statusBadge(item) {
  if (!item.status || item.status === "ready") return null;
  return h("span", { class: `badge status-${item.status}` }, item.status);
}

/**
 * One search result.
 * @param {{item: any, score: number, segment?: {start_s: number, end_s: number} | null}} result
 * @param {number} rank 1-based
 * @param {{query?: string, onSimilar: (item: any) => void,
 *          moments?: (result: any, media: HTMLElement) =>
 *            {panel: HTMLElement | null, actions: HTMLElement[], cueShown: boolean}}} opts
 *   `moments` (moments.js) adds the timeline of a long item's matching stretches
 */
export function resultCard(result, rank, opts) {
  const { item, score, segment } = result;
  const text = (item.kind === "text" && item.text) || transcriptText(item.transcript);
  const named = item.filename || (text ? text.slice(0, 60) : "");
  const label = `${kindLabel(item.kind)} result ${rank}` + (named ? `: ${named}` : "");
  const scorePct = Math.max(0, Math.min(1, (score + 1) / 2)); // cosine in [-1, 1]
  const media = mediaFor(item, label);
  const moment = opts.moments ? opts.moments(result, media) : null;
  const where = segment ? { startS: segment.start_s, endS: segment.end_s } : {};
  return h(
    "li",
    { class: "card", dataset: { itemId: item.id, kind: item.kind, ...where } },
    media,
    moment && moment.panel,
    h(
      "div",
      { class: "card-body" },
      h(
        "div",
        { class: "card-head" },
        h("span", { class: "rank" }, `#${rank}`),
        h("span", { class: `badge kind-${item.kind}` }, kindLabel(item.kind)),
        statusBadge(item),
        fileName(item),
        h(
          "span",
          { class: "score", title: "cosine similarity in the shared space" },
          "score ",
          h("strong", {}, score.toFixed(3)),
        ),
      ),
      h("div", { class: "score-bar", "aria-hidden": "true" },
        h("span", { style: { width: `${(scorePct * 100).toFixed(1)}%` } })),
      item.kind !== "text" && text && !(moment && moment.cueShown)
        ? h("p", { class: "transcript" }, snippet(text, opts.query))
        : null,
      metadataList(item.metadata),
      h("p", { class: "facts" }, facts(item)),
      h(
        "div",
        { class: "card-actions" },
        h("button", {
          type: "button", class: "secondary small",
          "aria-label": `Find similar to ${itemLabel(item)}`,
          onclick: () => opts.onSimilar(item),
        }, "Find similar"),
        moment && moment.actions,
        item.media_url ? openFileLink(item, segment, media) : null,
      ),
    ),
  );
}

/** "Open file" in a new tab, at the matching stretch (a media fragment, which the
 * browser's own player honours); with a key, through a signed link (the plain path
 * needs a header a new tab does not send), shown once that link is known. */
function openFileLink(item, segment, near) {
  const fragment = segment ? `#t=${segment.start_s},${segment.end_s}` : "";
  const link = h("a", {
    href: item.media_url + fragment, target: "_blank", rel: "noopener", class: "small",
    "aria-label": `Open file: ${itemLabel(item)}, in a new tab`,
  }, "Open file");
  if (getApiKey()) {
    link.hidden = true;
    whenNear(near, () => mediaSource(item.media_url)
      .then((src) => {
        link.href = src + fragment;
        link.hidden = false;
      })
      .catch(() => link.remove()));
  }
  return link;
}

function thumbnail(item) {
  if (item.kind === "image" && item.media_url && item.status !== "processing") {
    const img = h("img", { alt: "", loading: "lazy", decoding: "async" });
    whenNear(img, () => attachSource(img, item.media_url, () => img.remove()));
    return h("div", { class: `thumb kind-${item.kind}` }, img);
  }
  return h("div", { class: `thumb kind-${item.kind}`, "aria-hidden": "true" },
    KIND_GLYPH[item.kind] || "?");
}

/**
 * One row of the collection list.
 * @param {any} item
 * @param {{onSimilar: (item: any) => void, onDelete: (item: any, row: HTMLElement) => void,
 *          onFilter?: (key: string, value: any) => void}} opts
 */
export function itemRow(item, opts) {
  const text = item.text || transcriptText(item.transcript);
  const row = h(
    "li",
    // tabindex -1: focus lands on a row when the control it came from goes away
    { class: "item-row", tabindex: "-1", dataset: { itemId: item.id, kind: item.kind } },
    thumbnail(item),
    h(
      "div",
      { class: "item-main" },
      h(
        "div",
        { class: "item-head" },
        h("span", { class: `badge kind-${item.kind}` }, kindLabel(item.kind)),
        statusBadge(item),
        fileName(item),
        h("code", { class: "item-id", title: "item id" }, item.id),
      ),
      text ? h("p", { class: "transcript" }, snippet(text, "", 140)) : null,
      item.error ? h("p", { class: "media-error" }, item.error) : null,
      metadataList(item.metadata, opts.onFilter),
      h("p", { class: "facts" }, facts(item)),
    ),
    h("div", { class: "item-actions" }),
  );
  const actions = row.querySelector(".item-actions");
  actions.append(
    h("button", {
      type: "button", class: "secondary small",
      disabled: item.status !== "ready",
      "aria-label": `Find similar to ${itemLabel(item)}`,
      onclick: () => opts.onSimilar(item),
    }, "Find similar"),
    h("button", {
      type: "button", class: "danger small",
      "aria-label": `Delete ${itemLabel(item)}`,
      onclick: () => opts.onDelete(item, row),
    }, "Delete"),
  );
  return row;
}
