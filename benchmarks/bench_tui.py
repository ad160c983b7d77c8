"""`llmsm watch`'s Textual app over 1M requests and 1,000 sessions: refresh and start-up.

    .venv/bin/python benchmarks/bench_tui.py [--requests N] [--sessions S] [--repeat R] [--rebuild]
    .venv/bin/python benchmarks/bench_tui.py --screenshots   # docs/img/watch-*.svg

Uses bench_dashboard.py's database (benchmarks/out/db/dashboard-N-S.duckdb, built once) and
evaluates as of its build time. Times, median of R after one warm-up:
- baseline, measured in the same run: today's table (`llmsm watch --once`'s frame: read_frame +
  render_frame at 200 columns);
- a refresh of the live screen: the app headless at 200x60 (Textual's pilot), one refresh = the
  frame read in a thread + the list updated + its messages handled + the screen painted; each
  refresh one second later than the one before, so ages and burn change as they do live.
  Sessions of the last 60 min, and `--all` (1,000 sessions, incremental refreshes). Also as
  measured before 2026-12-03: waited for with `pilot.pause()`, which sleeps at least 20 ms;
- start-up: `llmsm watch --db DB --at T` in a real pseudo-terminal (200x60), from exec to the
  first session row on the screen (interpreter, CLI, Textual, the first frame), then `q`; its
  baseline, in the same run: `llmsm --version` (interpreter and CLI). llmsm's modules are
  byte-compiled first, as an install has them (this environment sets PYTHONDONTWRITEBYTECODE), and
  the first launch (not counted) fills prices' answer cache, as any earlier llmsm command would.

--screenshots writes docs/img/watch-80x24.svg and watch-160x45.svg (the list) and
watch-session-160x45.svg (a session's screen) from a small deterministic database (4,000
requests, 40 sessions, fixed time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_dashboard import OUT, build_db, median_ms  # noqa: E402

SHOT_AT = datetime(2026, 3, 10, 14, 30, tzinfo=timezone.utc)


def database(n: int, sessions: int, rebuild: bool) -> tuple[Path, datetime]:
    db = OUT / "db" / f"dashboard-{n}-{sessions}.duckdb"
    stamp = Path(str(db) + ".built-at")
    if rebuild or not db.exists() or not stamp.exists():
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        build_db(db, n, sessions, now)
        stamp.write_text(now.isoformat())
        print(f"built {db.name} in {time.perf_counter() - t0:.1f} s")
    return db, datetime.fromisoformat(stamp.read_text().strip())


async def app_refreshes(db: Path, at: datetime, window: float | None, repeat: int) -> tuple[float, list[float], int, float]:
    """(median ms, each ms, sessions, median ms as measured before 2026-12-03). A refresh: the
    frame read in a thread, the list updated, the app's pending messages handled and the screen
    painted (what Textual's screen timer does next, called at once). The earlier figure waited
    with `pilot.pause()`, which also sleeps at least 20 ms to see the process idle."""
    from llmsm.cli.tui.app import WatchApp

    app = WatchApp(db, at=at, window=window)
    times: list[float] = []
    with_pause: list[float] = []
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        for i in range(2 * repeat + 1):
            app.reader.at = at + timedelta(seconds=i + 1)
            t0 = time.perf_counter()
            await app.refresh_now()
            if i % 2:
                await pilot.pause()
            else:
                await pilot._wait_for_screen()  # the messages the update posted, handled
                app.screen._on_timer_update()  # the screen painted
            if i:
                (with_pause if i % 2 else times).append((time.perf_counter() - t0) * 1000)
        n = len(app.rows)
    return statistics.median(times), times, n, statistics.median(with_pause)


def version_times(repeat: int) -> list[float]:
    """`llmsm --version`, whole process: the interpreter and the CLI, the floor of any command."""
    out = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmsm.cli.main", "--version"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        if i:
            out.append((time.perf_counter() - t0) * 1000)
    return out


def startup(db: Path, at: datetime, repeat: int) -> list[float]:
    import fcntl
    import pty
    import select
    import struct
    import termios

    out_times = []
    env = dict(os.environ, TERM="xterm-256color")
    for i in range(repeat + 1):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "llmsm.cli.main", "watch", "--db", str(db), "--at", at.isoformat()],
                                stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
        out = b""
        took = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.01)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
                if b"task-0" in out:
                    took = (time.perf_counter() - t0) * 1000
                    break
        os.write(master, b"q")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(slave)
        os.close(master)
        if took is None:
            raise SystemExit(f"the app drew no session row:\n{out[-2000:]!r}")
        if i:
            out_times.append(took)
    return out_times


async def screenshots() -> None:
    from llmsm.cli.tui.app import WatchApp
    from llmsm.cli.tui.session_screen import SessionScreen

    db = OUT / "db" / "screenshots.duckdb"
    build_db(db, 4000, 40, SHOT_AT)
    img = REPO / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    for w, h in ((80, 24), (160, 45)):
        app = WatchApp(db, at=SHOT_AT)
        async with app.run_test(size=(w, h)) as pilot:
            await pilot.pause()
            app.save_screenshot(str(img / f"watch-{w}x{h}.svg"), )
            if w == 160:
                await pilot.press("enter")
                for _ in range(100):
                    await pilot.pause(0.05)
                    if isinstance(app.screen, SessionScreen) and app.screen.view is not None:
                        break
                await pilot.pause()
                app.save_screenshot(str(img / f"watch-session-{w}x{h}.svg"))
    for p in sorted(img.glob("watch-*.svg")):
        print(f"wrote {p.relative_to(REPO)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--screenshots", action="store_true", help="write docs/img/watch-*.svg and exit")
    args = ap.parse_args()
    if args.screenshots:
        asyncio.run(screenshots())
        return

    from rich.console import Console

    from _common import print_machine
    from llmsm.analytics import dashboard
    from llmsm.cli.dashboard import render_frame

    db, at = database(args.requests, args.sessions, args.rebuild)
    print_machine()
    print(f"database: {db.relative_to(REPO)} ({db.stat().st_size / 1e6:.0f} MB), as of {at.isoformat()}")
    sink = open(os.devnull, "w")

    def table_frame() -> None:
        f = dashboard.read_frame(db, at=at, window_minutes=60.0, timeout=5)
        console = Console(record=True, width=200, height=60, file=sink, color_system="truecolor")
        console.print(render_frame(f, width=200, height=60))
        console.export_text()

    base, base_times = median_ms(table_frame, args.repeat)
    live, live_times, n_live, live_paused = asyncio.run(app_refreshes(db, at, 60.0, args.repeat))
    full, full_times, n_all, full_paused = asyncio.run(app_refreshes(db, at, None, args.repeat))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "addons", "analytics", "cli", "llmsm"], cwd=REPO, check=True)
    start = startup(db, at, max(3, args.repeat // 2))
    floor = version_times(max(3, args.repeat // 2))
    print()
    print("| what | sessions | median ms | min | max |")
    print("|---|---|---|---|---|")
    print(f"| baseline: today's table (`watch --once` frame at 200 columns) | {n_live} | {base:.1f} | {min(base_times):.1f} | {max(base_times):.1f} |")
    print(f"| app refresh: last 60 min (read + table update + paint, 200x60) | {n_live} | {live:.1f} | {min(live_times):.1f} | {max(live_times):.1f} |")
    print(f"| app refresh: `--all`, incremental | {n_all} | {full:.1f} | {min(full_times):.1f} | {max(full_times):.1f} |")
    print(f"| the same two, waited for with `pilot.pause()` (sleeps >= 20 ms; the figure before 2026-12-03) | | {live_paused:.1f} / {full_paused:.1f} | | |")
    print(f"| app start-up to the first session row (pty 200x60, `--at`) | {n_live} | {statistics.median(start):.0f} | {min(start):.0f} | {max(start):.0f} |")
    print(f"| baseline: `llmsm --version`, whole process | | {statistics.median(floor):.0f} | {min(floor):.0f} | {max(floor):.0f} |")
    print(f"\nrefresh / baseline: {live / base:.2f}x; start-up / `--version`: {statistics.median(start) / statistics.median(floor):.2f}x")
    print(f"target: refresh < 100 ms -> {'MET' if live < 100 else 'NOT MET'} ({live:.1f} ms); "
          f"start-up < 1 s -> {'MET' if statistics.median(start) < 1000 else 'NOT MET'} ({statistics.median(start):.0f} ms)")


if __name__ == "__main__":
    main()
