// Datasets: the list (classes, split sizes, suite flag); for admin, drag-and-drop upload (the
// API's 4xx message shown as it is), the suite toggle and "new job" on a dataset. An action
// the API would refuse is not offered: a dataset a job trained on cannot become a suite, and a
// suite stays one while any job is not over (every gate scores every suite).

import { api } from "./api.js";
import { dropZone, fmtTime, h, idCode, notify, shortId } from "./dom.js";
import { newJobForm } from "./jobs.js";

const TYPES = [[/\.zip$/i, "application/zip"], [/\.(tar\.gz|tgz)$/i, "application/gzip"],
  [/\.tar$/i, "application/x-tar"]];

const contentType = (file) =>
  (TYPES.find(([pattern]) => pattern.test(file.name)) || [])[1] || file.type || "application/octet-stream";

const nameOf = (file) =>
  file.name.replace(/\.(zip|tar|tar\.gz|tgz)$/i, "").replace(/[^A-Za-z0-9_.:-]+/g, "-").slice(0, 128) || "dataset";

const JOB_PAGE = 500; // the API's largest page of jobs
const OVER = new Set(["succeeded", "rejected", "failed", "cancelled"]); // records.tables.TERMINAL_STATES

/** What records.datasets.set_suite refuses, from every job: the ids of the datasets some job
 * used, whatever its state (never a suite), and a job not over yet, if any (no suite unmarked). */
async function jobFacts(signal) {
  const trained = new Set();
  let active = null;
  for (let offset = 0; ; offset += JOB_PAGE) {
    const jobs = await api(`jobs?limit=${JOB_PAGE}&offset=${offset}`, { signal });
    jobs.forEach((job) => {
      trained.add(job.dataset_id);
      if (!active && !OVER.has(job.state)) active = job;
    });
    if (jobs.length < JOB_PAGE) return { trained, active };
  }
}

export async function render(section, _args, ctx) {
  const [datasets, jobs] = await Promise.all([api("datasets", { signal: ctx.signal }),
    jobFacts(ctx.signal)]);
  const formSlot = h("div");
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Datasets"),
      h("span", { class: "muted" }, `${datasets.length} datasets`)),
    uploadPanel(ctx),
    formSlot,
    h("table", { class: "list", id: "datasets-table" },
      h("thead", {}, h("tr", {}, ["Name", "Id", "Classes", "Train", "Test", "Gate images", "Split",
        "Suite", "Uploaded", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, datasets.length ? datasets.map((d) => datasetRow(d, datasets, jobs, formSlot, ctx))
        : h("tr", {}, h("td", { colspan: 10, class: "muted" }, "no datasets yet")))));
}

function datasetRow(d, all, jobs, formSlot, ctx) {
  const classes = d.classnames.length > 4
    ? h("details", {}, h("summary", {}, `${d.classnames.length}: ${d.classnames.slice(0, 3).join(", ")}, …`),
      d.classnames.join(", "))
    : `${d.classnames.length}: ${d.classnames.join(", ")}`;
  const why = !d.is_suite && jobs.trained.has(d.id)
    ? "a job trained on this dataset: a zero-shot suite must never be trained on; upload " +
      "another dataset as the suite"
    : d.is_suite && jobs.active
      ? `job ${shortId(jobs.active.id)} (${jobs.active.state}) may evaluate this suite: every gate ` +
        "scores every suite; unmark it once the job has ended, or cancel the job"
      : null;
  const refused = why !== null;
  const toggle = h("button", { type: "button", class: "admin-only", disabled: refused, title: why,
    dataset: { suite: d.id }, onclick: () => ctx.withAdmin(async () => {
      await api(`datasets/${d.id}/suite`, { method: "PUT", body: { suite: !d.is_suite }, admin: true });
      await ctx.rerender();
      notify(`${d.name} is ${d.is_suite ? "no longer" : "now"} a suite`, "ok");
    }) }, d.is_suite ? "Unmark suite" : "Mark as suite");
  const train = !d.is_suite && d.n_train > 0 ? h("button", { type: "button", class: "admin-only primary",
    dataset: { newJob: d.id }, onclick: () => {
      formSlot.replaceChildren(newJobForm(all, d.id, ctx, () => formSlot.replaceChildren()));
      formSlot.scrollIntoView();
    } }, "New job…") : "";
  return h("tr", { dataset: { dataset: d.id, name: d.name } },
    h("td", {}, d.name), h("td", {}, idCode(d.id, { short: true, title: `${d.id}\nsha256 ${d.sha256}` })),
    h("td", { class: "small" }, classes), h("td", {}, d.n_train), h("td", {}, d.n_test),
    h("td", {}, d.n_eval), h("td", {}, d.split),
    h("td", {}, d.is_suite ? h("span", { class: "badge suite" }, "suite") : "—"),
    h("td", {}, fmtTime(d.created_at)),
    // a disabled button gets no hover: its wrapper shows why (style.css)
    h("td", { class: "actions" }, train, why ? h("span", { class: "why", title: why }, toggle) : toggle));
}

function uploadPanel(ctx) {
  let file = null;
  const chosen = h("span", { class: "muted", id: "upload-file" });
  const name = h("input", { type: "text", id: "upload-name", required: true, maxlength: 128,
    pattern: "[A-Za-z0-9_.:\\-]+", placeholder: "name" });
  const suite = h("input", { type: "checkbox", id: "upload-suite" });
  const fraction = h("input", { type: "number", id: "upload-fraction", min: 0.01, max: 0.99,
    step: 0.01, value: 0.2 });
  const button = h("button", { type: "submit", class: "primary", id: "upload-button", disabled: true }, "Upload");
  const zone = dropZone({ id: "upload-input", accept: ".zip,.tar,.tar.gz,.tgz",
    label: "Drop a .zip / .tar / .tar.gz here, or click to choose: <class>/<image> folders, " +
      "or train/ and test/ folders (a suite: test/<class>/<image>)",
    onFiles: ([f]) => {
      file = f;
      chosen.textContent = `${f.name} (${(f.size / 1024).toFixed(0)} KiB)`;
      if (!name.value) name.value = nameOf(f);
      button.disabled = false;
    } });
  const form = h("form", { class: "panel admin-only", id: "upload" }, h("h2", {}, "Upload a dataset"), zone,
    chosen, " ",
    h("label", {}, "Name ", name), h("label", {}, suite, " zero-shot suite (gated, never trained on)"),
    h("label", {}, "Test fraction ", fraction), button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file) return;
    const query = new URLSearchParams({ name: name.value, suite: String(suite.checked),
      test_fraction: fraction.value });
    button.disabled = true;
    button.textContent = "uploading…";
    const response = await ctx.withAdmin(() => api(`datasets?${query}`, { method: "POST", body: file,
      headers: { "Content-Type": contentType(file) }, admin: true, raw: true }));
    button.disabled = false;
    button.textContent = "Upload";
    if (!response) return; // the API's message is on screen; nothing was stored
    const d = await response.json();
    await ctx.rerender();
    notify(response.status === 201
      ? `uploaded ${d.name}: ${d.classnames.length} classes, ${d.n_train} train / ${d.n_test} test images`
      : `the same content was uploaded before, as ${d.name} (${shortId(d.id)})`, "ok");
  });
  return form;
}
