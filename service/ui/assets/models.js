// Models: every version as a lineage tree (parent -> child), its method, dataset and metrics,
// which one is served; activate or roll back (admin, after a confirm dialog).

import { api } from "./api.js";
import { confirmDialog, fmtNumber, fmtTime, h, idCode, notify } from "./dom.js";

export async function render(section, _args, ctx) {
  const models = await api("models", { signal: ctx.signal });
  const served = models.versions.find((v) => v.serving);
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Models"),
      h("span", { class: "muted" }, `${models.versions.length} versions · serving `,
        models.serving ? idCode(models.serving, { id: "serving-version" })
          : h("code", { id: "serving-version" }, "none"),
        ` (generation ${models.generation})`,
        models.loaded && models.loaded !== models.serving
          ? ` · this process still has ${models.loaded} loaded` : "")),
    h("table", { class: "list", id: "models-table" },
      h("thead", {}, h("tr", {}, ["Version", "Method", "Dataset", "Source", "Created", "Metrics", "", ""]
        .map((t) => h("th", {}, t)))),
      h("tbody", {}, lineageOrder(models.versions).map(({ version, depth }) =>
        modelRow(version, depth, served, ctx)))));
}

/**
 * Versions depth first from each root, children oldest first: a tree in table rows. A chain of
 * promotions stays at one indent (each row is the child of the row above it); the indent grows
 * only where a version has several children, so a branch shows and a long lineage fits.
 */
function lineageOrder(versions) {
  const ids = new Set(versions.map((v) => v.id));
  const children = new Map();
  for (const v of versions) {
    const parent = v.parent && ids.has(v.parent) ? v.parent : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(v);
  }
  for (const list of children.values()) list.sort((a, b) => a.created_at.localeCompare(b.created_at));
  const out = [];
  const stack = (children.get(null) || []).slice().reverse().map((version) => ({ version, depth: 0 }));
  while (stack.length) { // iterative: a 50-version chain is 50 levels deep
    const item = stack.pop();
    out.push(item);
    const kids = children.get(item.version.id) || [];
    const depth = item.depth + (item.depth === 0 || kids.length > 1 ? 1 : 0);
    for (let i = kids.length - 1; i >= 0; i -= 1) stack.push({ version: kids[i], depth });
  }
  return out;
}

function datasetOf(version) {
  const report = version.report || {};
  const row = (report.rows || []).find((r) => r.kind === "new_task");
  return report.dataset || (row && row.dataset) || "—";
}

function metricsText(metrics) {
  if (typeof metrics.new_task_before === "number") {
    return [`new task ${fmtNumber(metrics.new_task_before, 1)} → ${fmtNumber(metrics.new_task_after, 1)}`,
      typeof metrics.mean_drop === "number" ? `mean drop ${fmtNumber(metrics.mean_drop)}` : null,
      typeof metrics.drift === "number" ? `drift ${fmtNumber(metrics.drift, 4)}` : null]
      .filter(Boolean).join(" · ");
  }
  const numbers = Object.entries(metrics).filter(([, v]) => typeof v === "number").slice(0, 4);
  return numbers.map(([k, v]) => `${k} ${fmtNumber(v)}`).join(" · ") || "—";
}

function modelRow(version, depth, served, ctx) {
  const indent = h("span", { class: "indent" }, depth ? "└ " : "");
  indent.style.paddingLeft = `${Math.max(0, Math.min(depth - 1, 12)) * 1.2}em`;
  const rollback = Boolean(served && served.lineage.includes(version.id));
  const action = version.serving ? "" : h("button", { type: "button", class: "admin-only",
    dataset: { activate: version.id },
    onclick: (event) => activate(event.currentTarget, version, served, rollback, ctx) },
  rollback ? "Roll back to this" : "Activate");
  const lineage = version.lineage.length ? `ancestors: ${version.lineage.join(" ← ")}` : "a root";
  return h("tr", { dataset: { version: version.id }, class: version.serving ? "serving" : "" },
    h("td", { class: "nowrap", title: lineage },
      indent, idCode(version.id, { title: `${version.id}\n${lineage}` })),
    h("td", {}, version.method || "—"),
    h("td", {}, datasetOf(version)),
    h("td", {}, version.source || (version.report || {}).name || "—"),
    h("td", { class: "nowrap" }, fmtTime(version.created_at)),
    h("td", { class: "small" }, metricsText(version.metrics || {})),
    h("td", {}, version.serving ? h("span", { class: "badge served-badge" }, "served") : ""),
    h("td", {}, action));
}

async function activate(button, version, served, rollback, ctx) {
  const verb = rollback ? "Roll back to" : "Activate";
  const ok = await confirmDialog(`${verb} ${version.id}? It will answer every classify request ` +
    `instead of ${served ? served.id : "nothing"} once it is loaded and warmed.`);
  if (!ok) return;
  button.disabled = true;
  button.textContent = "loading…";
  const out = await ctx.withAdmin(() => api(`models/${encodeURIComponent(version.id)}/activate`,
    { method: "POST", admin: true }));
  if (out) {
    await ctx.rerender();
    notify(`now serving ${out.version} (was ${out.previous || "nothing"}, generation ${out.generation})`, "ok");
    ctx.refreshServed();
  } else {
    button.disabled = false;
    button.textContent = verb === "Activate" ? "Activate" : "Roll back to this";
  }
}
