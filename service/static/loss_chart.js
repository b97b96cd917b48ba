// A training job's loss curve: an inline SVG polyline drawn from progress.history
// ([[step, loss], ...]). The plot stretches to its box (its lines keep their width); the
// axis labels are HTML around it, so they stay legible from a phone to a wide screen.

import { h } from "./render.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const SIZE = 100; // the plot's user units: 0..100 on both axes

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) {
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A loss or step in the reader's locale, three significant digits at most. */
export const formatNumber = (value, digits = 3) =>
  Number(value).toLocaleString(undefined, { maximumSignificantDigits: digits });

let chartCount = 0; // unique ids for aria-labelledby

/** Round axis values from the top down that cover [lo, hi]: steps of 1, 2, 2.5 or 5 × 10^k. */
export function niceTicks(lo, hi) {
  const raw = (hi - lo) / 3 || Math.abs(hi) / 3 || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = power * [1, 2, 2.5, 5, 10].find((f) => f * power >= raw * (1 - 1e-9));
  const bottom = Math.floor(lo / step + 1e-9) * step;
  const top = Math.max(Math.ceil(hi / step - 1e-9) * step, bottom + step);
  const ticks = [];
  for (let i = Math.round((top - bottom) / step); i >= 0; i--) ticks.push(bottom + i * step);
  return ticks;
}

/**
 * The chart of one job's loss, or null while it has no point yet.
 * @param {number[][]} history [[step, loss], ...] in step order
 * @param {number|null} steps the job's total steps: the x axis ends there, so the curve
 *   grows to the right while the job trains
 * @param {string} name what the chart is of, e.g. "job job-4999336749d6"
 */
export function lossChart(history, steps, name) {
  const points = (history || []).filter(
    (p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]),
  );
  if (!points.length) return null;
  const last = points[points.length - 1];
  const xMax = Math.max(steps || 0, last[0], 1);
  const losses = points.map((p) => p[1]);
  const ticks = niceTicks(Math.min(...losses), Math.max(...losses));
  const lo = ticks[ticks.length - 1];
  const hi = ticks[0];
  const x = (step) => ((step / xMax) * SIZE).toFixed(2);
  const y = (loss) => (SIZE - ((loss - lo) / (hi - lo)) * SIZE).toFixed(2);
  const coords = points.map(([s, l]) => `${x(s)},${y(l)}`);
  if (coords.length === 1) coords.push(`${(Number(x(last[0])) + 0.8).toFixed(2)},${y(last[1])}`);

  const best = points.reduce((a, b) => (b[1] < a[1] ? b : a));
  const first = points[0];
  const id = `loss-chart-${++chartCount}`;
  const title = `Training loss of ${name}`;
  const desc =
    `${points.length} point${points.length === 1 ? "" : "s"} from step ${first[0]} ` +
    `(loss ${formatNumber(first[1])}) to step ${last[0]} (loss ${formatNumber(last[1])})` +
    (steps ? ` of ${steps} steps` : "") +
    `; lowest ${formatNumber(best[1])} at step ${best[0]}.`;

  const plot = svg(
    "svg",
    {
      class: "chart-plot", viewBox: `0 0 ${SIZE} ${SIZE}`, preserveAspectRatio: "none",
      role: "img", "aria-labelledby": `${id}-title ${id}-desc`, focusable: "false",
    },
    svg("title", { id: `${id}-title` }, title),
    svg("desc", { id: `${id}-desc` }, desc),
    ...ticks.map((t) => svg("line", { class: "chart-grid", x1: 0, x2: SIZE, y1: y(t), y2: y(t) })),
    svg("polyline", { class: "chart-line", points: coords.join(" ") }),
  );
  return h(
    "figure",
    { class: "loss-chart", dataset: { points: String(points.length), lastStep: String(last[0]) } },
    h(
      "div",
      { class: "chart" },
      h("div", { class: "chart-y", "aria-hidden": "true" },
        ticks.map((t) => h("span", {}, formatNumber(t)))),
      plot,
      h("div", { class: "chart-x", "aria-hidden": "true" },
        h("span", {}, "0"), h("span", { class: "chart-axis" }, "step"),
        h("span", {}, formatNumber(xMax, 6))),
    ),
    h("figcaption", {}, `Loss by step · latest ${formatNumber(last[1])} at step ${last[0]}` +
      ` · lowest ${formatNumber(best[1])} at step ${best[0]}`),
  );
}
