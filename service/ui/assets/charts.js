// Inline-SVG charts, drawn here (no library): loss curves and before/after bars.

import { h, s } from "./dom.js";

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];
const PAD = { right: 12, top: 10, bottom: 28 };
const CHAR_PX = 7; // an 11px axis digit is ~6.2px wide: a margin this wide fits its label

/**
 * Round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `count` of
 * them; the domain grows to the outer ticks, so the first and last lines are labelled.
 */
export function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return { lo, hi: lo, step: 0, ticks: [lo] };
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const ratio = raw / power; // in [1, 10): the nearest of 1, 2, 5, 10 on a log scale
  const step = (ratio >= 7.07 ? 10 : ratio >= 3.16 ? 5 : ratio >= 1.41 ? 2 : 1) * power;
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks = Array.from({ length: last - first + 1 }, (_, i) => (first + i) * step);
  return { lo: first * step, hi: last * step, step, ticks };
}

/**
 * A short label for each tick, precise enough to tell neighbours `step` apart: fixed decimals
 * from 0.001 to 99999 ("0.25", "22.5", "1200"), else a mantissa and an exponent ("7.0e-5",
 * "2.5e6"), never a "0.000070" that outgrows the margin.
 */
export function tickFormat(ticks, step) {
  const largest = Math.max(...ticks.map(Math.abs));
  if (!step || largest === 0) return (v) => fmtCompact(v);
  const stepPower = Math.floor(Math.log10(step) + 1e-9);
  if (largest >= 1e-3 && largest < 1e5) {
    const decimals = Math.max(0, -stepPower);
    return (v) => (Math.abs(v) < step / 2 ? "0" : v.toFixed(decimals));
  }
  const digits = Math.max(0, Math.floor(Math.log10(largest) + 1e-9) - stepPower);
  return (v) => (Math.abs(v) < step / 2 ? "0" : exponential(v, digits));
}

/** About three significant digits in at most ~7 characters: 0.33, 22.6, 7.0e-5, 1.2e6. */
export function fmtCompact(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  const size = Math.abs(value);
  if (size === 0) return "0";
  if (size >= 100 && size < 1e5) return value.toFixed(0);
  if (size >= 1e-3 && size < 100) return String(Number(value.toPrecision(3))); // 0.33, not 0.330
  return exponential(value, 1);
}

const exponential = (value, digits) => value.toExponential(digits).replace("e+", "e");

/** `text` cut to `max` characters, an ellipsis marking the cut (the full text in a title). */
const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Loss curves, one small chart per loss part (each on its own scale: a distillation term can
 * be a hundred times the cross-entropy). `series` maps a name to [[step, value], ...];
 * `totalSteps` fixes the x axis, so a running job's curves grow into it.
 */
export function lossCharts(series, totalSteps) {
  const names = Object.keys(series).sort();
  if (!names.length) return h("p", { class: "muted" }, "no progress reported yet");
  return h("div", { class: "loss-charts" }, names.map((name, i) =>
    lossChart(name, series[name], totalSteps, PALETTE[i % PALETTE.length])));
}

function lossChart(name, points, totalSteps, colour, { width = 340, height = 170 } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `loss ${name} by step` });
  const maxX = Math.max(totalSteps || 0, ...points.map((p) => p[0]), 1);
  let lo = Math.min(...points.map((p) => p[1]));
  let hi = Math.max(...points.map((p) => p[1]));
  if (!(hi - lo > 1e-9 * Math.abs(hi))) { // flat: a band around the value (never below 0 for
    const pad = Math.abs(hi) / 10 || 0.5; // a loss that is not negative)
    lo = lo >= 0 ? Math.max(0, lo - pad) : lo - pad;
    hi += pad;
  }
  const yAxis = niceTicks(lo, hi, 3);
  const yLabel = tickFormat(yAxis.ticks, yAxis.step);
  const yLabels = yAxis.ticks.map(yLabel);
  const left = 14 + CHAR_PX * Math.max(3, ...yLabels.map((t) => t.length));
  const x = (v) => left + ((width - left - PAD.right) * v) / maxX;
  const y = (v) => height - PAD.bottom -
    ((height - PAD.top - PAD.bottom) * (v - yAxis.lo)) / (yAxis.hi - yAxis.lo);
  yAxis.ticks.forEach((t, i) => {
    svg.append(s("line", { x1: left, x2: width - PAD.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, yLabels[i]));
  });
  const xAxis = niceTicks(0, maxX, 4);
  const xLabel = tickFormat(xAxis.ticks, xAxis.step);
  for (const t of xAxis.ticks.filter((v) => v <= maxX)) {
    // the last label ends at the plot's edge rather than spilling past the frame
    const end = x(t) + CHAR_PX * xLabel(t).length / 2 > width - 2;
    svg.append(s("text", { x: end ? width - 2 : x(t), y: height - 8,
      "text-anchor": end ? "end" : "middle", class: "axis" }, xLabel(t)));
  }
  const pts = points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ");
  svg.append(s("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 2,
    "data-loss": name }));
  const last = points.at(-1);
  return h("figure", { class: "loss-chart" },
    h("figcaption", { class: "legend" }, swatch(colour), h("strong", {}, name),
      h("span", { class: "muted" }, ` ${fmtCompact(last[1])} at step ${last[0]}`)), svg);
}

function swatch(colour) {
  return s("svg", { width: 12, height: 12, class: "swatch" },
    s("rect", { width: 12, height: 12, fill: colour }));
}

/** Grouped bars, accuracy before and after (0..100) per gate dataset. */
export function gateChart(rows, { width = 640, barHeight = 14 } = {}) {
  const rowHeight = barHeight * 2 + 14;
  const left = 160;
  const height = rows.length * rowHeight + 30;
  const x = (v) => left + ((width - left - 100) * Math.max(0, Math.min(100, v))) / 100;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart gate-chart", role: "img",
    "aria-label": "accuracy before and after, per dataset" });
  for (const t of [0, 25, 50, 75, 100]) {
    svg.append(s("line", { x1: x(t), x2: x(t), y1: 4, y2: height - 22, class: "grid" }),
      s("text", { x: x(t), y: height - 8, "text-anchor": "middle", class: "axis" }, `${t}%`));
  }
  rows.forEach((row, i) => {
    const top = 6 + i * rowHeight;
    const name = `${row.dataset} (${row.kind})`;
    svg.append(s("g", {}, s("title", {}, name), s("text", { x: left - 8, y: top + barHeight + 4,
      "text-anchor": "end", class: "axis" }, clip(name, Math.floor((left - 12) / CHAR_PX)))));
    [["before", PALETTE[5]], ["after", row.failed ? PALETTE[1] : PALETTE[2]]].forEach(([key, colour], j) => {
      const value = row[key];
      const yTop = top + j * (barHeight + 2);
      svg.append(s("rect", { x: x(0), y: yTop, width: Math.max(1, x(value) - x(0)),
        height: barHeight, fill: colour, "data-bar": key }),
      s("text", { x: x(value) + 4, y: yTop + barHeight - 3, class: "axis" },
        `${key} ${value.toFixed(1)}`));
    });
  });
  return h("figure", { class: "gate-figure" }, svg);
}
