"""Plain-text tables of a run: Transfer / Avg. / Last per method, and each accuracy matrix."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["metrics_table", "matrix_table"]

PAPER_NAMES = {"zero_shot": "Zero-shot", "continual_ft": "Continual-FT", "lwf": "LwF",
               "wise_ft": "WiSE-FT", "zscl": "ZSCL", "zscl_no_avg": "ZSCL w/o weight ensemble",
               "zscl_no_distill": "ZSCL w/o distillation"}


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A Markdown table: method | Transfer | Avg. | Last."""
    lines = ["| method | Transfer | Avg. | Last |", "|---|---:|---:|---:|"]
    for method, m in metrics.items():
        transfer = f"{m['transfer']:.1f}" if "transfer" in m else "-"
        lines.append(f"| {PAPER_NAMES.get(method, method)} | {transfer} | {m['avg']:.1f} | "
                     f"{m['last']:.1f} |")
    return "\n".join(lines)


def matrix_table(matrix: Sequence[Sequence[float]], tasks: Sequence[str]) -> str:
    """A Markdown table of an accuracy matrix, one row per stage."""
    lines = ["| stage | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for j, row in enumerate(matrix):
        label = "0 (initial)" if j == 0 else f"{j} (+{tasks[j - 1]})"
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    return "\n".join(lines)
