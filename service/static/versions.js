// Model versions as list rows: state (with a switch's re-indexing progress), where each
// came from, its key retrieval figures, and the buttons to use or delete it.

import { DIRECTIONS, directionLabel } from "./jobs.js";
import { formatNumber } from "./loss_chart.js";
import { formatDate, h } from "./render.js";

const REINDEX_STAGES = {
  loading: "loading the version",
  waiting: "another replica is embedding the collection",
  embedding: "embedding the collection",
  indexing: "building the indexes",
  catching_up: "adding what was uploaded meanwhile",
  swapping: "switching over",
};

/**
 * The figures that say how good a version is, with what they were measured on:
 * a version made by a job has its held-out R@1 (metrics.job.after); a checkpoint
 * trained by `make model` has its test-set evaluation (metrics.test), else the
 * validation of its training run (metrics.val).
 * @returns {{label: string, values: [string, number][]} | null}
 */
export function keyMetrics(metrics) {
  const m = metrics || {};
  const pick = (get) =>
    DIRECTIONS.map((d) => [directionLabel(d), get(d)]).filter(([, v]) => Number.isFinite(v));
  const after = m.job && m.job.after;
  if (after && after.directions) {
    const values = pick((d) => after.directions[d] && after.directions[d]["R@1"]);
    const n = after.clips;
    if (values.length) return { label: `R@1 on the job's ${n} held-out clip${n === 1 ? "" : "s"}`, values };
  }
  const test = m.test && m.test.retrieval;
  if (test) {
    const values = pick((d) => test[d] && test[d]["R@10"]);
    const n = m.test.candidates;
    if (values.length) return { label: `R@10 on ${n ? `the ${n} clips of ` : ""}its test set`, values };
  }
  const val = m.val;
  if (val) {
    const values = pick((d) => val[`${d}/R@1`]);
    if (values.length) return { label: `R@1 on ${val.candidates} validation clips`, values };
  }
  return null;
}

function figures(metrics) {
  const key = keyMetrics(metrics);
  if (!key) return h("p", { class: "facts" }, "No evaluation was recorded with this version.");
  return h(
    "div",
    { class: "model-metrics" },
    h("p", { class: "facts" }, key.label),
    h("dl", { class: "meta model-figures" },
      key.values.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value.toFixed(2))])),
  );
}

function origin(model) {
  const made = formatDate(model.created_at);
  if (!model.parent && !model.job_id) return `The starting model, registered ${made}`;
  const parts = [`Made ${made}`];
  if (model.job_id) parts.push(`by job ${model.job_id}`);
  if (model.parent) parts.push(`· parent ${model.parent}`);
  return parts.join(" ");
}

function reindexProgress(model) {
  const r = model.reindex;
  const label = `Switching to ${model.version}`;
  if (!r) {
    return h("div", { class: "progress-wrap" },
      h("progress", { "aria-label": label }),
      h("span", { class: "progress-text" }, "waiting for the service to start"));
  }
  if (r.stage === "failed") {
    return h("div", { class: "progress-wrap" },
      h("span", { class: "progress-text" },
        `The last try failed (${r.error || "see the server log"}); it is tried again shortly`));
  }
  const stage = REINDEX_STAGES[r.stage] || r.stage || "re-indexing";
  return h("div", { class: "progress-wrap" },
    h("progress", { "aria-label": label, max: Math.max(r.total, 1), value: Math.min(r.done, r.total) }),
    h("span", { class: "progress-text" },
      `${stage}: ${formatNumber(r.done, 9)} of ${formatNumber(r.total, 9)} items`));
}

/**
 * One version's row.
 * @param {any} model
 * @param {{active: any | null, pending: boolean, onActivate: (model: any) => void,
 *          onCallOff: (model: any) => void, onDelete: (model: any) => void}} opts
 */
export function modelRow(model, opts) {
  const name = `version ${model.version}`;
  const older = opts.active && model.created_at < opts.active.created_at;
  const buttons = [];
  if (model.state === "inactive") {
    buttons.push(
      h("button", {
        type: "button", class: "secondary small", dataset: { key: "activate" },
        disabled: opts.pending,
        "aria-label": `${older ? "Roll back to this version" : "Use this version"}, ${model.version}`,
        onclick: () => opts.onActivate(model),
      }, older ? "Roll back to this version" : "Use this version"),
      h("button", {
        type: "button", class: "danger small", dataset: { key: "delete" },
        disabled: opts.pending, "aria-label": `Delete ${name}`,
        onclick: () => opts.onDelete(model),
      }, "Delete"),
    );
  } else if (model.state === "activating" && opts.active) {
    buttons.push(h("button", {
      type: "button", class: "secondary small", dataset: { key: "call-off" },
      disabled: opts.pending,
      "aria-label": `Call off the switch to ${model.version} and stay on ${opts.active.version}`,
      onclick: () => opts.onCallOff(model),
    }, "Call off the switch"));
  }
  return h(
    "li",
    { class: "model-row", tabindex: "-1", dataset: { version: model.version, state: model.state } },
    h("div", { class: "model-head" },
      h("code", { class: "model-version" }, model.version),
      h("span", { class: `badge model-${model.state}` }, model.state)),
    h("p", { class: "facts" }, origin(model)),
    model.state === "activating" ? reindexProgress(model) : null,
    figures(model.metrics),
    buttons.length ? h("div", { class: "model-actions" }, buttons) : null,
  );
}
