// Try it: drop images, type labels or pick a label set, see the ranked labels with their
// probabilities and the version that answered (X-Model-Version).

import { VERSION_HEADER, api } from "./api.js";
import { dropZone, h, notify, progressBar } from "./dom.js";

export async function render(section, _args, ctx) {
  const sets = await api("label-sets", { signal: ctx.signal });
  let files = [];
  const previews = h("div", { class: "thumbs", id: "try-thumbs" });
  const labels = h("input", { type: "text", id: "try-labels", placeholder: "cat, dog, car, airplane",
    size: 48 });
  const labelSet = h("select", { id: "try-label-set" }, h("option", { value: "" }, "— or pick a label set —"),
    sets.map((s) => h("option", { value: s.name }, `${s.name} (${s.classnames.length} labels)`)));
  const topK = h("input", { type: "number", id: "try-top-k", min: 1, max: 50, value: 5 });
  const button = h("button", { type: "submit", class: "primary", id: "try-button", disabled: true }, "Classify");
  const results = h("div", { id: "try-results" });
  const zone = dropZone({ id: "try-input", accept: "image/*", multiple: true,
    label: "Drop one or more images here, or click to choose",
    onFiles: (chosen) => {
      files = chosen;
      previews.replaceChildren(...files.map((f) => thumb(f)));
      button.disabled = false;
    } });
  labelSet.addEventListener("change", () => { labels.disabled = Boolean(labelSet.value); });
  const form = h("form", { class: "panel", id: "try-form" }, zone, previews,
    h("label", { class: "wide" }, "Labels (comma-separated) ", labels),
    h("label", {}, labelSet), h("label", {}, "Top ", topK), button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    for (const f of files) body.append("images", f, f.name);
    if (labelSet.value) body.append("label_set", labelSet.value);
    else body.append("labels", labels.value);
    body.append("top_k", topK.value);
    button.disabled = true;
    try {
      const response = await api("classify", { method: "POST", body, raw: true });
      const answer = await response.json();
      showResults(results, answer, response.headers.get(VERSION_HEADER), files);
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

function showResults(target, answer, headerVersion, files) {
  const byName = new Map(files.map((f) => [f.name, f]));
  target.replaceChildren(
    h("p", { class: "answered" }, "answered by version ",
      h("code", { id: "try-version" }, headerVersion || answer.model_version),
      ` in ${answer.time_ms.toFixed(0)} ms`),
    ...answer.results.map((result) => h("div", { class: "result", dataset: { image: result.image } },
      byName.has(result.image) ? thumb(byName.get(result.image)) : h("strong", {}, result.image),
      h("ol", { class: "ranked" }, result.labels.map((l) => h("li", { dataset: { label: l.label } },
        h("span", { class: "label" }, l.label), progressBar(l.probability, l.label),
        h("span", { class: "prob" }, `${(l.probability * 100).toFixed(1)}%`)))))));
}
