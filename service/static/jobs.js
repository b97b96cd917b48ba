// Training jobs as list rows: status and stage, a progress bar with the live figures,
// the loss curve, and once a job has ended, what came of it and the held-out comparison.
// Everything from the server goes in as text nodes.

import { formatNumber, lossChart } from "./loss_chart.js";
import { formatDate, formatDuration, h } from "./render.js";

export const UNFINISHED = new Set(["queued", "running"]);
export const DIRECTIONS = ["text->video", "text->audio", "video->audio", "audio->video"];

export const directionLabel = (name) => name.replace("->", " → ");

const STAGES = {
  preparing: "Preparing: choosing the clips to train on and the ones to hold out",
  training: "Training",
  finishing: "Training: the last step is done; calibrating pictures and sounds, saving the run",
  evaluating: "Evaluating the serving version and the new one on the held-out clips",
  saving: "Saving the new version",
  activating: "Asking the service to switch to the new version",
};

/** "about 14 s left" */
export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  if (seconds < 90) return `about ${Math.max(1, Math.round(seconds))} s left`;
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${formatNumber(seconds / 3600, 2)} h left`;
}

const seconds = (from, to) => (Date.parse(to) - Date.parse(from)) / 1000;

function requestSummary(request) {
  return [
    request.init === "scratch" ? "from scratch" : "from the serving version",
    request.steps ? `${request.steps} steps` : "automatic steps",
    request.activate === "manual" ? "kept inactive when done" : "switched to if not worse",
  ].join(" · ");
}

function dataSummary(data) {
  if (!data || data.clips === undefined) return null;
  const parts = [`${data.train} clips to train on, ${data.val} held out`];
  const recipe = data.recipe;
  if (recipe) {
    parts.push(`batch ${recipe.batch_size}`, `learning rate ${recipe.lr}`,
      `${recipe.steps} steps (${recipe.steps_rule})`);
  }
  if (data.parent) parts.push(`compared with ${data.parent}`);
  return parts.join(" · ");
}

/** The line under a queued or running job's heading: what it is doing now. */
function stageText(job, workers) {
  const p = job.progress;
  if (job.cancel_requested) return "Cancelling: it stops at its next step";
  if (job.status === "queued") {
    const wait = workers && workers.length === 0
      ? "no training worker is running: start one with python -m service.worker (make run starts one)"
      : "waiting for the worker to take it";
    return job.attempts
      ? `Queued again (attempt ${job.attempts + 1}): ${job.error || "its worker stopped"}; ${wait}`
      : `Queued: ${wait}`;
  }
  if (!p.stage) return "Starting";
  if (p.stage === "training" && p.steps && p.step >= p.steps) {
    return "Training: the last step is done, the run is finishing";
  }
  return STAGES[p.stage] || p.stage;
}

function liveProgress(job, name, workers) {
  const p = job.progress;
  const training = job.status === "running" && p.steps;
  const bar = h("progress", {
    class: "job-progress", "aria-label": `Progress of ${name}`,
    max: training ? p.steps : null, value: training ? Math.min(p.step, p.steps) : null,
  });
  const facts = [];
  if (p.loss !== null && p.loss !== undefined) facts.push(`loss ${formatNumber(p.loss, 4)}`);
  if (p.clips_per_s) facts.push(`${formatNumber(p.clips_per_s, 2)} clips/s`);
  const eta = p.stage === "training" && p.step < (p.steps || 0) ? formatEta(p.eta_s) : null;
  if (eta) facts.push(eta);
  return [
    h("p", { class: "job-stage" }, stageText(job, workers)),
    job.status === "running"
      ? h("div", { class: "progress-wrap" }, bar,
        h("span", { class: "progress-text" },
          p.steps ? `step ${p.step} of ${p.steps}` : "working out the steps"))
      : null,
    facts.length ? h("p", { class: "facts job-facts" }, facts.join(" · ")) : null,
  ];
}

/** "cancelled while it ran" -> "Cancelled while it ran." */
const sentence = (text) =>
  text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
const clause = (text) => text.replace(/\.$/, "");

/** What came of a job that has ended, in a sentence. */
function outcome(job) {
  if (job.status === "failed") return `Failed: ${sentence(job.error || "no reason was recorded")}`;
  if (job.status === "cancelled") {
    if (!job.error) return "Cancelled.";
    return /^cancel/i.test(job.error) ? sentence(job.error) : `Cancelled: ${sentence(job.error)}`;
  }
  const v = job.model_version;
  if (!v) return sentence(job.error || "succeeded");
  if (job.activated) {
    return `Made version ${v}: at least as good on the held-out clips, so the service ` +
      "switches to it.";
  }
  if (job.error) return `Made version ${v}; ${clause(job.error)}.`;
  return `Made version ${v} and kept it inactive, as asked: use it under “Model versions”.`;
}

const r1 = (m, direction) => {
  const d = m && m.directions && m.directions[direction];
  return d && Number.isFinite(d["R@1"]) ? d["R@1"] : null;
};
const fixed = (x, digits = 2) => (x === null ? "–" : x.toFixed(digits));

function change(before, after) {
  if (before === null || after === null || after === before) return null;
  return after > before
    ? h("span", { class: "delta up" }, " ▲", h("span", { class: "visually-hidden" }, " better"))
    : h("span", { class: "delta down" }, " ▼", h("span", { class: "visually-hidden" }, " worse"));
}

/** Held-out R@1 of the four directions before (the serving version) and after. */
export function metricsTable(metrics, name) {
  const { before, after } = metrics || {};
  if (!before || !after) return null;
  const row = (label, b, a, digits) =>
    h("tr", {},
      h("th", { scope: "row" }, label),
      h("td", {}, fixed(b, digits)),
      h("td", {}, fixed(a, digits), change(b, a)));
  return h(
    "table",
    { class: "metrics-table", "aria-label": `Held-out retrieval of ${name}, before and after` },
    h("caption", {},
      `R@1 on ${after.clips} held-out clip${after.clips === 1 ? "" : "s"}: how often a ` +
      "query's own clip comes first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Direction"),
      h("th", { scope: "col" }, "Before", metrics.compared_with
        ? h("span", { class: "th-note" }, metrics.compared_with) : null),
      h("th", { scope: "col" }, "After"))),
    h("tbody", {}, DIRECTIONS.filter((d) => r1(before, d) !== null || r1(after, d) !== null)
      .map((d) => row(directionLabel(d), r1(before, d), r1(after, d), 2))),
    h("tfoot", {}, row("Score", before.score ?? null, after.score ?? null, 3)),
  );
}

/**
 * One job's row. `open`: whether a finished job's details start unfolded.
 * @param {any} job
 * @param {{open: boolean, onCancel: (job: any) => void}} opts
 */
export function jobRow(job, opts) {
  const name = `job ${job.id}`;
  const unfinished = UNFINISHED.has(job.status);
  const chart = lossChart(job.progress.history, job.progress.steps, name);
  const table = metricsTable(job.metrics, name);
  const when = [`queued ${formatDate(job.created_at)}`];
  if (job.finished_at && job.started_at) {
    when.push(`took ${formatDuration(seconds(job.started_at, job.finished_at))}`);
  } else if (job.started_at) {
    when.push(`started ${formatDate(job.started_at)}`);
  }
  const details = !unfinished && (chart || table)
    ? h("details", { class: "job-details", open: opts.open, dataset: { key: "details" } },
      h("summary", {}, table ? "Loss curve and held-out retrieval" : "Loss curve"),
      chart, table)
    : null;
  return h(
    "li",
    { class: "job-row", tabindex: "-1", dataset: { jobId: job.id, status: job.status } },
    h("div", { class: "job-head" },
      h("span", { class: `badge job-${job.status}` }, job.status),
      h("code", { class: "job-id", title: "job id" }, job.id),
      h("span", { class: "job-when" }, when.join(" · "))),
    h("p", { class: "facts" }, requestSummary(job.request || {})),
    unfinished ? liveProgress(job, name, opts.workers) : null,
    unfinished ? chart : null,
    unfinished ? table : null,
    unfinished ? null : h("p", { class: `job-outcome outcome-${job.status}` }, outcome(job)),
    details,
    dataSummary(job.data) ? h("p", { class: "facts" }, dataSummary(job.data)) : null,
    unfinished
      ? h("div", { class: "job-actions" }, h("button", {
        type: "button", class: "danger small", dataset: { key: "cancel" },
        disabled: job.cancel_requested, "aria-label": `Cancel ${name}`,
        onclick: () => opts.onCancel(job),
      }, job.cancel_requested ? "Cancelling…" : "Cancel"))
      : null,
  );
}

/** A sentence for the status line when a job moves on (null: nothing worth saying). */
export function announce(job, previous) {
  if (previous && previous.status === job.status) return null;
  if (job.status === "running") return `Job ${job.id} is running.`;
  if (job.status === "queued") return previous ? null : `Job ${job.id} is queued.`;
  return `Job ${job.id}: ${outcome(job)}`;
}
