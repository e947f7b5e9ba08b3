// Try it: drop images, type labels or pick a label set, see the ranked labels with their
// probabilities and the version that answered (X-Model-Version). With "keep for feedback" each
// image gets a prediction id, and its true label can be sent back (POST /v1/feedback): a
// confirmation or a correction, which may start the label set's auto-update.

import { ApiError, VERSION_HEADER, api } from "./api.js";
import { dropZone, h, notify, progressBar, shortId } from "./dom.js";

export async function render(section, _args, ctx) {
  const sets = await api("label-sets", { signal: ctx.signal });
  let files = [];
  const previews = h("div", { class: "thumbs", id: "try-thumbs" });
  const labels = h("input", { type: "text", id: "try-labels", placeholder: "cat, dog, car, airplane",
    size: 48 });
  const labelSet = h("select", { id: "try-label-set" }, h("option", { value: "" }, "— or pick a label set —"),
    sets.map((s) => h("option", { value: s.name }, `${s.name} (${s.classnames.length} labels)`)));
  const topK = h("input", { type: "number", id: "try-top-k", min: 1, max: 50, value: 5 });
  const keep = h("input", { type: "checkbox", id: "try-keep" });
  const button = h("button", { type: "submit", class: "primary", id: "try-button", disabled: true }, "Classify");
  const results = h("div", { id: "try-results" });
  const zone = dropZone({ id: "try-input", accept: "image/*", multiple: true,
    label: "Drop one or more images here, or click to choose",
    onFiles: (chosen) => {
      files = chosen;
      previews.replaceChildren(...files.map((f) => thumb(f)));
      button.disabled = false;
    } });
  labelSet.addEventListener("change", () => {
    labels.disabled = Boolean(labelSet.value);
    // a label set that keeps its images by default: the box shows it (unchecked sends keep=false)
    keep.checked = Boolean(sets.find((s) => s.name === labelSet.value)?.keep_images);
  });
  const form = h("form", { class: "panel", id: "try-form" }, zone, previews,
    h("label", { class: "wide" }, "Labels (comma-separated) ", labels),
    h("label", {}, labelSet), h("label", {}, "Top ", topK),
    h("label", { title: "each image gets a prediction id: send its true label back" }, keep,
      " keep for feedback"), button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    for (const f of files) body.append("images", f, f.name);
    if (labelSet.value) body.append("label_set", labelSet.value);
    else body.append("labels", labels.value);
    body.append("top_k", topK.value);
    body.append("keep", String(keep.checked));
    const set = sets.find((s) => s.name === labelSet.value);
    const choices = set ? set.classnames : requestLabels(labels.value);
    button.disabled = true;
    try {
      const response = await api("classify", { method: "POST", body, raw: true });
      const answer = await response.json();
      showResults(results, answer, response.headers.get(VERSION_HEADER), files,
        { choices, labelSet: set ? set.name : null, asked: keep.checked });
    } catch (error) {
      results.replaceChildren();
      notify(error.message);
    } finally {
      button.disabled = false;
    }
  });
  section.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Try it")), form, results);
}

function thumb(file) {
  const img = h("img", { alt: file.name, src: URL.createObjectURL(file) });
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  return h("figure", { class: "thumb" }, img, h("figcaption", {}, file.name));
}

/** The labels as the API reads the field: a JSON array, or comma-separated. */
function requestLabels(text) {
  const value = text.trim();
  if (value.startsWith("[")) {
    try {
      return JSON.parse(value).map((l) => String(l).trim());
    } catch {
      return [];
    }
  }
  return value.split(",").map((l) => l.trim()).filter(Boolean);
}

function showResults(target, answer, headerVersion, files, feedback) {
  const byName = new Map(files.map((f) => [f.name, f]));
  target.replaceChildren(
    h("p", { class: "answered" }, "answered by version ",
      h("code", { id: "try-version" }, headerVersion || answer.model_version),
      ` in ${answer.time_ms.toFixed(0)} ms`),
    ...answer.results.map((result) => h("div", { class: "result", dataset: { image: result.image } },
      byName.has(result.image) ? thumb(byName.get(result.image)) : h("strong", {}, result.image),
      h("div", {}, h("ol", { class: "ranked" }, result.labels.map((l) => h("li", { dataset: { label: l.label } },
        h("span", { class: "label" }, l.label), progressBar(l.probability, l.label),
        h("span", { class: "prob" }, `${(l.probability * 100).toFixed(1)}%`)))),
      correction(result, feedback)))));
}

/** "Correct it": the true label among the request's labels, sent as feedback. */
function correction(result, { choices, labelSet, asked }) {
  if (!result.prediction_id) {
    return asked ? h("p", { class: "muted small" }, "not kept: the feedback store is full") : null;
  }
  const top = result.labels[0]?.label;
  const select = h("select", { class: "correct-label", "aria-label": "true label" },
    choices.map((label) => h("option", { value: label, selected: label === top }, label)));
  const button = h("button", { type: "submit", class: "correct-send" }, "Correct it");
  const status = h("span", { class: "correct-status", role: "status" });
  const form = h("form", { class: "correct", dataset: { prediction: result.prediction_id } },
    h("span", { class: "muted" }, "True label "), select, " ", button, " ", status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    status.replaceChildren("sending…");
    try {
      const response = await api("feedback", { method: "POST", raw: true,
        body: { prediction_id: result.prediction_id, label: select.value } });
      const sent = await response.json();
      status.dataset.outcome = sent.correct ? "confirmed" : "corrected";
      status.replaceChildren(...answerText(sent, response.status === 200, labelSet));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      status.replaceChildren();
      notify(error.message);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function answerText(sent, replaced, labelSet) {
  const job = sent.auto_update_job;
  return [
    h("strong", {}, sent.correct ? "confirmed" : "corrected"),
    sent.correct ? `: ${sent.label}` : `: ${sent.predicted} → ${sent.label}`,
    replaced ? " (replaces the earlier answer)" : "",
    " · ", h("a", { href: labelSet ? `#/feedback/${encodeURIComponent(labelSet)}` : "#/feedback" },
      "feedback"),
    job ? h("span", {}, " · started ", h("a", { href: `#/jobs/${job.id}`, class: "auto-update-job",
      dataset: { job: job.id } }, `auto-update job ${shortId(job.id)}`)) : "",
  ];
}
