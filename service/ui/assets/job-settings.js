// A job's settings as tables: the hyper-parameters it runs with and the gate policy that
// decides its promotion, each value marked where it is the default rather than a choice.
//
// The job record stores every hyper-parameter, defaults filled in when the job was submitted
// (service.updates.job_settings), but the gate policy only as sent; the policy the gate
// applied, every field, is in the report once the job is evaluated. The defaults themselves
// come from the API's own OpenAPI document (JobIn's hparams and gate fields are generated
// from zscl_core.UpdateConfig and GatePolicy), so this page never keeps a copy of them.

import { api } from "./api.js";
import { TERMINAL, h } from "./dom.js";

/** What a null stands for, per field (UpdateConfig's and GatePolicy's docstrings). */
const NULL_MEANS = {
  ref_batch_size: "same as batch_size",
  warmup_steps: "min(100, steps // 10)",
  max_grad_norm: "off (no clipping)",
  max_drift: "off (not checked)",
};

/** Defaults computed from other fields: UpdateConfig.warmup (a null warmup_steps). */
const DERIVED = {
  warmup_steps: (values) => Math.min(100, Math.floor(values.steps / 10)),
};

let defaults = null;

/**
 * {hparams, gate}: each field's default, read once from /openapi.json; empty objects if the
 * document cannot be read (the tables then mark nothing as a default).
 */
export function settingDefaults() {
  defaults ||= api("../openapi.json").then((doc) => {
    const fields = doc.components.schemas.JobIn.properties;
    const of = (name) => Object.fromEntries(Object.entries(fields[name].properties || {})
      .map(([field, schema]) => [field, schema.default ?? null]));
    return { hparams: of("hparams"), gate: of("gate") };
  }).catch(() => {
    defaults = null; // try again on the next job page
    return { hparams: {}, gate: {} };
  });
  return defaults;
}

/** The hyper-parameters table and the gate policy table of `job`. */
export function settingsTables(job, known) {
  return [hparamsPanel(job.hparams || {}, known.hparams), gatePanel(job, known.gate)];
}

function hparamsPanel(hparams, fallback) {
  const names = ordered(fallback, hparams);
  const rows = names.map((name) => {
    const value = name in hparams ? hparams[name] : fallback[name];
    const derived = DERIVED[name] && fallback[name] === null ? DERIVED[name](hparams) : undefined;
    const isDefault = name in fallback && (same(value, fallback[name]) || same(value, derived));
    return { name, value, isDefault, why: derived !== undefined && isDefault
      ? `the default: ${NULL_MEANS[name]}` : "UpdateConfig's default" };
  });
  // two name / value column pairs, read down the first then the second: half the height
  const half = Math.ceil(rows.length / 2);
  const body = rows.slice(0, half).map((row, i) =>
    h("tr", {}, cells(row), rows[half + i] ? cells(rows[half + i]) : h("td", { colspan: 2 })));
  return h("section", { class: "panel settings-panel" },
    h("h3", {}, "Hyper-parameters ", h("span", { class: "muted small" }, Object.keys(fallback).length
      ? `${rows.filter((r) => !r.isDefault).length} set, the rest UpdateConfig's defaults`
      : "(the defaults could not be read from /openapi.json)")),
    h("table", { class: "kv", id: "hparams-table" }, h("tbody", {}, body)));
}

function gatePanel(job, fallback) {
  const sent = job.gate || {};
  const applied = job.report && job.report.policy && Object.keys(job.report.policy).length
    ? job.report.policy : null;
  const values = applied || { ...fallback, ...sent };
  const rows = ordered(fallback, values).map((name) => ({ name, value: values[name],
    isDefault: !(name in sent), why: "not sent: GatePolicy's default" }));
  const status = applied ? "applied by the gate"
    : TERMINAL.has(job.state) ? "never applied: the job ended before its evaluation"
      : "to be applied when training ends";
  return h("section", { class: "panel settings-panel" },
    h("h3", {}, "Gate policy ", h("span", { class: "muted small", id: "gate-policy-status" }, status)),
    h("table", { class: "kv", id: "gate-policy-table", dataset: { applied: Boolean(applied) } },
      h("tbody", {}, rows.map((row) => h("tr", {}, cells(row))))));
}

/** The fields in their dataclass's order, then any the defaults do not know. */
const ordered = (fallback, values) =>
  [...Object.keys(fallback), ...Object.keys(values).filter((k) => !(k in fallback))];

const same = (a, b) => a === b || (typeof a === "number" && typeof b === "number"
  && Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)));

function cells({ name, value, isDefault, why }) {
  const shown = value === null || value === undefined ? NULL_MEANS[name] || "none" : String(value);
  return [h("th", { scope: "row" }, name),
    h("td", { class: isDefault ? "default" : "set", title: isDefault ? why : "set for this job",
      dataset: { field: name, default: isDefault } },
    h("span", { class: "value" }, shown), isDefault ? h("span", { class: "tag" }, "default") : "")];
}
