// The dashboard's shell: hash routes (#/jobs, #/jobs/<id>, #/models, #/datasets, #/try,
// #/feedback, #/feedback/<label set>), the keys, the served-version badge and the page-wide
// notice. Each page module exports render(section, args, ctx) and resolves once its data is
// fetched and drawn; the body then carries data-ready="<page>" ("job" for one job) and
// window.zsclReady the time since navigation (the test and ui_bench wait for it).

import { ApiError, keys, readiness } from "./api.js";
import { askKey, clearNotice, h, notify } from "./dom.js";
import * as datasets from "./datasets.js";
import * as feedback from "./feedback.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as tryIt from "./try.js";

const PAGES = { jobs, models, datasets, try: tryIt, feedback };
const main = document.getElementById("main");
let current = null;

function updateKeyState() {
  const admin = Boolean(keys.get("admin"));
  const read = Boolean(keys.get("read"));
  document.body.classList.toggle("admin", admin);
  document.getElementById("key-state").textContent =
    admin ? "admin" : read ? "read key" : "read-only";
  document.getElementById("admin-key-button").hidden = admin;
  document.getElementById("forget-keys").hidden = !(admin || read);
}

async function askAdminKey() {
  const key = await askKey("Admin key", "Uploads, jobs, cancels and activations need the " +
    "admin key (ZSCL_ADMIN_KEY). Without it the dashboard is read-only.");
  if (key) keys.set("admin", key);
  updateKeyState();
  return key;
}

/**
 * Run an admin action with the admin key (asked for once if missing). An API error shows the
 * API's message; a refused key (401/403) is forgotten, so the next action asks again.
 * Resolves with the action's result, or undefined if it did not succeed.
 */
async function withAdmin(action) {
  if (!keys.get("admin") && !(await askAdminKey())) return undefined;
  clearNotice();
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401 || error.status === 403) {
      keys.forget("admin");
      updateKeyState();
    }
    notify(error.message);
    return undefined;
  }
}

async function refreshServed() {
  const badge = document.getElementById("served");
  try {
    const ready = await readiness();
    badge.textContent = ready.status === "ready" ? `serving: ${ready.model_version}`
      : `serving: ${ready.status}${ready.detail ? ` (${ready.detail})` : ""}`;
    badge.dataset.version = ready.model_version || "";
  } catch {
    badge.textContent = "serving: unreachable";
    badge.dataset.version = "";
  }
}

function readKeyNeeded(section, error, retry) {
  document.getElementById("read-key-button").hidden = false;
  section.replaceChildren(h("div", { class: "panel" },
    h("p", { class: "error" }, error.message),
    h("p", {}, "This service needs a key to read its records (ZSCL_INFERENCE_KEY, or the admin key)."),
    h("button", { type: "button", class: "primary", onclick: async () => {
      const key = await askKey("Read key", "The inference key (or the admin key) of this service.");
      if (key) {
        keys.set("read", key);
        updateKeyState();
        retry();
      }
    } }, "Enter read key")));
}

async function route() {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const page = PAGES[name] ? name : "jobs";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  delete document.body.dataset.ready;
  const section = h("section", { class: `page page-${page}` }, h("p", { class: "muted" }, "loading…"));
  main.replaceChildren(section);
  const ctx = { signal: controller.signal, withAdmin, refreshServed, rerender: route,
    admin: () => Boolean(keys.get("admin")) };
  try {
    await PAGES[page].render(section, args, ctx);
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      readKeyNeeded(section, error, route);
    } else {
      section.replaceChildren(h("p", { class: "error" }, error.message || String(error)));
    }
  }
  if (controller.signal.aborted) return;
  const ready = page === "jobs" && args.length ? "job" : page;
  document.body.dataset.ready = ready;
  window.zsclReady = { page: ready, ms: performance.now() };
}

document.getElementById("admin-key-button").addEventListener("click", async () => {
  if (await askAdminKey()) route();
});
document.getElementById("read-key-button").addEventListener("click", async () => {
  const key = await askKey("Read key", "The inference key (or the admin key) of this service.");
  if (key) {
    keys.set("read", key);
    updateKeyState();
    route();
  }
});
document.getElementById("forget-keys").addEventListener("click", () => {
  keys.forget("admin");
  keys.forget("read");
  updateKeyState();
  route();
});
document.getElementById("notice-close").addEventListener("click", clearNotice);
window.addEventListener("hashchange", () => {
  clearNotice();
  route();
});

updateKeyState();
refreshServed();
setInterval(refreshServed, 5000);
route();
