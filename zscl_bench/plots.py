"""Figures of a benchmark run (matplotlib, Agg backend: no display needed).

- ``matrix_<method>.png``: the accuracy matrix A (rows: stages, columns: datasets) as a heatmap.
- ``matrices.png``: all methods' heatmaps side by side.
- ``per_dataset.png``: for each dataset, its accuracy after every stage, one line per method;
  the dashed line marks the stage where the dataset is learned (left of it: zero-shot transfer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

__all__ = ["plot_matrix", "plot_matrices", "plot_per_dataset", "write_plots"]


def _stage_labels(tasks: Sequence[str]) -> list[str]:
    return ["initial"] + [f"+{t}" for t in tasks]


def _heatmap(ax, matrix: Sequence[Sequence[float]], tasks: Sequence[str], title: str) -> None:
    image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix)), _stage_labels(tasks), fontsize=8)
    ax.set_title(title, fontsize=10)
    for j, row in enumerate(matrix):
        for i, value in enumerate(row):
            ax.text(i, j, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 60 else "black")
    return image


def plot_matrix(matrix: Sequence[Sequence[float]], tasks: Sequence[str], method: str,
                path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(tasks), 1.2 + 0.6 * len(matrix)))
    image = _heatmap(ax, matrix, tasks, f"{method}: accuracy (%) after each stage")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_matrices(matrices: dict[str, Sequence[Sequence[float]]], tasks: Sequence[str],
                  path: Path) -> Path:
    cols = min(4, len(matrices))
    rows = math.ceil(len(matrices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (1 + 0.8 * len(tasks)),
                                                  rows * (1 + 0.55 * (len(tasks) + 1))),
                             squeeze=False)
    for ax, (method, matrix) in zip(axes.flat, matrices.items()):
        _heatmap(ax, matrix, tasks, method)
    for ax in list(axes.flat)[len(matrices):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_dataset(matrices: dict[str, Sequence[Sequence[float]]], tasks: Sequence[str],
                     path: Path) -> Path:
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    stages = list(range(len(tasks) + 1))
    for i, (ax, task) in enumerate(zip(axes.flat, tasks)):
        for method, matrix in matrices.items():
            ax.plot(stages, [row[i] for row in matrix], marker="o", markersize=3, label=method,
                    linestyle="--" if method == "zero_shot" else "-")
        ax.axvline(i + 1, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{task} (learned at stage {i + 1})", fontsize=10)
        ax.set_xticks(stages, _stage_labels(tasks), rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(7, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(matrices: dict[str, Sequence[Sequence[float]]], tasks: Sequence[str],
                out: Path) -> list[Path]:
    """Write every figure of a run to ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_matrix(m, tasks, method, out / f"matrix_{method}.png")
             for method, m in matrices.items()]
    paths.append(plot_matrices(matrices, tasks, out / "matrices.png"))
    paths.append(plot_per_dataset(matrices, tasks, out / "per_dataset.png"))
    return paths
