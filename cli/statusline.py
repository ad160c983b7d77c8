"""`llmsm statusline` without the CLI framework: cli/entry.py answers the command with `main`
before typer loads (its start-up would triple the cost of a line a status bar asks for every
few seconds). `python -m llmsm.cli.statusline [--db PATH]` prints the same line.

The data is analytics/statusline.py's, the line cli/format.py's; standard library otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Print the status line for `--db PATH` (or `--db=PATH`; default: $LLMSM_DB, else the user's
    database). Always exits 0, never with a traceback: a status bar shows whatever is printed."""
    try:
        from llmsm.analytics.statusline import default_db_path, statusline
        from llmsm.cli.format import format_statusline

        db = None
        if len(argv) >= 2 and argv[0] == "--db":
            db = Path(argv[1]).expanduser()
        elif argv and argv[0].startswith("--db="):
            db = Path(argv[0][5:]).expanduser()
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        line = format_statusline(statusline(db or default_db_path()), color=color)
    except Exception:  # a status line never shows a traceback
        line = "llmsm: unavailable"
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
