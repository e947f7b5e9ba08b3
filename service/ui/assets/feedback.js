// Feedback: users' answers to kept predictions, per label set (#/feedback/<label set>) or all
// (#/feedback): the counts, each version's live accuracy (the served one marked), the counts
// per label, the newest answers with their images (delete one); for a label set, "make a
// dataset" of its answers and its auto-update policy (feedback-forms.js).

import { ApiError, api, imageURL } from "./api.js";
import { confirmDialog, fmtTime, h, notify, shortId } from "./dom.js";
import { datasetForm, policyForm } from "./feedback-forms.js";

const PAGE = 50;
const MAX = 1000; // the API's largest page

const percent = (value) => (typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "—");

export async function render(section, args, ctx) {
  const name = args[0] ? decodeURIComponent(args[0]) : "";
  const [sets, models] = await Promise.all([
    api("label-sets", { signal: ctx.signal }),
    api("models", { signal: ctx.signal }),
  ]);
  const set = sets.find((s) => s.name === name) || null;
  let limit = PAGE;

  const cards = h("div", { class: "cards", id: "feedback-cards" });
  const versions = h("tbody");
  const labels = h("tbody");
  const items = h("tbody");
  const more = h("button", { type: "button", id: "feedback-more", hidden: true, onclick: () => {
    limit = Math.min(limit + PAGE, MAX);
    refresh().catch((error) => ctx.signal.aborted || notify(error.message));
  } }, "Show older answers");

  async function refresh() {
    const query = new URLSearchParams({ limit: String(limit) });
    if (name) query.set("label_set", name);
    const listing = await api(`feedback?${query}`, { signal: ctx.signal });
    const { summary } = listing;
    cards.replaceChildren(
      card("answers", summary.items, "feedback-items"),
      card("confirmed", summary.confirmed, "feedback-confirmed"),
      card("corrected", summary.corrected, "feedback-corrected"),
      card("new", summary.new, "feedback-new", "not used by a dataset from feedback yet"));
    versions.replaceChildren(...versionRows(summary.versions, models));
    labels.replaceChildren(...labelRows(summary.per_label));
    items.replaceChildren(...(listing.items.length
      ? listing.items.map((item) => itemRow(item, ctx, refresh))
      : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no answers yet"))]));
    more.hidden = listing.items.length < limit || limit >= MAX;
  }

  const picker = h("select", { id: "feedback-label-set", "aria-label": "label set", onchange: () => {
    location.hash = picker.value ? `#/feedback/${encodeURIComponent(picker.value)}` : "#/feedback";
  } },
  h("option", { value: "" }, "all label sets"),
  sets.map((s) => h("option", { value: s.name, selected: s.name === name }, s.name)),
  name && !set ? h("option", { value: name, selected: true }, `${name} (deleted)`) : null);

  await refresh();
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Feedback"), picker,
      h("span", { class: "muted" }, "answers to kept predictions: a confirmation when the " +
        "true label was the top one, a correction otherwise")),
    cards,
    h("div", { class: "columns" },
      h("div", {}, h("h2", {}, "Live accuracy by version"),
        h("table", { class: "list", id: "feedback-versions" },
          h("thead", {}, h("tr", {}, ["Version", "Answers", "Correct", "Accuracy", ""]
            .map((t) => h("th", {}, t)))), versions),
        h("p", { class: "muted small" }, "top-1 accuracy on the predictions users answered: " +
          "compare versions on it, not with a test set (people correct mistakes more readily " +
          "than they confirm successes)")),
      h("div", {}, h("h2", {}, "Per label"),
        h("table", { class: "list", id: "feedback-labels" },
          h("thead", {}, h("tr", {}, ["True label", "Confirmed", "Corrected", "New"]
            .map((t) => h("th", {}, t)))), labels))),
    set ? h("div", { class: "columns" }, datasetForm(set, ctx, refresh), policyForm(set, ctx))
      : h("p", { class: "muted", id: "feedback-pick-hint" }, name
        ? `the label set ${name} no longer exists: its answers are kept until deleted`
        : "pick a label set to make a dataset of its answers or set its auto-update policy"),
    h("h2", {}, "Newest answers"),
    h("table", { class: "list", id: "feedback-table" },
      h("thead", {}, h("tr", {}, ["Image", "Predicted", "True label", "Outcome", "Version",
        "Label set", "Answered", ""].map((t) => h("th", {}, t)))), items),
    more);
}

function card(title, value, id, help) {
  return h("div", { class: "card", title: help },
    h("span", { class: "card-value", id }, value), h("span", { class: "card-name" }, title));
}

/** One row per version with answers, and the served one even without; served first. */
function versionRows(scores, models) {
  const rows = Object.entries(scores);
  if (models.serving && !(models.serving in scores)) rows.push([models.serving, null]);
  const created = new Map(models.versions.map((v) => [v.id, v.created_at]));
  rows.sort(([a], [b]) => (b === models.serving) - (a === models.serving)
    || (created.get(b) || "").localeCompare(created.get(a) || ""));
  if (!rows.length) return [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no answers yet"))];
  return rows.map(([version, score]) => h("tr",
    { dataset: { version }, class: version === models.serving ? "serving" : "" },
    h("td", {}, h("code", {}, version)),
    h("td", {}, score ? score.items : 0),
    h("td", {}, score ? score.correct : 0),
    h("td", { class: "accuracy" }, score ? percent(score.accuracy) : "—"),
    h("td", {}, version === models.serving ? h("span", { class: "badge served-badge" }, "served") : "")));
}

function labelRows(perLabel) {
  const rows = Object.entries(perLabel);
  if (!rows.length) return [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no answers yet"))];
  return rows.map(([label, counts]) => h("tr", { dataset: { label } },
    h("td", {}, label), h("td", {}, counts.confirmed), h("td", {}, counts.corrected),
    h("td", {}, counts.new)));
}

function thumbnail(item, signal) {
  const img = h("img", { alt: item.image, class: "feedback-thumb" });
  imageURL(`feedback/${encodeURIComponent(item.prediction_id)}/image`, signal).then((url) => {
    const revoke = () => URL.revokeObjectURL(url);
    img.addEventListener("load", revoke, { once: true });
    img.addEventListener("error", revoke, { once: true });
    img.src = url;
  }).catch((error) => {
    if (!signal.aborted) img.alt = `${item.image} (image unavailable: ${error.message})`;
  });
  return img;
}

function itemRow(item, ctx, refresh) {
  const remove = h("button", { type: "button", class: "danger", title: "delete the answer, " +
    "its prediction and its image", dataset: { delete: item.prediction_id },
  onclick: async () => {
    const ok = await confirmDialog(`Delete the answer to ${item.image}? Its prediction and ` +
      "its kept image are deleted too (a dataset already made from it keeps its copy).");
    if (!ok) return;
    remove.disabled = true;
    try {
      await api(`feedback/${encodeURIComponent(item.prediction_id)}`, { method: "DELETE" });
      await refresh();
      notify(`deleted the answer to ${item.image}`, "ok");
    } catch (error) {
      remove.disabled = false;
      if (!(error instanceof ApiError)) throw error;
      notify(error.message);
    }
  } }, "Delete");
  return h("tr", { dataset: { prediction: item.prediction_id }, class: item.correct ? "" : "corrected" },
    h("td", {}, h("div", { class: "image-cell" }, thumbnail(item, ctx.signal),
      h("span", { class: "small" }, item.image))),
    h("td", {}, item.predicted, h("span", { class: "muted small" }, ` ${percent(item.probability)}`)),
    h("td", { class: "true-label" }, item.label),
    h("td", {}, h("span", { class: `badge outcome-${item.correct ? "confirmed" : "corrected"}` },
      item.correct ? "confirmed" : "corrected"),
    item.dataset_id ? h("div", { class: "muted small" }, "in dataset ", h("code", {}, shortId(item.dataset_id)))
      : h("div", { class: "muted small" }, "new")),
    h("td", {}, h("code", {}, item.model_version)),
    h("td", {}, item.label_set || h("span", { class: "muted" }, "(labels)")),
    h("td", { class: "nowrap" }, fmtTime(item.created_at)),
    h("td", { class: "actions" }, remove));
}
