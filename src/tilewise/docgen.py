"""Generated documentation fragments (kept true to the code by a test)."""

from __future__ import annotations


def functions_table() -> str:
    """The markdown table of expression functions, generated from :data:`tilewise.expr.FUNCTIONS`."""
    from tilewise.expr import FUNCTIONS

    rows = ["| function | meaning |", "| --- | --- |"]
    rows += [f"| `{f.signature}` | {f.description} |" for f in FUNCTIONS.values()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(functions_table(), end="")
