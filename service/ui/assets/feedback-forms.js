// The Feedback page's two admin forms for one label set: "make a dataset" of its answers
// (POST /v1/datasets/from-feedback, then the job form of the Datasets page) and its feedback
// policy, keep images and auto-update (PUT /v1/label-sets/{name}, the rest sent back as it is).

import { ApiError, api } from "./api.js";
import { h, notify, shortId } from "./dom.js";
import { newJobForm } from "./jobs.js";

/** A 4xx the form explains itself (422: too few answers, a bad field) resolves to its message. */
async function orMessage(call) {
  try {
    return { value: await call() };
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) return { message: error.message };
    throw error; // withAdmin shows it (and forgets a refused key)
  }
}

export function datasetForm(set, ctx, refresh) {
  const policy = set.auto_update || {};
  const minPerClass = h("input", { type: "number", id: "fd-min-per-class", min: 1, max: 100000,
    value: policy.min_per_class ?? 5, required: true });
  const fraction = h("input", { type: "number", id: "fd-test-fraction", min: 0.01, max: 0.99,
    step: 0.01, value: policy.test_fraction ?? 0.2, required: true });
  const button = h("button", { type: "submit", class: "primary", id: "fd-submit" }, "Make a dataset");
  const result = h("div", { id: "fd-result" });
  const jobSlot = h("div");
  const form = h("form", { class: "panel admin-only", id: "feedback-dataset" },
    h("h2", {}, "Make a dataset"),
    h("p", { class: "muted small" }, `Every answered image of ${set.name} whose true label is ` +
      "one of its classes (the latest answer per image), in classes with at least the minimum; " +
      "split and checked like an upload."),
    h("label", {}, "Min per class ", minPerClass), h("label", {}, "Test fraction ", fraction),
    button, result, jobSlot);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    result.replaceChildren(h("span", { class: "muted" }, "building…"));
    jobSlot.replaceChildren();
    const out = await ctx.withAdmin(() => orMessage(() => api("datasets/from-feedback", {
      method: "POST", admin: true, body: { label_set: set.name,
        min_per_class: Number(minPerClass.value), test_fraction: Number(fraction.value) } })));
    button.disabled = false;
    if (!out) {
      result.replaceChildren();
      return;
    }
    if (out.message) {
      result.replaceChildren(h("p", { class: "error", id: "fd-error" }, out.message));
      return;
    }
    result.replaceChildren(...builtText(out.value, () => api("datasets", { signal: ctx.signal })
      .then((all) => jobSlot.replaceChildren(newJobForm(all, out.value.id, ctx,
        () => jobSlot.replaceChildren())))
      .catch((error) => ctx.signal.aborted || notify(error.message))));
    await refresh(); // its answers are no longer new
  });
  return form;
}

function builtText(d, openJobForm) {
  const perClass = Object.entries(d.per_class).map(([label, n]) => `${label} ${n}`).join(", ");
  return [
    h("p", { class: "built" }, d.created ? "made dataset " : "the same answers made dataset ",
      h("a", { href: "#/datasets", title: d.id }, d.name), " ",
      h("code", { id: "fd-dataset-id", dataset: { id: d.id } }, shortId(d.id)),
      d.created ? "" : " before",
      `: ${d.items} images (${perClass}); ${d.n_train} train / ${d.n_test} test`),
    d.skipped_labels.length ? h("p", { class: "muted small" }, "left out (a label that cannot " +
      `name a dataset class; rename it in the label set): ${d.skipped_labels.join(", ")}`) : "",
    h("button", { type: "button", class: "primary", id: "fd-new-job", onclick: openJobForm },
      "New job on it…"),
  ];
}

/** The policy as a sentence, for everyone (the form is for admins). */
function policyText(set) {
  const p = set.auto_update;
  const keep = set.keep_images ? "classify keeps its images by default" :
    "classify keeps images only when asked (keep=true)";
  if (!p) return `${keep}; no auto-update.`;
  const steps = p.hparams && p.hparams.steps ? `, ${p.hparams.steps} steps` : "";
  return `${keep}; an update (${p.method}${steps}) starts by itself once ${p.min_classes} ` +
    `classes each have ${p.min_per_class} new answers.`;
}

export function policyForm(set, ctx) {
  const current = set.auto_update || {};
  const summary = h("p", { id: "policy-summary" }, policyText(set));
  const keep = h("input", { type: "checkbox", id: "policy-keep", checked: set.keep_images });
  const auto = h("input", { type: "checkbox", id: "policy-auto", checked: Boolean(set.auto_update) });
  const minPerClass = h("input", { type: "number", id: "policy-min-per-class", min: 1, max: 100000,
    value: current.min_per_class ?? 20, required: true });
  const minClasses = h("input", { type: "number", id: "policy-min-classes", min: 2, max: 100000,
    value: current.min_classes ?? 2, required: true });
  const steps = h("input", { type: "number", id: "policy-steps", min: 1,
    value: (current.hparams || {}).steps ?? "", placeholder: "default" });
  const fields = h("fieldset", { class: "plain", disabled: !set.auto_update },
    h("label", {}, "Min new answers per class ", minPerClass),
    h("label", {}, "Min classes ", minClasses), h("label", {}, "Steps ", steps));
  auto.addEventListener("change", () => { fields.disabled = !auto.checked; });
  const button = h("button", { type: "submit", class: "primary", id: "policy-save" }, "Save policy");
  const form = h("form", { class: "admin-only", id: "feedback-policy" },
    h("label", {}, keep, " keep classified images for feedback by default"),
    h("div", {}, h("label", {}, auto, " start an update by itself when enough new answers arrive")),
    fields, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const stored = set.auto_update || {}; // as last saved: method, gate, other hparams kept
    const hparams = { ...(stored.hparams || {}) };
    if (steps.value) hparams.steps = Number(steps.value);
    else delete hparams.steps;
    // the label set is replaced as a whole: its labels, templates and source go back unchanged
    const body = { classnames: set.classnames, templates: set.templates, source: set.source,
      keep_images: keep.checked,
      auto_update: auto.checked ? { ...stored, min_per_class: Number(minPerClass.value),
        min_classes: Number(minClasses.value), hparams } : null };
    button.disabled = true;
    const saved = await ctx.withAdmin(() => api(`label-sets/${encodeURIComponent(set.name)}`,
      { method: "PUT", admin: true, body }));
    button.disabled = false;
    if (!saved) return;
    Object.assign(set, saved);
    summary.textContent = policyText(saved);
    notify(`saved the feedback policy of ${saved.name}`, "ok");
  });
  return h("div", { class: "panel", id: "feedback-policy-panel" },
    h("h2", {}, "Feedback policy"), summary, form);
}
