// Search: by text, by a dropped or chosen example file, by a stored item or a moment
// of one; and the result cards with their players (moments.js: their matching stretches).

import { request, upload } from "./api.js";
import { momentParts, spanLabel } from "./moments.js";
import { $, clearError, dropTarget, hideKeepingFocus, setStatus, showError } from "./page.js";
import { formatBytes, h, itemLabel, kindLabel, modelLabel, resultCard } from "./render.js";

const state = {
  controller: null, // aborts the previous search when a new one starts
  xhr: null, // the upload of a query example, if any
  again: null, // runs the search shown again, with the current target, k and grouping
  shown: null, // {again, url, status} of the results on screen: what a Cancel goes back to
};

/** The address without a text query: a reload must not run an older text search. */
function forgetSharedQuery() {
  if (location.search) history.replaceState(null, "", location.pathname);
}

function searchParams() {
  const asked = parseInt($("search-k").value, 10);
  const k = Number.isNaN(asked) ? 10 : Math.max(1, Math.min(1000, asked)); // 0 is 1, not 10
  $("search-k").value = String(k);
  // group: each item once, at its best stretch; off, every matching stretch on its own
  return { target: $("search-target").value, k, group: $("search-group").checked };
}

/** "video" or "videos", "sound" or "sounds": the target's name for n results. */
function targetName(n, target) {
  if (n === 1) return kindLabel(target);
  const option = [...$("search-target").options].find((o) => o.value === target);
  return option ? option.textContent : target;
}

/**
 * Run one search and show its results.
 * @param {{description: string, target: string, highlight?: string}} ask what was asked:
 *   for the status line, the kind of result, and words to mark in transcripts
 * @param {(signal: AbortSignal) => Promise<any>} run returns the results body
 */
async function runSearch(ask, run) {
  if (state.controller) state.controller.abort();
  if (state.xhr) state.xhr.abort();
  const controller = new AbortController();
  state.controller = controller;
  const list = $("results");
  // Asked from a card ("Find similar"): the cards are replaced, the button with them.
  const askedFromList = list.contains(document.activeElement);
  clearError($("results-error"));
  $("search-cancel").hidden = false;
  list.setAttribute("aria-busy", "true");
  list.classList.add("stale");
  setStatus($("results-status"), `Searching ${ask.description}…`, true);
  try {
    const body = await run(controller.signal);
    if (controller.signal.aborted) return;
    showResults(body, ask);
    state.shown = { again: state.again, url: location.href,
                    status: $("results-status").textContent };
    // The keyboard's place: the line that says what was found, not the page's top.
    if (askedFromList) $("results-status").focus();
  } catch (err) {
    if (controller.signal.aborted || err.name === "AbortError" || err.code === "cancelled") {
      return;
    }
    list.replaceChildren();
    state.shown = null;
    setStatus($("results-status"), "");
    showError($("results-error"), err);
    if (askedFromList) $("results-status").focus(); // its button went with the cards
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      hideKeepingFocus($("search-cancel"), $("results-status"));
      list.removeAttribute("aria-busy");
      list.classList.remove("stale");
    }
  }
}

function showResults(body, { description, target, highlight = "" }) {
  const list = $("results");
  const results = body.results || [];
  const took = typeof body.took_ms === "number" ? `${body.took_ms.toFixed(1)} ms` : "?";
  const facts = `${took} · space ${body.space} · ${modelLabel(body.model_version)}`;
  setStatus($("results-status"),
    `${results.length} ${targetName(results.length, target)} ${description} · ${facts}`);
  if (!results.length) {
    list.replaceChildren(
      h("li", { class: "empty" },
        h("p", {}, `No ${targetName(0, target)} found ${description}.`),
        h("p", { class: "hint" },
          "Try other words or another kind of result. An empty collection finds nothing: " +
          "add clips below.")),
    );
    return;
  }
  const moments = (result, media) =>
    momentParts(result, media, { query: highlight, onMoment: findMoment });
  list.replaceChildren(
    ...results.map((r, i) =>
      resultCard(r, i + 1, { query: highlight, onSimilar: findSimilar, moments })),
  );
}

export function searchText(text) {
  const { target, k, group } = searchParams();
  // Again only while the box still holds it: a text typed since is not searched yet.
  state.again = () => {
    if ($("search-text").value.trim() === text) searchText(text);
  };
  const url = new URL(location.href);
  const shared = { q: text, target, k: String(k), ...(group ? {} : { group: "false" }) };
  url.search = new URLSearchParams(shared).toString();
  history.replaceState(null, "", url);
  return runSearch(
    { description: `for “${text}”`, target, highlight: text },
    (signal) => request("POST", "/v1/search", {
      json: { query: { text }, target, k, group }, signal,
    }),
  );
}

/** Search with a stored item, or with `start`..`end` seconds of it (a moment). */
function searchItem(item, description, start, end) {
  const { target, k, group } = searchParams();
  state.again = () => searchItem(item, description, start, end);
  forgetSharedQuery();
  const query = { item_id: item.id };
  if (start !== undefined) Object.assign(query, { start_s: start, end_s: end });
  $("search").scrollIntoView({ behavior: "smooth", block: "start" });
  return runSearch({ description, target }, (signal) =>
    request("POST", "/v1/search", { json: { query, target, k, group }, signal }));
}

export function findSimilar(item) {
  return searchItem(item, `like ${itemLabel(item)}`);
}

/** "Find similar from here": the stretch of a sound or video from the player's time. */
export function findMoment(item, start, end) {
  const what = `moment ${spanLabel(start, end)} of ${itemLabel(item)}`;
  return searchItem(item, `like ${what}`, start, end);
}

function searchByExample(file) {
  const { target, k, group } = searchParams();
  state.again = () => searchByExample(file);
  forgetSharedQuery();
  const form = new FormData();
  form.append("file", file);
  form.append("target", target);
  form.append("k", String(k));
  form.append("group", String(group));
  const description = `like the example “${file.name}”`;
  return runSearch({ description, target }, () => {
    const job = upload("/v1/search/upload", form, {
      onProgress: (sent, total) => setStatus($("results-status"),
        `Sending the example: ${Math.round((100 * sent) / total)}% of ${formatBytes(total)}…`,
        true),
      onSent: () => setStatus($("results-status"), `Searching ${description}…`, true),
    });
    state.xhr = job;
    return job.promise.then((res) => res.body).finally(() => {
      if (state.xhr === job) state.xhr = null;
    });
  });
}

/** Stop the search under way (an example still being sent, a slow answer): the results
 * shown before it stay, and so does what changing the target or a reload runs again
 * (it was the cancelled search: a large example was sent again). */
function cancelSearch() {
  if (!state.controller) return;
  state.controller.abort();
  if (state.xhr) state.xhr.abort();
  const shown = state.shown;
  state.again = shown ? shown.again : null;
  history.replaceState(null, "", shown ? shown.url : location.pathname);
  setStatus($("results-status"),
    shown ? `Search cancelled. Shown: ${shown.status}` : "Search cancelled.");
  $("results-status").focus(); // the Cancel button is about to go
}

/** Attach the search section's handlers; run the search a shared link asks for. */
export function setupSearch() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("search-text").value.trim();
    if (!text) {
      clearError($("results-error"));
      setStatus($("results-status"),
        "Type a few words to search, or drop an example clip, sound or picture below.");
      $("search-text").focus();
      return;
    }
    searchText(text);
  });

  // Changing the target, k or grouping re-runs the search shown (by text, by an item
  // or a moment of one, by an example file): that is what people expect.
  for (const id of ["search-target", "search-k", "search-group"]) {
    $(id).addEventListener("change", () => {
      if (state.again) state.again();
    });
  }

  $("search-cancel").addEventListener("click", cancelSearch);

  $("example-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) searchByExample(file);
    e.target.value = ""; // choosing the same file again searches again
  });
  // The whole search panel takes a dropped query example.
  dropTarget($("search"), searchByExample);

  // One player at a time: starting one pauses the others ("play" does not bubble).
  document.addEventListener("play", (e) => {
    for (const el of document.querySelectorAll("audio, video")) {
      if (el !== e.target && !el.paused) el.pause();
    }
  }, true);

  // A shared link like /?q=drums&target=audio&k=5 runs its search.
  const params = new URLSearchParams(location.search);
  const target = params.get("target");
  if (target && [...$("search-target").options].some((o) => o.value === target)) {
    $("search-target").value = target;
  }
  if (params.get("k")) $("search-k").value = params.get("k");
  if (params.get("group") === "false") $("search-group").checked = false;
  const q = params.get("q");
  if (q) {
    $("search-text").value = q;
    searchText(q);
  } else {
    setStatus($("results-status"),
      "Describe a scene or a sound, pick what to find, and press Search.");
  }
}
