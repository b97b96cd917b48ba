// Moments: where in a long sound or video a result matched. The player starts at the
// matching stretch, a timeline under it marks the stretch within the whole item, the
// transcript cue said there is shown beside it, and the item's further matching
// stretches (more_segments) are buttons that play from there. "Find similar from here"
// searches with the stretch that starts at the player's current time.

import { h, itemLabel, snippet, wake } from "./render.js";

export const MOMENT_S = 10; // a moment query's length: the service's segment length

/** "0:50", "1:02:03": a position in a recording, to the nearest second. */
export function clock(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  return hours ? `${hours}:${pad(minutes)}:${pad(total % 60)}` : `${minutes}:${pad(total % 60)}`;
}

/** "0:50–1:00" */
export const spanLabel = (start, end) => `${clock(start)}–${clock(end)}`;

/**
 * The stretch a "from here" query names: MOMENT_S seconds from `t`, cut at the item's
 * end; at the very end (a player that finished), the item's last MOMENT_S seconds.
 * @returns {{start: number, end: number}} seconds, start to a tenth
 */
export function momentAt(t, duration) {
  const last = Number.isFinite(duration) && duration > 0 ? duration : Infinity;
  let start = Math.max(0, Number.isFinite(t) ? t : 0);
  if (start > last - 0.5) start = Math.max(0, last - MOMENT_S);
  start = Math.round(start * 10) / 10;
  return { start, end: Math.min(start + MOMENT_S, last) };
}

// The time a player was asked to go to before it knew its duration (it reads 0 until
// then): where it is, for "Find similar from here".
const pendingSeek = new WeakMap();

/** Where a player is, or is about to be. */
function playerTime(player) {
  return pendingSeek.has(player) ? pendingSeek.get(player) : player.currentTime;
}

/** Seek a player to `t` (once it knows its duration), and play from there if asked. */
function seek(player, t, play) {
  if (play) wake(player); // asked to play before it came near the screen
  if (player.readyState >= HTMLMediaElement.HAVE_METADATA) {
    pendingSeek.delete(player);
    player.currentTime = t;
  } else {
    pendingSeek.set(player, t);
    player.addEventListener("loadedmetadata", () => {
      if (pendingSeek.get(player) !== t) return; // asked again since: that one goes
      pendingSeek.delete(player);
      player.currentTime = t;
    }, { once: true });
  }
  if (!play) return;
  if (!player.getAttribute("src")) {
    // Its signed link is still on its way: a play now would be cut off by the source.
    player.addEventListener("loadedmetadata", () => player.play().catch(() => {}), { once: true });
    return;
  }
  // Inside the click itself: iOS plays only then. A browser's autoplay policy may
  // refuse; the player's own controls remain.
  player.play().catch(() => {});
}

/**
 * The moment parts of a result card.
 * @param {{item: any, score: number, segment?: {start_s: number, end_s: number} | null,
 *          segment_text?: string | null, more_segments?: any[]}} result
 * @param {HTMLElement} media the card's media box (mediaFor in render.js)
 * @param {{query?: string, onMoment: (item: any, start: number, end: number) => void}} opts
 * @returns {{panel: HTMLElement | null, actions: HTMLElement[], cueShown: boolean}}
 *   the timeline, cue and stretch buttons (null when the whole item matched and no
 *   stretch is listed); the buttons for the card's actions; whether the cue stands in
 *   for the card's transcript snippet
 */
export function momentParts(result, media, opts) {
  const { item } = result;
  const player = media.querySelector("audio, video");
  const parts = { panel: null, actions: [], cueShown: false };
  if (!player) return parts;
  const duration = () =>
    item.duration_s || (Number.isFinite(player.duration) ? player.duration : NaN);
  const what = itemLabel(item);

  parts.actions.push(h("button", {
    type: "button", class: "secondary small from-here",
    "aria-label": `Find similar from here: ${what}, from where its player is`,
    title: `Search with the ${MOMENT_S} seconds from where the player is`,
    onclick: () => {
      const { start, end } = momentAt(playerTime(player), duration());
      opts.onMoment(item, start, end);
    },
  }, "Find similar from here"));

  const stretches = [
    ...(result.segment
      ? [{ ...result.segment, score: result.score, segment_text: result.segment_text }]
      : []),
    ...(result.more_segments || []),
  ];
  if (!stretches.length) return parts;

  const length = duration() || Math.max(...stretches.map((s) => s.end_s));
  const pct = (t) => (100 * Math.min(Math.max(t, 0), length)) / length;
  const place = (el, s) => {
    el.style.left = `${pct(s.start_s).toFixed(2)}%`;
    el.style.width = `${(pct(s.end_s) - pct(s.start_s)).toFixed(2)}%`;
  };
  const marks = stretches.map((s) => {
    const mark = h("span", { class: "timeline-mark" });
    place(mark, s);
    return mark;
  });
  const band = h("span", { class: "timeline-band", hidden: true });
  const now = h("span", { class: "timeline-now" });
  const timeline = h("div", { class: "timeline", role: "img" }, marks, band, now);
  const scale = h("div", { class: "timeline-scale", "aria-hidden": "true" },
    h("span", {}, clock(0)), h("span", { class: "timeline-span" }), h("span", {}, clock(length)));
  const cue = h("p", { class: "cue", "aria-live": "polite", hidden: true });

  const panel = h("div", { class: "moment" }, timeline, scale, cue);
  const buttons = stretches.map((s, i) => h("button", {
    type: "button", class: "secondary small stretch", "aria-pressed": "false",
    "aria-label": `Play ${what} from ${spanLabel(s.start_s, s.end_s)}` +
      (i === 0 && result.segment ? ", the best match" : ""),
    title: `score ${s.score.toFixed(3)}`,
    onclick: () => {
      select(s, i);
      seek(player, s.start_s, true);
    },
  }, spanLabel(s.start_s, s.end_s)));
  panel.append(h("div", { class: "stretches", role: "group",
    "aria-label": `Matching stretches of ${what}` }, buttons));

  /** Mark stretch i: the band, the cue said there, the pressed button. */
  function select(s, i) {
    const label = spanLabel(s.start_s, s.end_s);
    place(band, s);
    band.hidden = false;
    panel.dataset.start = String(s.start_s);
    panel.dataset.end = String(s.end_s);
    timeline.setAttribute("aria-label",
      `Timeline of ${what}: ${label} of ${clock(length)} marked`);
    scale.querySelector(".timeline-span").textContent = label;
    cue.replaceChildren(h("span", { class: "cue-time" }, label), " ",
      ...(s.segment_text ? snippet(s.segment_text, opts.query) : []));
    cue.hidden = !s.segment_text;
    buttons.forEach((b, j) => b.setAttribute("aria-pressed", String(j === i)));
  }

  timeline.setAttribute("aria-label",
    `Timeline of ${what} (${clock(length)}): matching stretches marked`);
  player.addEventListener("timeupdate", () => {
    now.style.left = `${pct(player.currentTime).toFixed(2)}%`;
  });
  if (result.segment) {
    // The result is this stretch: the player starts there.
    select(stretches[0], 0);
    seek(player, result.segment.start_s, false);
    parts.cueShown = Boolean(result.segment_text);
  }
  parts.panel = panel;
  return parts;
}
