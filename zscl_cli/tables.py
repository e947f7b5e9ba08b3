"""What every ``zscl ... list`` prints: a header row over padded columns, or, when there is
nothing to list, one line that says how to make the first one."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

__all__ = ["format_table", "print_table"]

GAP = "  "  # between columns


def format_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str,
                 right: Collection[str] = ()) -> list[str]:
    """The lines of a table: ``columns`` as its header, each column as wide as its widest cell.

    Args:
        columns: the header names, one per column.
        rows: one sequence of cells per row, as many as ``columns``; a cell is printed with
            ``str`` (``None`` as ``-``).
        empty: the one line printed instead when ``rows`` is empty; say how to add the first.
        right: names of the columns aligned right (numbers).
    """
    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    if not cells:
        return [empty]
    for row in cells:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells under {len(columns)} columns: {row}")
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(columns)]

    def line(row: Sequence[str]) -> str:
        padded = [cell.rjust(width) if name in right else cell.ljust(width)
                  for name, cell, width in zip(columns, row, widths)]
        return GAP.join(padded).rstrip()

    return [line(columns), *(line(row) for row in cells)]


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str,
                right: Collection[str] = ()) -> None:
    """Print :func:`format_table`'s lines."""
    print("\n".join(format_table(columns, rows, empty=empty, right=right)))
