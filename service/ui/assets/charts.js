// Inline-SVG charts, drawn here (no library): loss curves and before/after bars.

import { h, s } from "./dom.js";

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];
const PAD = { left: 48, right: 12, top: 10, bottom: 28 };

function ticks(lo, hi, count) {
  if (hi === lo) return [lo];
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

const label = (value) => (Math.abs(value) >= 100 ? value.toFixed(0)
  : Math.abs(value) >= 1 ? value.toFixed(2) : value.toPrecision(2));

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
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  const x = (v) => PAD.left + ((width - PAD.left - PAD.right) * v) / maxX;
  const y = (v) => height - PAD.bottom - ((height - PAD.top - PAD.bottom) * (v - lo)) / (hi - lo);
  for (const t of ticks(lo, hi, 3)) {
    svg.append(s("line", { x1: PAD.left, x2: width - PAD.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: PAD.left - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, label(t)));
  }
  for (const t of ticks(0, maxX, 4)) {
    svg.append(s("text", { x: x(t), y: height - 8, "text-anchor": "middle", class: "axis" },
      Math.round(t)));
  }
  const pts = points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ");
  svg.append(s("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 2,
    "data-loss": name }));
  const last = points.at(-1);
  return h("figure", { class: "loss-chart" },
    h("figcaption", { class: "legend" }, swatch(colour), h("strong", {}, name),
      h("span", { class: "muted" }, ` ${label(last[1])} at step ${last[0]}`)), svg);
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
    svg.append(s("text", { x: left - 8, y: top + barHeight + 4, "text-anchor": "end",
      class: "axis" }, `${row.dataset} (${row.kind})`));
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
