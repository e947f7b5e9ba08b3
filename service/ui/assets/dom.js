// Small DOM helpers shared by the pages. Text always goes in as text (never as HTML), so a
// dataset or label name cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("a", {href: "#/jobs", class: "x"}, "text", child...) -> element */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

/** The same for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A progress bar (CSSOM width: the page's CSP forbids style attributes). */
export function progressBar(fraction, label) {
  const bar = h("span", { class: "bar-fill" });
  bar.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h("span", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 1,
    "aria-valuenow": fraction.toFixed(4), title: label }, bar);
}

export const shortId = (id) => (id && id.length > 12 ? id.slice(0, 12) : id ?? "—");

/** An id (a version, job or dataset) on one line, in monospace; `short`: its first 12
 * characters, the whole id in its title. */
export function idCode(id, { short = false, ...attrs } = {}) {
  if (!id) return "—";
  return h("code", { class: "id", title: id, ...attrs }, short ? shortId(id) : id);
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const fmtNumber = (value, digits = 2) =>
  typeof value === "number" ? value.toFixed(digits) : value ?? "—";

export function fmtSigned(value, digits = 2) {
  if (typeof value !== "number") return "—";
  return `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
}

export const TERMINAL = new Set(["succeeded", "rejected", "failed", "cancelled"]);

export const stateBadge = (state) => h("span", { class: `badge state-${state}` }, state);

// -- the page-wide notice, the confirm dialog and the key dialog ----------------------------

/** Show a message under the header until dismissed or replaced; kind: "error" | "ok". */
export function notify(message, kind = "error") {
  const box = document.getElementById("notice");
  box.className = `notice-${kind}`;
  document.getElementById("notice-text").textContent = message;
  box.hidden = false;
}

export function clearNotice() {
  document.getElementById("notice").hidden = true;
}

/** Resolves true when the user confirms. */
export function confirmDialog(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

/** Ask for a key; resolves with it, or null if cancelled. */
export function askKey(title, help) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-title").textContent = title;
  document.getElementById("key-help").textContent = help;
  input.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    const cancel = document.getElementById("key-cancel");
    const onCancel = () => dialog.close("");
    cancel.addEventListener("click", onCancel, { once: true });
    dialog.addEventListener("close", () => {
      cancel.removeEventListener("click", onCancel);
      const value = input.value;
      input.value = "";
      resolve(dialog.returnValue === "ok" && value ? value : null);
    }, { once: true });
  });
}

/** A drop zone with a file input inside (click to choose, or drop files on it). */
export function dropZone({ label, accept, multiple = false, onFiles, id }) {
  const input = h("input", { type: "file", accept, multiple, id, class: "drop-input",
    onchange: () => input.files.length && onFiles([...input.files]) });
  const zone = h("label", { class: "drop", for: id }, h("span", {}, label), input);
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = [...event.dataTransfer.files];
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  });
  return zone;
}
