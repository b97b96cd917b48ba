// The web page at /: wires the sections together, the API key panel and the server
// status line. Plain ES modules served as they are: no build step, no framework.
//   api.js         the REST API: requests, uploads with progress, errors, the key
//   render.js      result cards and item rows (text nodes only, never server HTML)
//   page.js        shared bits: element lookup, status/error lines, drop targets
//   search.js      search by text, by example file, by stored item or a moment of one
//   moments.js     a long item's matching stretches: timeline, cue, seek, "from here"
//   upload.js      the upload form
//   collection.js  the item list with paging, filter and delete
//   training.js    training jobs and model versions: start, follow, cancel, switch, delete
//   jobs.js        job rows (progress, outcome, before/after table); loss_chart.js their
//                  loss curve; versions.js model version rows

import { forgetMedia, getApiKey, onKeyFromAnotherTab, setApiKey } from "./api.js";
import { loadItems, setupCollection } from "./collection.js";
import { $, setStatus } from "./page.js";
import { modelLabel } from "./render.js";
import { setupSearch } from "./search.js";
import { loadTraining, setupTraining } from "./training.js";
import { setupUpload } from "./upload.js";

// ---------------------------------------------------------------- API key

function showKeyState() {
  const key = getApiKey();
  $("key-state").textContent = key ? "set" : "not set";
  $("key-state").classList.toggle("on", Boolean(key));
  $("api-key").value = key;
}

function keyChanged() {
  forgetMedia();
  showKeyState();
  checkServer();
  loadItems(true);
  loadTraining();
}

function setupKeyPanel() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("api-key").value.trim());
    $("key-panel").open = false;
    keyChanged();
  });
  $("key-clear").addEventListener("click", () => {
    setApiKey("");
    keyChanged();
  });
  $("key-panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("key-panel").open) {
      $("key-panel").open = false;
      $("key-panel").querySelector("summary").focus();
    }
  });
  showKeyState();
  onKeyFromAnotherTab(keyChanged);
}

// ---------------------------------------------------------------- server status

let statusTimer = 0;

const STATUS_IDLE_MS = 30000; // ready: still a look now and then (a switch, a stop)

/** GET /readyz into the header line; re-checks every 5 s while re-indexing, 10 s while
 * not ready or unreachable, else every 30 s while the page is visible. */
async function checkServer() {
  clearTimeout(statusTimer);
  const box = $("server-status");
  let body = null;
  let ok = false;
  try {
    const res = await fetch("/readyz", { headers: { Accept: "application/json" } });
    ok = res.ok;
    body = await res.json().catch(() => null);
  } catch {
    setStatus(box, "Server unreachable");
    box.dataset.state = "down";
    statusTimer = setTimeout(checkServer, 10000);
    return;
  }
  const indexes = (body && body.indexes) || {};
  box.title = Object.entries(indexes).map(([name, n]) => `${name}: ${n}`).join("\n");
  if (ok && body) {
    let text = `Ready · ${modelLabel(body.model_version)}` +
      (body.device ? ` on ${body.device}` : "");
    if (body.reindex && body.reindex.stage === "failed") {
      text += ` · switching to ${body.reindex.to_version} failed, tried again shortly: ` +
        (body.reindex.error || "see the server log");
    } else if (body.reindex) {
      text += ` · re-indexing for ${body.reindex.to_version}: ` +
        `${body.reindex.done} of ${body.reindex.total}`;
    }
    setStatus(box, text);
    box.dataset.state = body.reindex ? "busy" : "ok";
    if (body.reindex) statusTimer = setTimeout(checkServer, 5000);
    else if (!document.hidden) statusTimer = setTimeout(checkServer, STATUS_IDLE_MS);
  } else {
    setStatus(box, "Not ready: no model is serving yet, so search will fail for now");
    box.dataset.state = "down";
    statusTimer = setTimeout(checkServer, 10000);
  }
}

// ---------------------------------------------------------------- start

setupKeyPanel();
setupSearch();
setupUpload();
setupCollection();
setupTraining({ onServerChange: checkServer });
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) checkServer();
});
checkServer();
loadItems(true);
loadTraining();
document.documentElement.dataset.ready = "true"; // for tests: every handler is attached
