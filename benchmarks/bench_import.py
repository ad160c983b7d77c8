"""Benchmark: `llmsm import claude-code` (and `llmsm import codex`) on a synthetic corpus.

    .venv/bin/python benchmarks/bench_import.py                   # 2,000 files, ~200k requests, ~1.3 GB
    .venv/bin/python benchmarks/bench_import.py --files 200       # a tenth of it, while working
    .venv/bin/python benchmarks/bench_import.py --keep            # keep the corpus in benchmarks/out/import/

The corpus is written into a temporary directory (or benchmarks/out/import/ with --keep) in the
shape of real Claude Code transcripts: one file per session under project folders, a user line
before each API response (a prompt or a tool result of 0.3-8 KB), each response written as one
line per content block (thinking, text, tool_use) that all carry the response's usage, summary
and file-history lines, subagent files, and resumed sessions that copy earlier responses (same
message and request ids) into a new file. Codex rollouts (--codex-files) follow
`sessions/YYYY/MM/DD/rollout-<time>-<thread id>.jsonl` with session_meta, turn_context,
response items and token_count events (some repeated unchanged, as Codex writes them).

Each step runs the real command (`python -m llmsm.cli.main ...`) in a child process, whose wall
time and peak RSS (os.wait4's ru_maxrss) are reported:

1. first import (a fresh database);
2. the same corpus again, nothing changed;
3. after appending to a tenth of the files (one response's content blocks split across the
   append, as a live session writes them).

Baselines in the same run: the import of an earlier revision (--baseline-rev, on the corpus as it
is after step 4), reading every line of the corpus in Python (the floor of any importer
written in Python), `llmsm --version` (the start-up every command pays: the floor of an import
with nothing new), and `ccusage daily --json` when a `ccusage` executable is on PATH (its time,
peak RSS and token totals; `npx ccusage` needs the network, so it is not tried; e.g.
`npm install --prefix /tmp/ccusage ccusage` and PATH=/tmp/ccusage/node_modules/.bin:$PATH), and
then `ccusage codex daily --json` on the same rollouts, its totals against `llmsm report daily`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
TARGET_UNCHANGED_S = 0.5
TARGET_FIRST_S = 10.0
TARGET_FIRST_MB = 500

MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001")
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class ClaudeSession:
    """One session's lines, generated response by response (so that a benchmark can append)."""

    def __init__(self, rnd: random.Random, index: int, cwd: str, agent: str | None = None) -> None:
        self.rnd = rnd
        self.sid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        self.index = index
        self.cwd = cwd
        self.agent = agent
        self.model = MODELS[index % len(MODELS)] if agent is None else MODELS[2]
        self.t = T0 + timedelta(minutes=rnd.randrange(0, 60 * 24 * 60))
        self.n = 0
        self.parent: str | None = None

    def _base(self, kind: str) -> dict:
        u = str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))
        entry = {"parentUuid": self.parent, "isSidechain": self.agent is not None, "userType": "external",
                 "cwd": self.cwd, "sessionId": self.sid, "version": "2.0.46", "gitBranch": "main"}
        if self.agent is not None:
            entry["agentId"] = self.agent
        entry["type"] = kind
        self.parent = u
        return entry | {"uuid": u}

    def user_line(self) -> str:
        rnd = self.rnd
        e = self._base("user")
        if self.n == 0 or rnd.random() < 0.15:
            content: object = f"please look at step {self.n} of the plan and fix the failing test"
        else:
            size = int(rnd.lognormvariate(7.85, 0.8))  # median ~2.6 KB, a long tail
            size = max(300, min(size, 60_000))
            content = [{"tool_use_id": f"toolu_{self.sid[:8]}{self.n:05d}", "type": "tool_result",
                        "content": ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size], "is_error": False}]
        e["message"] = {"role": "user", "content": content}
        e["timestamp"] = _iso(self.t)
        return _dumps(e)

    def response_lines(self) -> list[str]:
        """The lines of one API response: one per content block, each with the usage."""
        rnd = self.rnd
        self.t += timedelta(seconds=rnd.randint(3, 40))
        mid = f"msg_01{uuid.UUID(int=rnd.getrandbits(128)).hex[:22]}"
        rid = f"req_011C{uuid.UUID(int=rnd.getrandbits(128)).hex[:20]}"
        usage = {"input_tokens": rnd.randint(1, 40), "cache_creation_input_tokens": rnd.randint(0, 4000),
                 "cache_read_input_tokens": rnd.randint(10_000, 120_000),
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                 "output_tokens": rnd.randint(1, 1500), "service_tier": "standard"}
        usage["cache_creation"]["ephemeral_5m_input_tokens"] = usage["cache_creation_input_tokens"]
        blocks = [{"type": "text", "text": "Let me check the failing test first. " * rnd.randint(1, 12)}]
        if rnd.random() < 0.4:
            blocks.insert(0, {"type": "thinking", "thinking": "The user wants the test fixed. " * rnd.randint(2, 20),
                              "signature": "Eu" + "A" * 300})
        if rnd.random() < 0.8:
            blocks.append({"type": "tool_use", "id": f"toolu_{self.sid[:8]}{self.n:05d}", "name": "Bash",
                           "input": {"command": f"pytest -q tests/test_{self.n}.py", "description": "Run the test"}})
        lines = []
        for b in blocks:
            e = self._base("assistant")
            uid = e.pop("uuid")
            kind = e.pop("type")
            e["message"] = {"model": self.model, "id": mid, "type": "message", "role": "assistant",
                            "content": [b], "stop_reason": "tool_use" if b["type"] == "tool_use" else None,
                            "stop_sequence": None, "usage": usage}
            e["requestId"] = rid
            e["type"] = kind
            e["uuid"] = uid
            e["timestamp"] = _iso(self.t + timedelta(milliseconds=len(lines) * 7))
            lines.append(_dumps(e))
        self.n += 1
        self.t += timedelta(seconds=rnd.randint(1, 20))
        return lines

    def turn(self) -> list[str]:
        return [self.user_line(), *self.response_lines()]


def write_claude_corpus(root: Path, files: int, requests: int, seed: int = 1) -> dict:
    """`files` transcripts holding about `requests` API responses in all. Returns facts about it."""
    rnd = random.Random(seed)
    projects = root / "projects"
    per_file = max(1, requests // max(1, files))
    sessions: list[tuple[Path, ClaudeSession]] = []
    copied_lines: list[str] = []
    total = 0
    for i in range(files):
        project = projects / f"-home-user-src-project{i % 40:02d}"
        cwd = f"/home/user/src/project{i % 40:02d}"
        agent = f"{rnd.getrandbits(32):08x}" if i % 10 == 9 else None
        s = ClaudeSession(rnd, i, cwd, agent)
        n = max(1, int(per_file * rnd.uniform(0.5, 1.5))) if i < files - 1 else max(1, requests - total)
        total += n
        if agent is not None and sessions:
            path = project / sessions[-1][1].sid / "subagents" / f"agent-{agent}.jsonl"
        else:
            path = project / f"{s.sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            if i % 3 == 0:
                fh.write(_dumps({"type": "summary", "summary": "Fix the failing tests", "leafUuid": str(uuid.uuid4())}) + "\n")
            fh.write(_dumps({"type": "file-history-snapshot", "messageId": str(uuid.uuid4()),
                             "snapshot": {"trackedFileBackups": {}, "timestamp": _iso(s.t)}, "isSnapshotUpdate": False}) + "\n")
            if i % 25 == 24 and copied_lines:
                fh.write("".join(copied_lines))  # a resumed session: earlier responses copied in
            mine: list[str] = []
            for _ in range(n):
                lines = s.turn()
                mine.extend(lines)
                fh.write("\n".join(lines) + "\n")
            copied_lines = [line + "\n" for line in mine[: min(len(mine), 60)]]
        sessions.append((path, s))
    size = sum(p.stat().st_size for p, _ in sessions)
    return {"files": files, "requests": total, "bytes": size, "sessions": sessions}


def append_claude(sessions: list[tuple[Path, ClaudeSession]], share: float, turns: int) -> dict:
    """Append `turns` responses to every 1/share-th file, the last one's blocks split: its first
    line now, the rest after a second append (what a reader in the middle of a write sees)."""
    step = max(1, round(1 / share))
    files = 0
    requests = 0
    tails: list[tuple[Path, list[str]]] = []
    for path, s in sessions[::step]:
        lines: list[str] = []
        for _ in range(turns):
            lines.extend(s.turn())
        requests += turns
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        extra = s.turn()
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(extra[:2]) + "\n")  # the user line and the first block
        tails.append((path, extra[2:]))
        requests += 1
        files += 1
    return {"files": files, "requests": requests, "tails": tails}


def finish_appends(tails: list[tuple[Path, list[str]]]) -> None:
    for path, rest in tails:
        if rest:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(rest) + "\n")


def write_codex_corpus(root: Path, files: int, turns: int, seed: int = 2) -> dict:
    """`files` Codex rollouts of about `turns` model responses each."""
    rnd = random.Random(seed)
    sessions = root / "sessions"
    total = 0
    for i in range(files):
        tid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        t = T0 + timedelta(minutes=rnd.randrange(0, 60 * 24 * 60))
        d = sessions / f"{t:%Y}" / f"{t:%m}" / f"{t:%d}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"rollout-{t:%Y-%m-%dT%H-%M-%S}-{tid}.jsonl"
        lines = [{"timestamp": _iso(t), "type": "session_meta", "payload": {
            "id": tid, "timestamp": _iso(t), "cwd": f"/home/user/src/p{i % 20}", "originator": "codex_cli_rs",
            "cli_version": "0.46.0", "instructions": None, "source": "cli", "model_provider": "openai",
            "git": {"commit_hash": "a" * 40, "branch": "main", "repository_url": "git@example.com:u/p.git"}}}]
        totals = dict.fromkeys(("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens"), 0)
        for n in range(turns):
            t += timedelta(seconds=rnd.randint(5, 60))
            if n % 10 == 0:
                lines.append({"timestamp": _iso(t), "type": "turn_context", "payload": {
                    "cwd": f"/home/user/src/p{i % 20}", "approval_policy": "on-request", "model": "gpt-5-codex",
                    "effort": "medium", "summary": "auto"}})
                lines.append({"timestamp": _iso(t), "type": "response_item", "payload": {
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the tests " * 20}]}})
            lines.append({"timestamp": _iso(t), "type": "response_item", "payload": {
                "type": "function_call_output", "call_id": f"call_{n}", "output": "ok\n" * rnd.randint(10, 600)}})
            cached = rnd.randint(0, 60_000)
            last = {"input_tokens": cached + rnd.randint(100, 5000), "cached_input_tokens": cached,
                    "output_tokens": rnd.randint(10, 2000), "reasoning_output_tokens": 0, "total_tokens": 0}
            last["reasoning_output_tokens"] = rnd.randint(0, last["output_tokens"])
            last["total_tokens"] = last["input_tokens"] + last["output_tokens"]
            for k in totals:
                totals[k] += last[k]
            event = {"timestamp": _iso(t), "type": "event_msg", "payload": {"type": "token_count", "info": {
                "total_token_usage": dict(totals), "last_token_usage": last, "model_context_window": 272_000},
                "rate_limits": {"primary": {"used_percent": 3.0, "window_minutes": 300, "resets_in_seconds": 9000}}}}
            lines.append(event)
            if rnd.random() < 0.3:
                lines.append(event)  # Codex repeats a token_count unchanged
            total += 1
        path.write_text("".join(_dumps(x) + "\n" for x in lines), encoding="utf-8")
    size = sum(p.stat().st_size for p in sessions.rglob("*.jsonl"))
    return {"files": files, "requests": total, "bytes": size}


def _tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants, from /proc (0 once it is gone)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_measured(argv: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS in MiB of the process itself (os.wait4's ru_maxrss: its largest
    process), peak RSS of its whole process tree (sampled every 50 ms: worker processes
    included) and stdout of one command."""
    import threading

    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        tree = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                tree[0] = max(tree[0], _tree_rss_kib(p.pid))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(p.pid, 0)
        stop.set()
        sampler.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:6])} failed ({p.returncode}): {err.read().decode(errors='replace')[-2000:]}")
        return dt, usage.ru_maxrss / 1024, tree[0] / 1024, out.read().decode(errors="replace")


def read_floor(root: Path) -> float:
    """Seconds to read every line of every .jsonl under root in Python (no parsing)."""
    t = time.perf_counter()
    n = 0
    for p in root.rglob("*.jsonl"):
        with open(p, "rb") as fh:
            for _ in fh:
                n += 1
    return time.perf_counter() - t


def baseline_tree(rev: str, into: Path) -> Path:
    """The package as it was at git revision `rev`, laid out for PYTHONPATH (the repository maps
    llmsm.analytics to analytics/ and so on: the copy nests them under llmsm/)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "llmsm", "analytics", "cli", "addons"],
                          capture_output=True, check=True).stdout
    src = into / "src"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(src, filter="data")
    shutil.copytree(src / "llmsm", into / "py" / "llmsm")
    for sub in ("analytics", "cli", "addons"):
        shutil.copytree(src / sub, into / "py" / "llmsm" / sub)
    return into / "py"


def llmsm(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmsm.cli.main", *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000, help="Claude Code transcript files (default 2000)")
    ap.add_argument("--requests", type=int, default=200_000, help="API responses in all (default 200000)")
    ap.add_argument("--append-share", type=float, default=0.1, help="share of files appended to in step 3")
    ap.add_argument("--append-turns", type=int, default=5, help="responses appended to each of those files")
    ap.add_argument("--codex-files", type=int, default=200, help="Codex rollouts (0: no Codex step)")
    ap.add_argument("--codex-turns", type=int, default=100, help="model responses per rollout")
    ap.add_argument("--keep", action="store_true", help="write the corpus to benchmarks/out/import/ and keep it")
    ap.add_argument("--baseline-rev", help="also time the first and unchanged import of this git revision (e.g. the one before a change)")
    ap.add_argument("--json", dest="json_out", type=Path, default=OUT / "bench_import.json", help="figures as JSON")
    args = ap.parse_args()

    for sub in ("llmsm", "analytics", "cli", "addons"):  # as an installed package would have it
        __import__("compileall").compile_dir(str(REPO / sub), quiet=1)
    if args.keep:
        base = OUT / "import"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="llmsm-bench-import-"))
    load = os.getloadavg()[0]
    env = dict(os.environ, NO_COLOR="1")
    env.pop("LLMSM_DB", None)
    figures: dict[str, object] = {"load_at_start": load}
    try:
        claude = base / "claude"
        print(f"writing {args.files} transcripts (~{args.requests:,} requests) into {claude} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        corpus = write_claude_corpus(claude, args.files, args.requests)
        print(f"  {corpus['bytes'] / 1e6:,.0f} MB in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        projects = str(claude / "projects")
        db = base / "bench.duckdb"

        nan = float("nan")
        rows: list[tuple[str, float, float, float, str]] = []
        floor = read_floor(claude / "projects")
        rows.append(("baseline: read every line in Python", floor, nan, nan, ""))
        run_measured(llmsm("--version"), env)  # warm-up
        dt, rss, tree, _ = run_measured(llmsm("--version"), env)
        rows.append(("baseline: llmsm --version (start-up)", dt, rss, tree, ""))

        steps = []
        cmd = llmsm("import", "claude-code", projects, "--db", str(db), "--json")
        dt, rss, tree, out = run_measured(cmd, env)
        first = json.loads(out)
        steps.append(("1. first import", dt, rss, tree, first))
        dt, rss, tree, out = run_measured(cmd, env)
        steps.append(("2. again, nothing changed", dt, rss, tree, json.loads(out)))
        app = append_claude(corpus["sessions"], args.append_share, args.append_turns)
        dt, rss, tree, out = run_measured(cmd, env)
        steps.append((f"3. after appending to {app['files']} files", dt, rss, tree, json.loads(out)))
        finish_appends(app["tails"])
        dt, rss, tree, out = run_measured(cmd, env)
        steps.append(("4. the split responses completed", dt, rss, tree, json.loads(out)))
        for name, dt, rss, tree, summary in steps:
            note = f"inserted {summary['inserted']:,}, read {summary['bytes_read'] / 1e6:,.2f} MB of {summary['files_read']:,} files"
            rows.append((f"llmsm import claude-code: {name}", dt, rss, tree, note))

        if args.baseline_rev:
            tree = baseline_tree(args.baseline_rev, base / "baseline")
            benv = dict(env, PYTHONPATH=str(tree))
            bdb = base / "baseline.duckdb"
            bcmd = llmsm("import", "claude-code", projects, "--db", str(bdb), "--json")
            for name in ("first import", "again, nothing changed"):
                # run from the copy: in the repository, its own llmsm/ would come first on sys.path
                dt, rss, tree_rss, out = run_measured(bcmd, benv, cwd=tree)
                rows.append((f"baseline: {args.baseline_rev} {name}", dt, rss, tree_rss,
                             f"inserted {json.loads(out)['inserted']:,} (after step 4)"))

        ccusage = shutil.which("ccusage")
        cc_totals = None
        if ccusage:
            dt, rss, tree, out = run_measured([ccusage, "daily", "--json", "--offline"], dict(env, CLAUDE_CONFIG_DIR=str(claude)))
            cc_totals = json.loads(out).get("totals")
            rows.append(("ccusage daily --json (same corpus, after step 4)", dt, rss, tree, ""))
        else:
            rows.append(("ccusage daily --json", nan, nan, nan, "not on PATH (npx cannot download here): not measured"))

        cx_totals = cx_ours = None
        if args.codex_files:
            codex = write_codex_corpus(base / "codex", args.codex_files, args.codex_turns)
            cdb = base / "codex.duckdb"
            sessions = str(base / "codex" / "sessions")
            for name in ("first import", "again, nothing changed"):
                dt, rss, tree, out = run_measured(llmsm("import", "codex", sessions, "--db", str(cdb), "--json"), env)
                rows.append((f"llmsm import codex: {name} ({codex['files']} rollouts, {codex['bytes'] / 1e6:,.0f} MB)",
                             dt, rss, tree, f"inserted {json.loads(out)['inserted']:,}"))
            if ccusage:  # ccusage >= 20 reads Codex rollouts too (`ccusage codex`; @ccusage/codex before it)
                dt, rss, tree, out = run_measured([ccusage, "codex", "daily", "--json", "--offline"],
                                                  dict(env, CODEX_HOME=str(base / "codex")))
                try:
                    cx_totals = json.loads(out).get("totals")
                    rows.append(("ccusage codex daily --json (same rollouts)", dt, rss, tree, ""))
                except ValueError:
                    rows.append(("ccusage codex daily --json", nan, nan, nan, "no JSON (an older ccusage?)"))
                _, _, _, out = run_measured(llmsm("report", "daily", "--db", str(cdb), "--json", "--utc"), env)
                cx_ours = json.loads(out)["totals"]

        con_tot = None
        try:
            import duckdb

            con = duckdb.connect(str(db), read_only=True)
            con_tot = con.execute("SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
                                  "sum(cache_write_tokens) FROM events").fetchone()
            con.close()
        except Exception as exc:  # the figures above stand without it
            print(f"(could not read the totals: {exc})", file=sys.stderr)

        print()
        print(f"llmsm import benchmark — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.system()} "
              f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load {load:.2f} at start")
        print(f"corpus: {corpus['files']:,} Claude Code files, {corpus['requests']:,} responses, {corpus['bytes'] / 1e6:,.0f} MB"
              f" ({first['lines']:,} lines)")
        w = max(len(r[0]) for r in rows) + 2
        print(f"{'step':<{w}}{'wall s':>8}{'peak MiB':>10}{'tree MiB':>10}  notes")
        for name, dt, rss, tree, note in rows:
            cells = "".join(f"{v:{width}.{digits}f}" if v == v else f"{'–':>{width}}"
                            for v, width, digits in ((dt, 8, 2), (rss, 10, 0), (tree, 10, 0)))
            print(f"{name:<{w}}{cells}  {note}")
        print("peak MiB: the largest process (os.wait4); tree MiB: all its processes together (sampled)")
        first_dt, first_rss = steps[0][1], steps[0][2]
        print()
        print(f"targets: first import < {TARGET_FIRST_S:.0f} s and < {TARGET_FIRST_MB} MB: {first_dt:.1f} s, {first_rss:.0f} MiB "
              f"({'met' if first_dt < TARGET_FIRST_S and first_rss < TARGET_FIRST_MB else 'MISSED'}); unchanged "
              f"< {TARGET_UNCHANGED_S} s: {steps[1][1]:.2f} s ({'met' if steps[1][1] < TARGET_UNCHANGED_S else 'MISSED'}); "
              f"first import / read floor = {first_dt / floor:.1f}x")
        if con_tot:
            print(f"database: {con_tot[0]:,} rows; input {con_tot[1]:,}, output {con_tot[2]:,}, cache read {con_tot[3]:,}, "
                  f"cache write {con_tot[4]:,}")
        if cc_totals:
            print(f"ccusage totals: {cc_totals}")
            if con_tot:
                same = (cc_totals.get("inputTokens"), cc_totals.get("outputTokens"), cc_totals.get("cacheReadTokens"),
                        cc_totals.get("cacheCreationTokens")) == (con_tot[1], con_tot[2], con_tot[3], con_tot[4])
                print(f"Claude Code tokens, llmsm vs ccusage: {'the same' if same else 'DIFFERENT'}")
        if cx_totals and cx_ours:
            ours = (cx_ours["input_tokens"], cx_ours["cache_read_tokens"], cx_ours["output_tokens"], cx_ours["reasoning_tokens"])
            theirs = (cx_totals.get("inputTokens"), cx_totals.get("cacheReadTokens"), cx_totals.get("outputTokens"),
                      cx_totals.get("reasoningOutputTokens"))
            print(f"Codex (input, cache read, output, reasoning): llmsm {ours}, cost {cx_ours['cost_usd']:.6f}; "
                  f"ccusage {theirs}, cost {cx_totals.get('costUSD', float('nan')):.6f}: "
                  f"{'the same' if ours == theirs else 'DIFFERENT'}")
        figures.update(corpus={k: v for k, v in corpus.items() if k != "sessions"},
                       rows=[{"step": r[0], "wall_s": r[1], "peak_mib": r[2], "tree_peak_mib": r[3], "note": r[4]} for r in rows],
                       database_totals=con_tot, ccusage_totals=cc_totals, codex_totals=cx_ours,
                       ccusage_codex_totals=cx_totals)
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(figures, indent=2, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
