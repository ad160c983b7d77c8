"""`llmsm watch` (alias `top`) on a terminal: a full-screen Textual app (docs/watch.md).

Imported only when the interactive app runs (cli/dashboard.py's `watch` imports it inside the
command), so `llmsm --help` and the other commands never load Textual. The data comes from
llmsm.analytics (dashboard.read_frame, read_session_view, budgets, memory, handoff); cells and
texts from llmsm.cli.dashboard and llmsm.cli.format.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def run_app(path: Path, *, at: datetime | None = None, window: float | None = 60.0, interval: float = 1.0) -> None:
    from llmsm.cli.tui.app import WatchApp

    WatchApp(path, at=at, window=window, interval=interval).run()
