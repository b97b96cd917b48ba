// The collection: stored items page by page ("load more"), a kind filter, a metadata
// filter (a value clicked in an item: the items sharing it), delete.

import { ApiError, forgetMedia, request } from "./api.js";
import { $, clearError, setStatus, showError } from "./page.js";
import { itemLabel, itemRow, kindLabel } from "./render.js";
import { findSimilar } from "./search.js";

export const PAGE_SIZE = 20;

const state = { cursor: null, loading: null, resetting: false, shown: 0, filter: null };

/** Show only the items whose metadata has `key` = `value` (null: all of them). */
export function filterItems(key, value) {
  state.filter = key === null ? null : { [key]: value };
  $("items-filter").hidden = !state.filter;
  $("items-filter-text").textContent = state.filter ? `${key} = ${JSON.stringify(value)}` : "";
  // The value clicked goes with the rows it was in, "Show all" with the filter: the
  // keyboard's place moves to what comes next rather than to the page's top.
  if (state.filter) $("items-filter-clear").focus();
  else if (!document.activeElement || document.activeElement === document.body ||
    document.activeElement === $("items-filter-clear")) $("items-title").focus();
  loadItems(true);
}

/** Load the first page (`reset`) or the next one. */
export async function loadItems(reset) {
  const list = $("item-list");
  const kind = $("items-kind").value;
  if (reset) {
    if (state.loading) state.loading.abort();
    state.cursor = null;
    state.shown = 0;
  } else if (state.loading) {
    return; // "load more" pressed twice
  }
  const controller = new AbortController();
  state.loading = controller;
  state.resetting = reset;
  clearError($("items-error"));
  setStatus($("items-status"), "Loading…", true);
  const fromMore = document.activeElement === $("items-more");
  $("items-more").disabled = true;
  try {
    const body = await request("GET", "/v1/items", {
      query: {
        kind, limit: PAGE_SIZE, cursor: reset ? null : state.cursor,
        filter: state.filter ? JSON.stringify(state.filter) : null,
      },
      signal: controller.signal,
    });
    const rows = body.items.map(rowOf);
    if (reset) list.replaceChildren(...rows);
    else list.append(...rows);
    state.shown += rows.length;
    state.cursor = body.next_cursor;
    $("items-more").hidden = !state.cursor;
    // The last page: its button goes, and the keyboard goes on from the first row it brought.
    if (fromMore && !state.cursor) (rows[0] || $("items-title")).focus();
    showItemCount();
  } catch (err) {
    if (err.name === "AbortError") return;
    if (reset) {
      // The rows shown are another view's now (another kind, filter): not kept under
      // this one, and no "load more" that would append this view's first page to them.
      list.replaceChildren();
      $("items-more").hidden = true;
    }
    setStatus($("items-status"), "");
    showError($("items-error"), err);
  } finally {
    if (state.loading === controller) state.loading = state.resetting = null;
    $("items-more").disabled = false;
  }
}

/** An upload's outcome in the list without reloading it (a reload drops the pages
 * loaded below): a new item goes on top when the view shown (kind, filter) holds it;
 * a listed one is shown afresh (processing, then ready or failed). */
export function showItem(item, isNew) {
  // A first page on its way may have been asked for before this item existed: asked again.
  if (state.resetting) return loadItems(true);
  const list = $("item-list");
  const old = list.querySelector(`li[data-item-id="${CSS.escape(item.id)}"]`);
  const kind = $("items-kind").value;
  const belongs = (!kind || item.kind === kind) && Object.entries(state.filter || {})
    .every(([k, v]) => (item.metadata || {})[k] === v);
  // A row rebuilt or removed under the keyboard (an upload's processing ended) keeps
  // it: the same button of the new row, or the next row, not the top of the page.
  const focused = old && old.contains(document.activeElement) ? document.activeElement : null;
  if (old && belongs) {
    const row = rowOf(item);
    old.replaceWith(row);
    if (focused) {
      const same = [...row.querySelectorAll("button")]
        .find((b) => b.textContent === focused.textContent && !b.disabled);
      (same || $("items-status")).focus();
    }
  } else if (old) {
    const next = old.nextElementSibling;
    old.remove();
    state.shown = Math.max(0, state.shown - 1);
    showItemCount();
    if (focused) ((next && next.querySelector("button")) || $("items-status")).focus();
  } else if (isNew && belongs) {
    list.prepend(rowOf(item));
    state.shown += 1;
    showItemCount();
  }
}

/** An item gone from the server (deleted while its upload was watched): its row goes. */
export function dropItem(id) {
  const row = $("item-list").querySelector(`li[data-item-id="${CSS.escape(id)}"]`);
  if (!row) return;
  row.remove();
  state.shown = Math.max(0, state.shown - 1);
  showItemCount();
}

function rowOf(item) {
  return itemRow(item, { onSimilar: findSimilar, onDelete: deleteItem, onFilter: filterItems });
}

function showItemCount(prefix = "") {
  const kind = $("items-kind").value;
  const plural = kind ? $("items-kind").selectedOptions[0].textContent : "items";
  const what = state.shown === 1 ? (kind ? kindLabel(kind) : "item") : plural;
  let text;
  if (!state.shown && state.cursor) {
    text = "No items shown; more below."; // every row shown was deleted, not every item
  } else if (!state.shown && state.filter) {
    text = `No ${plural} with ${$("items-filter-text").textContent}.`;
  } else if (!state.shown) {
    text = kind ? `No ${plural} stored.` : "The collection is empty. Add a clip, sound or picture.";
  } else {
    text = `Showing ${state.shown} ${what}${state.cursor ? "; more below" : ""}.`;
  }
  setStatus($("items-status"), prefix + text);
}

async function deleteItem(item, row) {
  const what = itemLabel(item);
  if (!confirm(`Delete ${what}? It disappears from search at once and cannot be undone.`)) {
    return;
  }
  const buttons = [...row.querySelectorAll("button")];
  const before = buttons.map((b) => b.disabled); // "Find similar" is off while not ready
  for (const b of buttons) b.disabled = true;
  clearError($("items-error"));
  try {
    await request("DELETE", `/v1/items/${encodeURIComponent(item.id)}`);
  } catch (err) {
    // Already gone is what the user wanted.
    if (!(err instanceof ApiError && err.status === 404)) {
      buttons.forEach((b, i) => { b.disabled = before[i]; });
      showError($("items-error"), err);
      return;
    }
  }
  // The row as listed now: a refresh or an upload's outcome may have replaced the one
  // clicked while the request was on its way.
  const listed = $("item-list").querySelector(`li[data-item-id="${CSS.escape(item.id)}"]`);
  const focused = document.activeElement;
  const hadFocus = !focused || focused === document.body || row.contains(focused) ||
    Boolean(listed && listed.contains(focused));
  const gone = listed || row;
  const next = gone.nextElementSibling || gone.previousElementSibling;
  if (listed) {
    listed.remove();
    state.shown = Math.max(0, state.shown - 1);
  }
  row.remove();
  if (hadFocus) (next && next.isConnected ? next : $("items-title")).focus(); // not the page's top
  for (const card of document.querySelectorAll("#results .card")) {
    if (card.dataset.itemId === item.id) card.remove();
  }
  if (item.media_url) forgetMedia(item.media_url);
  showItemCount(`Deleted ${what}. `);
}

export function setupCollection() {
  $("items-kind").addEventListener("change", () => loadItems(true));
  $("items-refresh").addEventListener("click", () => loadItems(true));
  $("items-more").addEventListener("click", () => loadItems(false));
  $("items-filter-clear").addEventListener("click", () => filterItems(null));
}
