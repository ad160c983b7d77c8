"""`llmsm proxy` with a thread-CPU timer around each of llmsm's addon hooks (bench_hooks.py).

    python benchmarks/_hook_probe.py proxy --port 0 --db F --upstream anthropic=URL

Instrumentation for the benchmark, not a stand-in: the real addons run, each hook wrapped in a
timer (thread CPU time, so waiting is not counted). Also timed: the garbage collector on the
event loop (its callbacks), and the CPU of every thread by name (the writer, the status
snapshots, the budget reload, the worker threads of `asyncio.to_thread`). On SIGUSR1 the totals
so far are written as JSON to $LLMSM_HOOK_PROBE_OUT and reset.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import os
import pkgutil
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HOOKS = ("requestheaders", "request", "responseheaders", "response", "error", "websocket_message", "websocket_end",
         "client_connected", "client_disconnected", "server_connect", "server_connected", "server_disconnected")

_spent: dict[str, float] = {}
_gc = {"seconds": 0.0, "collections": [0, 0, 0], "started": 0.0}
_names: dict[int, str] = {}


def _timed(name: str, hook):
    def timed(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return hook(*args, **kwargs)
        finally:
            _spent[name] = _spent.get(name, 0.0) + time.thread_time() - t0

    timed.__name__, timed.__wrapped__ = hook.__name__, hook
    return timed


def _wrap_hooks() -> None:
    import llmsm.addons as addons

    for info in pkgutil.iter_modules(addons.__path__):
        module = importlib.import_module(f"llmsm.addons.{info.name}")
        for cls in [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]:
            for hook in HOOKS:
                fn = cls.__dict__.get(hook)
                # (a coroutine's work happens after it returns: left out; none of the HTTP hooks is one)
                if callable(fn) and not inspect.iscoroutinefunction(fn):
                    setattr(cls, hook, _timed(f"{cls.__name__}.{hook}", fn))


def _on_gc(phase: str, info: dict) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if phase == "start":
        _gc["started"] = time.thread_time()
    else:
        _gc["seconds"] += time.thread_time() - _gc["started"]
        _gc["collections"][info["generation"]] += 1


def _name_threads() -> None:
    run = threading.Thread.run

    def named_run(self):
        _names[threading.get_native_id()] = self.name
        return run(self)

    threading.Thread.run = named_run
    _names[threading.get_native_id()] = "event loop"


def _thread_cpu() -> dict[str, float]:
    out: dict[str, float] = {}
    for tid, seconds in C.thread_cpu_seconds(os.getpid()).items():
        name = _names.get(tid, "other")
        if name.startswith(("asyncio_", "ThreadPoolExecutor")):
            name = "worker threads"
        out[name] = out.get(name, 0.0) + seconds
    return out


def main() -> None:
    _wrap_hooks()
    _name_threads()
    gc.callbacks.append(_on_gc)
    base = {"threads": _thread_cpu(), "wall": time.monotonic()}

    def dump(*_: object) -> None:
        now = _thread_cpu()
        data = {
            "wall_s": time.monotonic() - base["wall"],
            "hooks_s": dict(_spent),
            "gc_s": _gc["seconds"],
            "gc_collections": list(_gc["collections"]),
            "threads_s": {k: v - base["threads"].get(k, 0.0) for k, v in now.items()},
        }
        Path(os.environ["LLMSM_HOOK_PROBE_OUT"]).write_text(json.dumps(data))
        _spent.clear()
        _gc.update(seconds=0.0, collections=[0, 0, 0])
        base.update(threads=now, wall=time.monotonic())

    signal.signal(signal.SIGUSR1, dump)
    from llmsm.cli.main import main as llmsm_main

    sys.argv = ["llmsm", *sys.argv[1:]]
    llmsm_main()


if __name__ == "__main__":
    main()
