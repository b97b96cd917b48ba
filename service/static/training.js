// The training section: start a job, follow the jobs (polled every 2 s while one is
// queued or running, or a version switch is under way, else every 30 s, and only while
// the page is visible), cancel one; list the model versions, switch to one (or back),
// delete one.

import { ApiError, request } from "./api.js";
import { announce, jobRow, UNFINISHED } from "./jobs.js";
import { $, clearError, setStatus, showError } from "./page.js";
import { modelRow } from "./versions.js";

const POLL_MS = 2000;
const RETRY_MS = 6000; // after a failed poll
// Nothing moving: still a look now and then, for a job queued by another client or the
// automatic retraining, and the switch to the version it made.
const IDLE_MS = 30000;
const JOBS_SHOWN = 10; // the newest; "show older jobs" lists them all

const state = {
  jobs: [], // the last job list, newest first
  models: [],
  seen: null, // Map id -> job of the previous render (null before the first)
  watched: new Set(), // jobs seen queued or running: their details stay open when they end
  pending: new Set(), // versions with an activate/delete request in flight
  active: undefined, // the active version's name at the last render
  activating: undefined,
  showAll: false,
  timer: 0,
  seq: 0,
  // An action's error on show (a 403, a 409): kept through the polls that follow, until
  // the next action, or it would vanish at the refresh the action itself asks for.
  kept: { jobs: false, models: false },
  onServerChange: () => {},
};

const busy = () =>
  state.jobs.some((j) => UNFINISHED.has(j.status)) ||
  state.models.some((m) => m.state === "activating");

function schedule(failed) {
  clearTimeout(state.timer);
  state.timer = 0;
  const on = busy() && !document.hidden;
  $("training").dataset.polling = on ? "on" : "off"; // tests read it
  if (document.hidden) return;
  state.timer = setTimeout(loadTraining, !on ? IDLE_MS : failed ? RETRY_MS : POLL_MS);
}

/** Fetch the jobs and the versions, render them, and poll again while anything moves. */
export async function loadTraining() {
  clearTimeout(state.timer);
  state.timer = 0;
  const seq = ++state.seq;
  const [jobs, models] = await Promise.allSettled([
    request("GET", "/v1/training/jobs"),
    request("GET", "/v1/models"),
  ]);
  if (seq !== state.seq) return; // a newer refresh (after an action) answers instead
  if (jobs.status === "fulfilled") {
    if (!state.kept.jobs) clearError($("jobs-error"));
    state.workers = jobs.value.workers;
    renderJobs(jobs.value.jobs);
  } else {
    state.kept.jobs = false;
    showError($("jobs-error"), jobs.reason);
    if (refused(jobs.reason)) {
      renderJobs([]);
      state.seen = null; // the key back: its jobs are the list again, not news
      setStatus($("jobs-status"), "");
    }
  }
  if (models.status === "fulfilled") {
    if (!state.kept.models) clearError($("models-error"));
    renderModels(models.value.models);
  } else {
    state.kept.models = false;
    showError($("models-error"), models.reason);
    if (refused(models.reason)) {
      renderModels([]);
      state.active = state.activating = undefined; // not "no versions": not shown to this key
      setStatus($("models-status"), "");
    }
  }
  schedule(jobs.status === "rejected" || models.status === "rejected");
}

/** A key missing or refused: what was listed with another key is not shown (nor its
 * buttons offered), and nothing moves that needs a fast poll. */
const refused = (err) => err instanceof ApiError && (err.status === 401 || err.status === 403);

// ---------------------------------------------------------------- keyed rows

/**
 * Make `list` show `rows` in order, keeping the rows whose content has not changed
 * (and so the keyboard focus and unfolded details in them).
 * @param {HTMLElement} list
 * @param {{key: string, sig: string, build: () => HTMLElement}[]} rows
 */
function reconcile(list, rows) {
  const focusedAt = [...list.children].findIndex((el) => el.contains(document.activeElement));
  const existing = new Map([...list.children].map((el) => [el.dataset.row, el]));
  const elements = rows.map(({ key, sig, build }) => {
    const old = existing.get(key);
    if (old && old.dataset.sig === sig) return old;
    const el = build();
    el.dataset.row = key;
    el.dataset.sig = sig;
    if (old) swap(old, el);
    return el;
  });
  elements.forEach((el, i) => {
    if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
  });
  const gone = [...list.children].slice(elements.length);
  const lost = gone.some((el) => el.contains(document.activeElement));
  for (const el of gone) el.remove();
  // A row whose button had the keyboard went (a version deleted): the next row has it,
  // or the list's heading, rather than the page's top.
  if (lost) {
    const near = list.children[Math.min(focusedAt, list.children.length - 1)];
    (near || document.getElementById(list.getAttribute("aria-labelledby"))).focus();
  }
}

/** Replace a row by its new version, carrying over unfolded details and the focus. */
function swap(old, row) {
  for (const details of row.querySelectorAll("details[data-key]")) {
    const before = old.querySelector(`details[data-key="${details.dataset.key}"]`);
    if (before) details.open = before.open;
  }
  const focused = old.contains(document.activeElement) ? document.activeElement : null;
  const key = focused && focused.closest("[data-key]") && focused.closest("[data-key]").dataset.key;
  old.replaceWith(row);
  if (!focused) return;
  let target = key ? row.querySelector(`[data-key="${key}"]`) : null;
  if (target && target.tagName === "DETAILS") target = target.querySelector("summary");
  (target && !target.disabled ? target : row).focus();
}

// ---------------------------------------------------------------- jobs

function jobsSummary(jobs) {
  if (!jobs.length) return "No training jobs yet.";
  const count = (status) => jobs.filter((j) => j.status === status).length;
  const parts = [];
  if (count("running")) parts.push(`${count("running")} running`);
  if (count("queued")) parts.push(`${count("queued")} queued`);
  const ended = jobs.length - count("running") - count("queued");
  if (ended) parts.push(`${ended} ended`);
  return `${jobs.length} job${jobs.length === 1 ? "" : "s"}: ${parts.join(", ")}.`;
}

function renderJobs(jobs) {
  const first = state.seen === null;
  const news = [];
  for (const job of jobs) {
    if (!first) {
      const line = announce(job, state.seen.get(job.id));
      if (line) news.push(line);
    }
    if (UNFINISHED.has(job.status)) state.watched.add(job.id);
  }
  state.seen = new Map(jobs.map((j) => [j.id, j]));
  state.jobs = jobs;
  if (first || news.length) setStatus($("jobs-status"), news.length ? news.join(" ") : jobsSummary(jobs));

  const shown = state.showAll ? jobs : jobs.slice(0, JOBS_SHOWN);
  reconcile($("job-list"), shown.map((job, i) => ({
    key: job.id,
    sig: JSON.stringify([job, state.workers]),
    build: () => jobRow(job, {
      open: i === 0 || state.watched.has(job.id), onCancel: cancelJob, workers: state.workers,
    }),
  })));
  const older = jobs.length - shown.length;
  $("jobs-more").hidden = older <= 0;
  $("jobs-more").textContent = `Show ${older} older job${older === 1 ? "" : "s"}`;
}

async function startJob(event) {
  event.preventDefault();
  const form = $("train-form");
  const stepsField = $("train-steps");
  const text = stepsField.value.trim();
  const steps = text ? Number(text) : null;
  const bad = stepsField.validity.badInput || (steps !== null && !(Number.isInteger(steps) && steps >= 1));
  $("train-steps-error").textContent = bad ? "Steps: a whole number of at least 1, or blank." : "";
  stepsField.setAttribute("aria-invalid", String(bad));
  if (bad) {
    stepsField.focus();
    return;
  }
  const body = { init: form.elements.init.value, steps, activate: form.elements.activate.value };
  $("train-submit").disabled = true;
  clearError($("train-error"));
  try {
    const job = await request("POST", "/v1/training/jobs", { json: body });
    state.watched.add(job.id);
    if (state.seen) state.seen.set(job.id, job); // announced here, not again by the poll
    setStatus($("jobs-status"), `Job ${job.id} is queued.`);
    await loadTraining();
  } catch (err) {
    showError($("train-error"), err);
  } finally {
    $("train-submit").disabled = false;
  }
}

async function cancelJob(job) {
  const question = job.status === "running"
    ? `Cancel job ${job.id}? It stops at its next step and what it has trained so far is ` +
      "thrown away."
    : `Cancel job ${job.id}? It has not started yet.`;
  if (!confirm(question)) return;
  clearError($("jobs-error"));
  state.kept.jobs = false;
  try {
    await request("POST", `/v1/training/jobs/${encodeURIComponent(job.id)}/cancel`);
  } catch (err) {
    showError($("jobs-error"), err); // 409: it ended meanwhile; the list shows how
    state.kept.jobs = true;
  }
  await loadTraining();
}

// ---------------------------------------------------------------- model versions

function renderModels(models) {
  const active = models.find((m) => m.active) || null;
  const activating = models.find((m) => m.state === "activating") || null;
  const before = { active: state.active, activating: state.activating };
  state.models = models;
  state.active = active ? active.version : null;
  state.activating = activating ? activating.version : null;
  const changed = before.active !== state.active || before.activating !== state.activating;
  if (changed) {
    let line;
    if (!models.length) line = "No model versions yet.";
    else if (activating) {
      line = `Switching to ${activating.version}: the collection is re-indexed with it; ` +
        `${state.active || "the serving version"} answers searches meanwhile.`;
    } else if (before.activating && before.activating === state.active) {
      line = `Switched: ${state.active} serves searches now.`;
    } else if (before.activating) {
      line = `The switch to ${before.activating} was called off; ${state.active} serves searches.`;
    } else {
      line = `${models.length} version${models.length === 1 ? "" : "s"}; ` +
        `${state.active || "none"} serves searches.`;
    }
    setStatus($("models-status"), line);
    if (before.active !== undefined) state.onServerChange(); // the header's status line
  }
  const opts = (model) => ({
    active, pending: state.pending.has(model.version),
    onActivate: activateModel, onCallOff: callOffSwitch, onDelete: deleteModel,
  });
  reconcile($("model-list"), models.map((model) => ({
    key: model.version,
    sig: JSON.stringify([model, state.pending.has(model.version), active && active.created_at]),
    build: () => modelRow(model, opts(model)),
  })));
}

/** Run an action on a version with its buttons disabled meanwhile, then refresh. */
async function versionAction(version, action) {
  state.pending.add(version);
  renderModels(state.models);
  clearError($("models-error"));
  state.kept.models = false;
  try {
    await action();
  } catch (err) {
    showError($("models-error"), err);
    state.kept.models = true;
  } finally {
    state.pending.delete(version);
  }
  await loadTraining();
}

const activateModel = (model) =>
  versionAction(model.version, () =>
    request("POST", `/v1/models/${encodeURIComponent(model.version)}/activate`));

// Activating the active version calls off a switch in progress.
const callOffSwitch = (model) =>
  versionAction(model.version, () =>
    request("POST", `/v1/models/${encodeURIComponent(state.active)}/activate`));

function deleteModel(model) {
  if (!confirm(`Delete version ${model.version}? Its weights, embeddings and indexes are ` +
      "removed; this cannot be undone.")) return;
  versionAction(model.version, async () => {
    try {
      await request("DELETE", `/v1/models/${encodeURIComponent(model.version)}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err; // already gone
    }
    setStatus($("models-status"), `Deleted version ${model.version}.`);
  });
}

// ---------------------------------------------------------------- start

/** @param {{onServerChange: () => void}} opts called when the serving version changes */
export function setupTraining(opts) {
  state.onServerChange = opts.onServerChange;
  $("train-form").addEventListener("submit", startJob);
  $("train-steps").addEventListener("input", () => {
    $("train-steps-error").textContent = "";
    $("train-steps").removeAttribute("aria-invalid");
  });
  $("jobs-more").addEventListener("click", () => {
    state.showAll = true;
    renderJobs(state.jobs);
    const next = $("job-list").children[JOBS_SHOWN]; // the first of the older ones
    if (next) next.focus();
  });
  // No polling while nobody looks; a fresh look on coming back.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) schedule(false);
    else loadTraining();
  });
}
