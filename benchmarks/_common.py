"""What the benchmarks share: a fake Anthropic upstream, a bare mitmproxy, `llmsm proxy`, a lean
HTTP/1.1 client, /proc readers and small statistics.

Every server runs in a process of its own, so the process being measured (a proxy) does nothing
but proxy. Run as a script, this module *is* those servers:

    python benchmarks/_common.py upstream                 # the fake upstream
    python benchmarks/_common.py bare http://127.0.0.1:P  # mitmproxy, reverse mode, streaming on

Each prints ``listening on http://127.0.0.1:PORT`` on stderr once it accepts connections (the
same line `llmsm proxy` prints). Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------------------
# The fake upstream's answers (deterministic, so the client can check bytes without asking it)
# ---------------------------------------------------------------------------------------------

USAGE = {"input_tokens": 21, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 42}


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse_events(sid: str, n: int) -> list[bytes]:
    """An Anthropic Messages stream of exactly `n` (>= 5) events; `sid` makes it unique."""
    n = max(5, n)
    msg = {
        "id": f"msg_bench_{sid}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": dict(USAGE, output_tokens=1),
    }
    out = [
        _sse("message_start", {"type": "message_start", "message": msg}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for i in range(n - 5):
        text = f" {sid}:{i} lorem ipsum dolor sit amet"
        out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}))
    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(_sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": USAGE["output_tokens"]}}))
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return out


def expected_stream(sid: str, n: int) -> bytes:
    return b"".join(sse_events(sid, n))


def json_message(sid: str) -> bytes:
    return json.dumps({
        "id": f"msg_bench_{sid}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello from the benchmark upstream."}],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE,
    }, separators=(",", ":")).encode()


_RESP_HEADERS = (
    "request-id: req_bench\r\n"
    "anthropic-ratelimit-tokens-limit: 400000\r\n"
    "anthropic-ratelimit-tokens-remaining: 399000\r\n"
)


def _bench_params(headers: dict[str, str]) -> tuple[int, float]:
    events, gap = 20, 0.05
    for part in headers.get("x-bench", "").split(","):
        k, _, v = part.strip().partition("=")
        if k == "events":
            events = int(v)
        elif k == "gap":
            gap = float(v)
    return events, gap


async def _upstream_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length") or 0)
            body = await reader.readexactly(n) if n else b""
            sid = headers.get("x-bench-id", "0")
            try:
                stream = bool(json.loads(body).get("stream")) if body else False
            except ValueError:
                stream = False
            if stream:
                events, gap = _bench_params(headers)
                writer.write(
                    ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n" + _RESP_HEADERS + "\r\n").encode()
                )
                await writer.drain()
                evs = sse_events(sid, events)
                for i, ev in enumerate(evs):
                    if i and gap:
                        await asyncio.sleep(gap)
                    writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                data = json_message(sid)
                writer.write(
                    (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
                     + _RESP_HEADERS + "\r\n").encode() + data
                )
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _run_upstream() -> None:
    server = await asyncio.start_server(_upstream_handle, HOST, 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://{HOST}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# ---------------------------------------------------------------------------------------------
# Bare mitmproxy: one reverse listener, lazy upstream connections, no termlog or dumper, and an
# addon that streams what llmsm streams (SSE, and bodies without a small Content-Length).
# "stock": mitmdump's addons (DumpMaster), mitmproxy as its users run it: the baseline of the
# targets. "lean": only the mitmproxy addons `llmsm proxy` loads (addons/server.py), to show
# what llmsm's own hooks cost on top of the same mitmproxy.
# ---------------------------------------------------------------------------------------------

BARE_VARIANTS = {"stock": "bare mitmproxy", "lean": "lean mitmproxy"}  # variant -> name in the tables


async def _run_bare(upstream: str, confdir: str, variant: str = "stock") -> None:
    from mitmproxy import ctx
    from mitmproxy.options import Options

    class Stream:
        def responseheaders(self, flow) -> None:
            size = flow.response.headers.get("content-length", "")
            sse = "text/event-stream" in flow.response.headers.get("content-type", "")
            if sse or not size.isdigit() or int(size) > 256 * 1024:
                flow.response.stream = True

    class Announce:
        def running(self) -> None:
            addrs = ctx.master.addons.get("proxyserver").listen_addrs()
            print(f"listening on http://{HOST}:{addrs[0][1]}", file=sys.stderr, flush=True)

    opts = Options(confdir=confdir, listen_host=HOST, mode=[f"reverse:{upstream}@0"])
    if variant == "lean":
        from mitmproxy.master import Master

        from llmsm.addons.server import mitmproxy_addons

        master = Master(opts)
        master.addons.add(*mitmproxy_addons(), Stream(), Announce())
        opts.update(connection_strategy="lazy")
    else:
        from mitmproxy.tools.dump import DumpMaster

        master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        master.addons.add(Stream(), Announce())
        opts.update(connection_strategy="lazy", anticomp=False, anticache=False)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


def bench_env() -> dict[str, str]:
    """An environment that keeps llmsm's and mitmproxy's files under benchmarks/out/."""
    env = dict(os.environ)
    base = OUT / "env"
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("HOME", "home")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    env["NO_COLOR"] = "1"
    env.pop("LLMSM_DB", None)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    return env


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of `pid` (threads made later inherit from their creator)."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


class Server:
    """A child process that prints `listening on http://127.0.0.1:PORT` on stderr."""

    def __init__(self, name: str, args: list[str], *, log: Path, cpus: set[int] | None = None) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._fh, stderr=self._fh, env=bench_env(), cwd=REPO)
        pin(self.proc.pid, self.cpus)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
            if m and m.group(1) != "0":
                self.port = int(m.group(1))
                pin(self.proc.pid, self.cpus)  # threads started during start-up
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {timeout}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_upstream(tag: str, cpus: set[int] | None = None) -> Server:
    return Server("upstream", [PY, str(Path(__file__)), "upstream"], log=OUT / "logs" / f"{tag}-upstream.log", cpus=cpus).start()


def start_bare(upstream_url: str, tag: str, cpus: set[int] | None = None, variant: str = "stock") -> Server:
    """Bare mitmproxy (see _run_bare): "stock" as mitmdump loads it, or "lean"."""
    confdir = OUT / "env" / "bare-confdir"
    confdir.mkdir(parents=True, exist_ok=True)
    args = [PY, str(Path(__file__)), "bare", upstream_url, str(confdir), variant]
    name = BARE_VARIANTS[variant]
    return Server(name, args, log=OUT / "logs" / f"{tag}-bare-{variant}.log", cpus=cpus).start()


class Llmsm(Server):
    """`llmsm proxy --port 0 --db F --upstream anthropic=URL` with a fresh database; `entry`: what
    runs the `llmsm` command (bench_hooks.py: a script that times its hooks, then runs it)."""

    def __init__(self, upstream_url: str, tag: str, cpus: set[int] | None = None,
                 entry: tuple[str, ...] = ("-m", "llmsm.cli.main"), name: str = "llmsm") -> None:
        self.db = fresh_db(tag)
        args = [PY, *entry, "proxy", "--port", "0", "--db", str(self.db), "--upstream", f"anthropic={upstream_url}"]
        super().__init__("llmsm proxy", args, log=OUT / "logs" / f"{tag}-{name}.log", cpus=cpus)


def start_llmsm(upstream_url: str, tag: str, cpus: set[int] | None = None) -> Llmsm:
    gw = Llmsm(upstream_url, tag, cpus)
    gw.start()
    return gw


_db_counter = 0


def fresh_db(tag: str) -> Path:
    """A new, empty database path under benchmarks/out/db/ (old files of that name removed)."""
    global _db_counter
    _db_counter += 1
    d = OUT / "db"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{tag}-{os.getpid()}-{_db_counter}.duckdb"
    for p in (path, Path(str(path) + ".wal"), Path(str(path) + ".gateway.json")):
        p.unlink(missing_ok=True)
    spool = Path(str(path) + ".spool")
    if spool.is_dir():
        for f in spool.iterdir():
            f.unlink()
    return path


def row_summary(db: Path) -> dict[str, int]:
    """Counts in a stopped gateway's database, read like `llmsm sql` does (read-only)."""
    from llmsm.analytics.store import open_for_query, run_query

    con = open_for_query(db, timeout=10)
    try:
        _, rows = run_query(
            con,
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'ok'), "
            "count(*) FILTER (WHERE usage_source = 'reported' AND output_tokens = 42), "
            "count(*) FILTER (WHERE streamed) FROM requests",
        )
    finally:
        con.close()
    total, ok, usage, streamed = rows[0]
    return {"rows": total, "ok": ok, "usage_ok": usage, "streamed": streamed}


# ---------------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread id (the main thread's id is the pid)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def status_kb(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class RssSampler:
    """Samples VmRSS of a process every `interval` s in a thread; `.peak_kb` is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, status_kb(self.pid))
                self.samples += 1
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(2)


# ---------------------------------------------------------------------------------------------
# A lean HTTP/1.1 client (asyncio streams): cheap enough that the load generator costs a
# fraction of what the proxy costs, and it times the first server-sent event exactly.
# ---------------------------------------------------------------------------------------------

API_KEY = "sk-ant-bench-0123456789abcdef"


def request_body(sid: str, *, stream: bool, pad_kb: int = 0, turns: int = 1, turn_kb: int = 0,
                 cache_last: bool = False) -> bytes:
    """A Claude-Code-like Messages request; `pad_kb` adds a long first message, `turns` a history
    in which, with `turn_kb`, each later turn is a tool call and a tool result of that size.
    `cache_last`: a cache marker on the last message, as Claude Code moves it there each turn."""
    messages: list[dict] = []
    for t in range(turns):
        if t and turn_kb:
            messages.append({"role": "assistant", "content": [
                {"type": "text", "text": f"answer {t} of {sid}: running it"},
                {"type": "tool_use", "id": f"toolu_{t}", "name": "Bash", "input": {"command": f"pytest -q tests/t{t}.py"}},
            ]})
            result = f"output {t} " + ("lorem ipsum " * (turn_kb * 1024 // 12))
            messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{t}", "content": result}]})
            continue
        if t:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {t} of {sid}"}]})
        text = f"question {t} of conversation {sid}"
        if t == 0 and pad_kb:
            text += " " + ("lorem ipsum " * (pad_kb * 1024 // 12))
        messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
    if cache_last:
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "You are a helpful coding assistant.", "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
        "stream": stream,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def request_headers(sid: str, *, events: int = 20, gap: float = 0.05, session: str | None = None) -> dict[str, str]:
    h = {
        "content-type": "application/json",
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "user-agent": "claude-cli/2.0.0 (external, cli)",
        "x-bench-id": sid,
        "x-bench": f"events={events},gap={gap}",
    }
    if session:
        h["x-claude-code-session-id"] = session
    return h


@dataclass
class Reply:
    status: int
    body: bytes
    t0: float  # request start (before connecting, for a new connection)
    t_first_event: float | None = None  # the first complete SSE event ("\n\n") received
    t_end: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def first_event_ms(self) -> float:
        return ((self.t_first_event or self.t_end) - self.t0) * 1000

    @property
    def total_ms(self) -> float:
        return (self.t_end - self.t0) * 1000


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None

    async def request(self, path: str, headers: dict[str, str], body: bytes, *, t0: float | None = None) -> Reply:
        t0 = time.perf_counter() if t0 is None else t0
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nhost: {HOST}:{self.port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        rh: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                rh[k.strip().lower()] = v.strip()
        reply = Reply(status=status, body=b"", t0=t0, headers=rh)
        buf = bytearray()
        if "chunked" in rh.get("transfer-encoding", "").lower():
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunk = (await self.reader.readexactly(size + 2))[:-2]
                start = max(0, len(buf) - 1)
                buf += chunk
                if reply.t_first_event is None and buf.find(b"\n\n", start) >= 0:
                    reply.t_first_event = time.perf_counter()
        elif "content-length" in rh:
            buf += await self.reader.readexactly(int(rh["content-length"]))
        else:
            buf += await self.reader.read()
            rh["connection"] = "close"
        reply.t_end = time.perf_counter()
        reply.body = bytes(buf)
        if rh.get("connection", "").lower() == "close":
            await self.close()
        return reply


async def one_request(port: int, path: str, headers: dict[str, str], body: bytes) -> Reply:
    """A request on a new connection (timed from before the connect)."""
    t0 = time.perf_counter()
    conn = Conn(port)
    try:
        await conn.open()
        return await conn.request(path, headers, body, t0=t0)
    finally:
        await conn.close()


async def load(port: int, path: str, total: int, concurrency: int, make, rate: float = 0.0) -> tuple[float, int]:
    """`total` requests over `concurrency` keep-alive connections; make(i) -> (headers, body).
    `rate`: requests per second at most (request i starts no earlier than i / rate seconds in;
    0: as fast as the proxy answers).

    Returns (seconds, failures). A failed connection is reopened; no request is retried.
    """
    counter = iter(range(total))
    failures = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal failures
        conn = Conn(port)
        try:
            for i in counter:
                if rate > 0:
                    wait = t0 + i / rate - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                headers, body = make(i)
                try:
                    r = await asyncio.wait_for(conn.request(path, headers, body), 30)
                    if r.status != 200:
                        failures += 1
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                    failures += 1
                    await conn.close()
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, failures


# ---------------------------------------------------------------------------------------------
# Statistics and printing
# ---------------------------------------------------------------------------------------------


def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs) -> float:
    """Nearest-rank 95th percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, -(-95 * len(s) // 100) - 1))
    return s[k]


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (pastes straight into docs/benchmarks.md)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def machine() -> dict[str, str]:
    """nproc, CPU model, RAM, date and versions, for the report."""
    import platform

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    info = {"nproc": str(os.cpu_count()), "cpu": model, "ram": mem_gb, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    try:
        info["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    try:
        import mitmproxy.version

        info["mitmproxy"] = mitmproxy.version.VERSION
    except ImportError:
        pass
    try:
        import duckdb

        info["duckdb"] = duckdb.__version__
    except ImportError:
        pass
    return info


def print_machine() -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()))


def save_json(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(dict(data, machine=machine()), indent=2, default=str))
    return path


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "upstream":
        asyncio.run(_run_upstream())
    elif len(sys.argv) >= 4 and sys.argv[1] == "bare" and sys.argv[4:5] in ([], *([v] for v in BARE_VARIANTS)):
        asyncio.run(_run_bare(*sys.argv[2:5]))
    else:
        sys.exit(f"usage: _common.py upstream | bare UPSTREAM_URL CONFDIR [{'|'.join(BARE_VARIANTS)}]")
