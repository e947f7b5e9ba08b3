// Jobs: the list (state, progress, ETA), one job live over its event stream (its settings,
// progress, loss curves, then the gate report), cancel, and the form that starts a job (also
// used by the datasets page).

import { api, followJob } from "./api.js";
import { gateChart, lossCharts } from "./charts.js";
import { TERMINAL, fmtDuration, fmtNumber, fmtSigned, fmtTime, h, idCode, notify, progressBar,
  stateBadge } from "./dom.js";
import { settingDefaults, settingsTables } from "./job-settings.js";

const METHODS = ["zscl", "continual_ft", "lwf", "wise_ft", "zscl_no_avg", "zscl_no_distill"];
const PAGE = 100;
const POLL_MS = 2000;

export async function render(section, args, ctx) {
  return args[0] ? renderJob(section, args[0], ctx) : renderList(section, ctx);
}

// -- the list ------------------------------------------------------------------------------

async function renderList(section, ctx) {
  let limit = PAGE;
  let names = {};
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true, onclick: () => {
    limit = Math.min(limit + PAGE, 500);
    refresh();
  } }, "Show older jobs");
  const formSlot = h("div");
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"),
      h("button", { type: "button", class: "admin-only primary", onclick: () =>
        api("datasets", { signal: ctx.signal }).then((all) =>
          formSlot.replaceChildren(newJobForm(all, null, ctx, () => formSlot.replaceChildren())))
          .catch((error) => ctx.signal.aborted || notify(error.message)) }, "New job…")),
    formSlot,
    h("table", { class: "list", id: "jobs-table" }, h("thead", {}, h("tr", {},
      ["Job", "Dataset", "Method", "State", "Progress", "ETA", "Created", "Result"].map((t) => h("th", {}, t)))),
    body),
    more);

  async function refresh() {
    const [jobs, datasets] = await Promise.all([
      api(`jobs?limit=${limit}`, { signal: ctx.signal }),
      Object.keys(names).length ? null : api("datasets", { signal: ctx.signal }),
    ]);
    if (datasets) names = Object.fromEntries(datasets.map((d) => [d.id, d.name]));
    body.replaceChildren(...jobs.map((job) => jobRow(job, names)));
    if (!jobs.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no jobs yet")));
    more.hidden = jobs.length < limit || limit >= 500;
    if (jobs.some((job) => !TERMINAL.has(job.state))) {
      setTimeout(() => ctx.signal.aborted || refresh().catch(() => {}), POLL_MS);
    }
  }
  await refresh();
}

function jobRow(job, names) {
  const running = !TERMINAL.has(job.state);
  return h("tr", { dataset: { job: job.id, state: job.state } },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, idCode(job.id, { short: true }))),
    h("td", {}, names[job.dataset_id] || idCode(job.dataset_id, { short: true }), startedBy(job, "div", "muted small", "started by ")),
    h("td", {}, job.method),
    h("td", {}, stateBadge(job.state)),
    h("td", {}, progressBar(job.progress, `${job.step}/${job.total_steps}`),
      h("span", { class: "muted small" }, ` ${job.step}/${job.total_steps}`)),
    h("td", {}, running ? fmtDuration(job.eta_s) : "—"),
    h("td", {}, fmtTime(job.created_at)),
    h("td", {}, resultText(job)));
}

/** "started by label set X's feedback" for a job its label set's auto-update policy created. */
function startedBy(job, tag, look = "", prefix = "") {
  const trigger = job.trigger;
  if (!trigger || trigger.kind !== "auto-update") return null;
  const name = String(trigger.label_set);
  return h(tag, { class: `started-by ${look}` }, `${prefix}label set `,
    h("a", { href: `#/feedback/${encodeURIComponent(name)}` }, name), "'s feedback",
    typeof trigger.items === "number" ? ` (${trigger.items} answers)` : "");
}

function resultText(job) {
  if (job.state === "succeeded") return h("span", {}, "promoted ", idCode(job.candidate_version));
  if (job.state === "rejected") return `rejected: ${(job.report.reasons || []).length} reason(s)`;
  if (job.state === "failed") return job.error ? `${job.error.type}` : "failed";
  return "";
}

// -- one job -------------------------------------------------------------------------------

async function allEvents(jobId, signal) {
  const events = [];
  let after = 0;
  for (;;) {
    const page = await api(`jobs/${jobId}/events?after=${after}&limit=1000`, { signal });
    events.push(...page.events);
    if (page.events.length < 1000) return { events, after: page.next_after };
    after = page.next_after;
  }
}

async function renderJob(section, jobId, ctx) {
  const [initial, history, datasets, defaults] = await Promise.all([
    api(`jobs/${jobId}`, { signal: ctx.signal }),
    allEvents(jobId, ctx.signal),
    api("datasets", { signal: ctx.signal }),
    settingDefaults(),
  ]);
  let job = initial;
  const dataset = datasets.find((d) => d.id === job.dataset_id);
  const series = {};
  const addProgress = (data) => {
    for (const [name, value] of Object.entries(data.losses || {})) {
      if (typeof value === "number") (series[name] ||= []).push([data.step, value]);
    }
  };
  history.events.filter((e) => e.kind === "progress").forEach((e) => addProgress(e.data));

  const badge = h("span", { id: "job-state" });
  const cancel = h("button", { type: "button", class: "admin-only danger", id: "cancel-job",
    onclick: () => ctx.withAdmin(async () => {
      job = await api(`jobs/${jobId}/cancel`, { method: "POST", admin: true });
      notify(`cancel requested: the job is ${job.state}`, "ok");
      draw();
    }) }, "Cancel job");
  const summary = h("dl", { class: "summary" });
  const settings = h("div", { class: "settings", id: "job-settings" });
  const progress = h("div", { class: "progress-line", id: "job-progress" });
  const chart = h("div", { id: "loss-chart" });
  const gate = h("div", { id: "gate" });
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Job ", idCode(jobId)), badge, cancel),
    summary, h("h2", {}, "Settings"), settings, h("h2", {}, "Progress"), progress, h("h2", {}, "Losses"), chart,
    h("h2", {}, "Gate report"), gate);

  function draw() {
    badge.replaceChildren(stateBadge(job.state));
    cancel.hidden = TERMINAL.has(job.state);
    summary.replaceChildren(...[
      ["dataset", dataset ? [dataset.name, " ", idCode(dataset.id, { short: true })]
        : idCode(job.dataset_id)],
      ["method", job.method],
      job.trigger ? ["started by", startedBy(job, "span") ||
        h("code", { class: "json" }, JSON.stringify(job.trigger))] : null,
      ["served when it started", idCode(job.base_version)],
      ["candidate", idCode(job.candidate_version, { id: "job-candidate" })],
      ["created / started / finished",
        `${fmtTime(job.created_at)} / ${fmtTime(job.started_at)} / ${fmtTime(job.finished_at)}`],
    ].filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    settings.replaceChildren(...settingsTables(job, defaults));
    progress.replaceChildren(progressBar(job.progress, `${job.step}/${job.total_steps}`),
      h("span", { class: "progress-text" },
        ` step ${job.step} of ${job.total_steps} (${(job.progress * 100).toFixed(0)}%)`,
        TERMINAL.has(job.state) ? "" : ` · ETA ${fmtDuration(job.eta_s)}`));
    chart.replaceChildren(lossCharts(series, job.total_steps));
    gate.replaceChildren(...gateReport(job));
  }
  draw();

  if (!TERMINAL.has(job.state)) {
    let pending = false;
    const redraw = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        draw();
      });
    };
    followJob(jobId, history.after, (event) => {
      if (event.kind === "progress") {
        addProgress(event.data);
        const { step, total, eta_s: eta, losses } = event.data;
        job = { ...job, step, total_steps: total, eta_s: eta, losses,
          progress: total ? step / total : 0 };
      } else if (event.kind === "state") {
        job = { ...job, state: event.data.state };
        // started_at, base_version and the like come with a state change: read them
        api(`jobs/${jobId}`, { signal: ctx.signal }).then((fresh) => {
          job = fresh.step >= job.step ? fresh
            : { ...fresh, step: job.step, progress: job.progress, eta_s: job.eta_s };
          redraw();
        }).catch(() => {});
      }
      redraw();
    }, ctx.signal).then(async () => {
      job = await api(`jobs/${jobId}`, { signal: ctx.signal }); // the report, the candidate
      draw();
      setTimeout(ctx.refreshServed, 1500); // API processes follow a promotion within a second
    }).catch((error) => {
      if (!ctx.signal.aborted) notify(`the job's event stream stopped: ${error.message}`);
    });
  }
}

/** The gate's verdict: a table (dataset, kind, before, after, delta, pass/fail) and bars. */
function gateReport(job) {
  const report = job.report || {};
  const out = [];
  if (job.error) {
    out.push(h("p", { class: "error" }, `${job.error.type}: ${job.error.message}`));
  }
  if (!report.rows || !report.rows.length) {
    out.push(h("p", { class: "muted" }, TERMINAL.has(job.state)
      ? "no gate report (the job ended before its evaluation)"
      : "The gate compares the served model and the candidate when training ends."));
    return out;
  }
  const reasons = report.reasons || [];
  const policy = report.policy || {};
  const rows = report.rows.map((row) => {
    const failed = row.kind === "new_task"
      ? row.delta - row.margin <= (policy.min_new_task_gain ?? 0)
      : -row.delta - row.margin > (policy.max_dataset_drop ?? Infinity);
    const reason = reasons.find((r) => r.includes(`'${row.dataset}'`) &&
      (row.kind === "new_task" ? r.startsWith("new task") : r.startsWith(row.kind)));
    return { ...row, failed, reason };
  });
  const verdict = report.passed && !report.superseded
    ? h("p", { class: "verdict pass" }, "passed", job.candidate_version
      ? h("span", {}, ": promoted as ", idCode(job.candidate_version)) : "")
    : h("p", { class: "verdict fail" }, report.passed ? "passed, not promoted" : "rejected");
  out.push(verdict, h("table", { class: "list", id: "gate-table" },
    h("thead", {}, h("tr", {}, ["Dataset", "Kind", "Images", "Before", "After", "Delta", "Result"]
      .map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((row) => h("tr", { class: row.failed ? "fail" : "pass" },
      h("td", {}, row.dataset), h("td", {}, row.kind), h("td", {}, row.n),
      h("td", {}, fmtNumber(row.before)), h("td", {}, fmtNumber(row.after)),
      h("td", {}, `${fmtSigned(row.delta)} ± ${fmtNumber(row.margin)}`),
      h("td", {}, row.failed ? `fail: ${row.reason || "outside the policy"}` : "pass"))))));
  out.push(gateChart(rows));
  const others = reasons.filter((r) => !rows.some((row) => row.reason === r));
  if (report.superseded) others.push(report.superseded);
  if (others.length) out.push(h("ul", { class: "reasons" }, others.map((r) => h("li", {}, r))));
  out.push(h("p", { class: "muted small" },
    `mean drop ${fmtNumber(report.mean_drop)} ± ${fmtNumber(report.mean_drop_margin)} points` +
    (report.drift !== null && report.drift !== undefined ? ` · drift ${fmtNumber(report.drift, 4)}` : "")));
  return out;
}

// -- starting a job ------------------------------------------------------------------------

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function parseJSON(text, what) {
  try {
    const value = JSON.parse(text || "{}");
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
  throw new Error(`${what} must be a JSON object, e.g. {"steps": 200}`);
}

/** A form that POSTs /v1/jobs, then opens the new job's page. */
export function newJobForm(datasets, selectedId, ctx, onClose) {
  const trainable = datasets.filter((d) => !d.is_suite && d.n_train > 0);
  const idempotency = randomKey(); // one form, one job: a double click does not start two
  const dataset = h("select", { name: "dataset", id: "job-dataset" }, trainable.map((d) =>
    h("option", { value: d.id, selected: d.id === selectedId }, `${d.name} (${d.classnames.length} classes, ${d.n_train} train)`)));
  const method = h("select", { name: "method", id: "job-method" }, METHODS.map((m) => h("option", { value: m }, m)));
  const hparams = h("textarea", { name: "hparams", id: "job-hparams", rows: 3 }, '{"steps": 200, "batch_size": 16}');
  const gatePolicy = h("textarea", { name: "gate", id: "job-gate", rows: 2 }, "{}");
  const form = h("form", { class: "panel admin-only", id: "new-job" },
    h("h2", {}, "New job"),
    trainable.length ? "" : h("p", { class: "error" }, "no dataset with a train split: upload one first"),
    h("label", {}, "Dataset ", dataset), h("label", {}, "Method ", method),
    h("label", { class: "wide" }, "Hyper-parameters (zscl_core.UpdateConfig, JSON) ", hparams),
    h("label", { class: "wide" }, "Gate policy (zscl_core.GatePolicy, JSON) ", gatePolicy),
    h("menu", {}, h("button", { type: "button", onclick: onClose }, "Close"),
      h("button", { type: "submit", class: "primary", id: "job-submit" }, "Start job")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = { dataset_id: dataset.value, method: method.value,
        hparams: parseJSON(hparams.value, "hyper-parameters"), gate: parseJSON(gatePolicy.value, "gate policy"),
        idempotency_key: idempotency };
    } catch (error) {
      notify(error.message);
      return;
    }
    const job = await ctx.withAdmin(() => api("jobs", { method: "POST", body, admin: true }));
    if (job) location.hash = `#/jobs/${job.id}`;
  });
  return form;
}
