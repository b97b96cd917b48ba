// What every section of the page shares: element lookup, status and error lines,
// and drop targets for files.

import { ApiError, describeError } from "./api.js";

export const $ = (id) => document.getElementById(id);

/** Show an error (ApiError or any other) in an error box. */
export function showError(box, err) {
  box.textContent = describeError(err);
  box.hidden = false;
  // A missing or wrong key is fixed at the top of the page: open that panel.
  if (err instanceof ApiError && err.status === 401) {
    $("key-panel").open = true;
  }
}

export function clearError(box) {
  box.hidden = true;
  box.textContent = "";
}

/** Set a status line; `busy` adds the spinner. */
/** Hide `el`; if it had the keyboard, `next` takes it (a control that goes while focused
 * leaves the keyboard at the top of the page). */
export function hideKeepingFocus(el, next) {
  const had = el.contains(document.activeElement);
  el.hidden = true;
  if (had) next.focus();
}

export function setStatus(box, text, busy = false) {
  box.textContent = text;
  box.classList.toggle("busy", busy);
}

const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");

/** Make `zone` accept dropped files; `onFile` gets the first one, or with `all` the
 * list of them. */
export function dropTarget(zone, onFile, all = false) {
  let depth = 0; // dragenter/leave fire for every child; count to know when we left
  zone.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    depth = 0;
    zone.classList.remove("dragging");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) onFile(all ? [...files] : files[0]);
  });
}

// A file dropped outside a drop target would make the browser navigate away.
window.addEventListener("dragover", (e) => hasFiles(e) && e.preventDefault());
window.addEventListener("drop", (e) => hasFiles(e) && e.preventDefault());
