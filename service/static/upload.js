// The upload form: file, transcript, metadata (checked here first), a real progress
// bar, and the outcome: 201 added, 200 already stored, 202 processing (polled).
// Several files go one after another, each its own request, with one bar for all of
// them and, at the end, what became of each.

import { ApiError, describeError, request, upload } from "./api.js";
import { dropItem, showItem } from "./collection.js";
import { $, clearError, dropTarget, hideKeepingFocus, setStatus, showError } from "./page.js";
import { formatBytes, formatDuration, h, kindLabel } from "./render.js";

const POLL_LIMIT_MS = 15 * 60 * 1000; // stop watching a background upload after this

let job = null; // the upload in flight: {promise, abort}
let shownUpload = 0; // the upload whose outcome the status line shows (a later one wins)

// Answers after which every further file of a batch would be refused the same way
// (Not a network error: a server that cuts a too-large file short can look like one.)
const stopsBatch = (err) =>
  err.status === 401 || err.status === 403 || (err.status === 503 && err.code === "no_model");

/** Metadata must be a flat JSON object; returns [value, error message]. */
export function parseMetadata(text) {
  if (!text.trim()) return [null, ""];
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return [null, `Metadata is not valid JSON: ${err.message}`];
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return [null, "Metadata must be a JSON object, like {\"source\": \"phone\"}."];
  }
  for (const [k, v] of Object.entries(value)) {
    if (v !== null && typeof v === "object") {
      return [null, `Metadata must be flat: the value of “${k}” is a nested ${
        Array.isArray(v) ? "list" : "object"}.`];
    }
  }
  return [value, ""];
}

function checkMetadataField() {
  const [, message] = parseMetadata($("upload-metadata").value);
  $("upload-metadata-error").textContent = message;
  $("upload-metadata").setAttribute("aria-invalid", message ? "true" : "false");
  return !message;
}

function busy(on) {
  $("upload-submit").disabled = on;
  if (on) $("upload-cancel").hidden = false;
  else hideKeepingFocus($("upload-cancel"), $("upload-status"));
  $("upload-form").setAttribute("aria-busy", String(on));
}

function describeItem(item) {
  const dur = formatDuration(item.duration_s);
  return `${kindLabel(item.kind)}${dur ? `, ${dur}` : ""}, id ${item.id}`;
}

/** The status line for a finished item; tests read the item id from data-item-id. */
function finish(item) {
  if (item.status === "failed") {
    setStatus($("upload-status"), "");
    showError($("upload-error"), new ApiError(0, "failed",
      `The server could not index ${item.id}: ${item.error || "no reason given"}.`));
    return;
  }
  setStatus($("upload-status"), `Added: ${describeItem(item)}. It can be searched now.`);
  $("upload-status").dataset.itemId = item.id;
}

/** Poll GET /v1/items/{id} until the item is ready or failed, with growing pauses,
 * while the form is free for the next upload; the status line says the outcome unless
 * a later upload has it by then. A failed check says so without calling the stored
 * item lost. */
async function watchProcessing(item, mine, isNew = true) {
  const started = Date.now();
  let pause = 1000;
  let current = item;
  try {
    while (current.status === "processing") {
      if (Date.now() - started > POLL_LIMIT_MS) {
        // No longer watched: listed as it is, and the line says how to look again (it
        // promised the collection would show it, which nothing then refreshed).
        showItem(current, isNew);
        if (mine === shownUpload) {
          setStatus($("upload-status"), `Still processing ${item.id} after 15 minutes; it ` +
            "is listed in the collection as processing. Refresh the collection to see it ready.");
        }
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(5000, pause * 1.5);
      current = await request("GET", `/v1/items/${encodeURIComponent(item.id)}`);
    }
  } catch (err) {
    const deleted = err instanceof ApiError && err.status === 404;
    if (mine === shownUpload) {
      setStatus($("upload-status"), deleted
        ? `${item.id} was deleted while it was processed.`
        : `Stored as ${item.id}, still processing; its progress could not be checked ` +
          `(${describeError(err)}). Refresh the collection to see it ready.`);
    }
    if (deleted) dropItem(item.id); // not left listed as processing
    else showItem(current, isNew);
    return;
  }
  if (mine === shownUpload) finish(current);
  showItem(current, isNew);
}

function showProgress(sent, total) {
  const bar = $("upload-progress");
  bar.value = total ? Math.min(100, Math.round((100 * sent) / total)) : 100;
  $("upload-progress-text").textContent =
    `${bar.value}% · ${formatBytes(Math.round(Math.min(sent, total)))} of ${formatBytes(total)}`;
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

/** Several files, one request each and one after another (the server admits a bounded
 * number of uploads at once): the bar counts the bytes of all of them; a file that is
 * refused is listed with the server's reason and the others go on. */
async function submitMany(files, metadata, background) {
  const total = files.reduce((n, f) => n + f.size, 0);
  const counts = { added: 0, already: 0, processing: 0 };
  const failed = []; // [file name, reason]
  const answered = []; // [item, new?] in the order sent
  let sentWhole = false; // the file in flight reached the server whole
  let finished = 0; // bytes of the files done with
  let cancelled = false;
  let stoppedBy = null;
  shownUpload++;
  $("upload-progress-wrap").hidden = false;
  showProgress(0, total);
  busy(true);
  try {
    for (const [i, file] of files.entries()) {
      const form = new FormData();
      form.append("file", file);
      if (metadata) form.append("metadata", metadata);
      setStatus($("upload-status"),
        `Uploading ${i + 1} of ${files.length}: ${file.name}…`, true);
      sentWhole = false;
      job = upload("/v1/items", form, {
        query: { wait: background ? "false" : "true" },
        onSent: () => { sentWhole = true; },
        // The request's bytes include the form's boundaries and fields: scaled to the
        // file's share, so the bar neither runs past a file nor steps back after it.
        onProgress: (sent, body) => showProgress(finished + (body ? file.size * sent / body : 0),
          total),
      });
      try {
        const { status, body: item } = await job.promise;
        answered.push([item, status !== 200]);
        if (status === 200) counts.already++;
        else if (item.status === "processing") counts.processing++;
        else if (item.status === "failed") failed.push([file.name, item.error || "failed"]);
        else counts.added++;
      } catch (err) {
        if (err instanceof ApiError && err.code === "cancelled") {
          cancelled = true;
          break;
        }
        failed.push([file.name, describeError(err)]);
        if (err instanceof ApiError && stopsBatch(err)) {
          stoppedBy = err; // the others would be refused alike: not sent
          break;
        }
      }
      finished += file.size;
      showProgress(finished, total);
    }
  } finally {
    job = null;
    busy(false);
  }
  const parts = [];
  if (counts.added) parts.push(`${counts.added} added`);
  if (counts.already) parts.push(`${counts.already} already in the collection`);
  if (counts.processing) parts.push(`${counts.processing} processing in the background`);
  if (failed.length) parts.push(`${failed.length} could not be added`);
  const done = counts.added + counts.already + counts.processing + failed.length;
  const head = cancelled
    ? `Cancelled after ${plural(done, "file", "files")} of ${files.length}` +
      (sentWhole ? ` (${files[done].name} had reached the server: it may still be added)` : "")
    : stoppedBy
      ? `Stopped after ${plural(done, "file", "files")} of ${files.length}`
      : plural(files.length, "file", "files");
  setStatus($("upload-status"), `${head}: ${parts.join(", ") || "none sent"}.`);
  if (failed.length) {
    const box = $("upload-error");
    const why = stoppedBy
      ? ` The rest were not sent: ${describeError(stoppedBy).replace(/\.$/, "")}.`
      : "";
    box.replaceChildren(
      h("p", {}, `${plural(failed.length, "file was", "files were")} not added.${why}`),
      h("ul", { class: "upload-failures" },
        ...failed.map(([name, reason]) => h("li", {}, h("strong", {}, name), ` — ${reason}`))),
    );
    box.hidden = false;
  }
  if (!failed.length && !cancelled) {
    $("upload-form").reset(); // else kept: the files and metadata, to try again
    checkMetadataField();
  }
  for (const [item, isNew] of answered) showItem(item, isNew);
  // Those processing in the background: followed one after another (the server takes
  // them in turn), their rows updated as each ends; the summary line stays.
  for (const [item, isNew] of answered) {
    if (item.status === "processing") await watchProcessing(item, null, isNew);
  }
}

async function submit(e) {
  e.preventDefault();
  clearError($("upload-error"));
  delete $("upload-status").dataset.itemId;
  const files = [...$("upload-file").files];
  const file = files[0];
  if (!file) {
    showError($("upload-error"), new ApiError(0, "no_file", "Choose a file to upload first."));
    $("upload-file").focus();
    return;
  }
  if (!checkMetadataField()) {
    $("upload-metadata").focus();
    return;
  }
  if (files.length > 1) {
    if ($("upload-transcript").value.trim()) {
      showError($("upload-error"), new ApiError(0, "transcript_for_many",
        "A transcript belongs to one file: clear it to upload several (speech " +
        "recognition then fills each), or upload its file alone."));
      $("upload-transcript").focus();
      return;
    }
    await submitMany(files, $("upload-metadata").value.trim(), $("upload-background").checked);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  const transcript = $("upload-transcript").value.trim();
  if (transcript) form.append("transcript", transcript);
  const metadata = $("upload-metadata").value.trim();
  if (metadata) form.append("metadata", metadata);
  const background = $("upload-background").checked;

  const bar = $("upload-progress");
  const barText = $("upload-progress-text");
  $("upload-progress-wrap").hidden = false;
  bar.value = 0;
  barText.textContent = "0%";
  setStatus($("upload-status"), `Uploading ${file.name}…`, true);
  busy(true);
  job = upload("/v1/items", form, {
    query: { wait: background ? "false" : "true" },
    onProgress: (sent, total) => {
      bar.value = Math.round((100 * sent) / total);
      barText.textContent = `${bar.value}% · ${formatBytes(sent)} of ${formatBytes(total)}`;
    },
    onSent: () => {
      bar.value = 100;
      barText.textContent = `100% · ${formatBytes(file.size)}`;
      // From here the server has the file: cancelling would only stop listening.
      hideKeepingFocus($("upload-cancel"), $("upload-status"));
      if (!background) {
        setStatus($("upload-status"), "Uploaded. The server is decoding and indexing it…", true);
      }
    },
  });
  const mine = ++shownUpload;
  let watch = null; // an item stored and processing in the background
  let isNew = true;
  try {
    const { status, body: item } = await job.promise;
    isNew = status !== 200;
    if (status === 200) {
      setStatus($("upload-status"),
        `Already in the collection: the same file was stored before (${describeItem(item)}).`);
      $("upload-status").dataset.itemId = item.id;
      if (item.status === "processing") watch = item; // stored, still being processed
    } else if (item.status === "processing") {
      setStatus($("upload-status"), `Received; processing in the background (${item.id})…`,
        true);
      watch = item;
    } else {
      finish(item);
    }
    $("upload-form").reset();
    checkMetadataField();
    showItem(item, status !== 200);
  } catch (err) {
    setStatus($("upload-status"), "");
    showError($("upload-error"), err);
  } finally {
    job = null;
    busy(false);
  }
  // Watched with the form free again: the next file need not wait for this one.
  if (watch) await watchProcessing(watch, mine, isNew);
}

export function setupUpload() {
  $("upload-form").addEventListener("submit", submit);
  $("upload-cancel").addEventListener("click", () => job && job.abort());
  $("upload-metadata").addEventListener("input", checkMetadataField);
  $("upload-file").addEventListener("change", () => {
    const files = [...$("upload-file").files];
    clearError($("upload-error"));
    const bytes = formatBytes(files.reduce((n, f) => n + f.size, 0));
    setStatus($("upload-status"), files.length > 1
      ? `${files.length} files · ${bytes}`
      : files.length ? `${files[0].name} · ${bytes}` : "");
  });
  // Files dropped on the file field become the files to upload.
  dropTarget($("upload-drop"), (dropped) => {
    const files = new DataTransfer();
    for (const file of dropped) files.items.add(file);
    $("upload-file").files = files.files;
    $("upload-file").dispatchEvent(new Event("change"));
  }, true);
}
