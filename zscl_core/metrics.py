"""Continual-learning metrics of the MTIL benchmark (ZSCL paper, Sec. 4.1).

The accuracy matrix A has n + 1 rows and n columns: row 0 is the model before any training,
row j the model after learning tasks 1..j; column i is dataset i (1-based in the paper, 0-based
here).

- Transfer: for each dataset i >= 2, the mean of A[j][i] over the stages 1 <= j < i (while i is
  still unseen), then the mean over those datasets.
- Avg.: the mean of A over rows 1..n and all columns.
- Last: the mean of row n.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["transfer", "average_accuracy", "last_accuracy", "summarize"]

Matrix = Sequence[Sequence[float]]


def _check(matrix: Matrix) -> int:
    n = len(matrix) - 1
    if n < 1:
        raise ValueError("the accuracy matrix needs row 0 and at least one trained stage")
    for j, row in enumerate(matrix):
        if len(row) != n:
            raise ValueError(f"row {j} has {len(row)} entries; expected {n} (one per task)")
    return n


def transfer(matrix: Matrix) -> float:
    """Mean zero-shot accuracy kept on datasets before they are learned."""
    n = _check(matrix)
    if n < 2:
        raise ValueError("Transfer needs at least two tasks")
    per_dataset = []
    for i in range(1, n):  # 0-based column i is the paper's dataset i + 1 >= 2
        per_dataset.append(sum(matrix[j][i] for j in range(1, i + 1)) / i)
    return sum(per_dataset) / len(per_dataset)


def average_accuracy(matrix: Matrix) -> float:
    """Mean of every entry after training (rows 1..n)."""
    n = _check(matrix)
    return sum(sum(row) for row in matrix[1:]) / (n * n)


def last_accuracy(matrix: Matrix) -> float:
    """Mean accuracy of the final model over all tasks."""
    n = _check(matrix)
    return sum(matrix[n]) / n


def summarize(matrix: Matrix) -> dict[str, float]:
    """Transfer / Avg. / Last in one dict (Transfer is omitted for a single task)."""
    out = {"avg": average_accuracy(matrix), "last": last_accuracy(matrix)}
    if len(matrix) > 2:
        out["transfer"] = transfer(matrix)
    return out
