"""Plain-text tables for the command line."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain-text table; columns are (key, header); floats get 3 decimals; numbers align right."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    numeric = [all(isinstance(r[k], (int, float)) for r in rows) for k, _ in columns]
    cells = [[h for _, h in columns]] + [[cell(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()
             for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
