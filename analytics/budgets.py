"""Budgets: definitions, matching an exchange to them, in-memory counters, the decision, and the
provider-shaped error the gateway answers with. Pure apart from a few helpers that take a DuckDB
connection (no mitmproxy, no typer).

A budget caps what one scope may use: a session, a label, a client, or every request of the day
(local date). A token budget counts every token kind (uncached input + output + cache read +
cache write); a USD budget sums `cost_usd` (unpriced requests add nothing: see `llmsm cost`).
"Used" is the same number everywhere: the `budget_status` view (analytics/views.sql) and the
gateway's `BudgetBook`, which starts from that view and is kept in step from each finished event.

A request is refused once used >= limit. Requests already admitted run to completion, so the
overshoot is bounded by what was in flight when the limit was crossed (docs/cost.md).
"""

from __future__ import annotations

import json
import math
import shlex
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Literal, Mapping

Scope = Literal["session", "label", "client", "day"]
SCOPES: tuple[str, ...] = ("session", "label", "client", "day")
TEAM_SCOPES: tuple[str, ...] = ("developer", "project", "all")  # kept in the team database (analytics/team)
State = Literal["ok", "warn", "exceeded"]

DEFAULT_WARN_AT = 0.8
BUDGET_HEADER = "x-llmsm-budget"
ERROR_CODE = "llmsm_budget_exceeded"
# Long enough that a client honouring retry-after does not hot-loop, short enough that one that
# ignores `x-should-retry: false` does not hang for hours.
RETRY_AFTER_SECONDS = 60
MAX_PENDING = 100_000


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    scope: str
    target: str | None
    max_tokens: int | None = None
    max_usd: float | None = None
    warn_at: float = DEFAULT_WARN_AT
    created_at: datetime | None = None
    period: str | None = None  # team budgets (TEAM_SCOPES): 'day' or 'month'

    def describe(self) -> str:
        """How the budget is named in messages: "label 'refactor'", "the daily budget"."""
        if self.scope in TEAM_SCOPES:
            who = "the whole team" if self.scope == "all" else f"{self.scope} {self.target!r}"
            return f"the team's {'daily' if self.period == 'day' else 'monthly'} budget for {who}"
        if self.scope == "day":
            return "the daily budget"
        return f"{self.scope} {self.target!r}" if self.scope != "session" else f"session {self.target}"

    def option(self) -> str:
        """The `llmsm budget set` option that selects this budget's scope."""
        if self.scope in TEAM_SCOPES:
            who = "--all" if self.scope == "all" else f"--{self.scope} {shlex.quote(self.target or '')}"
            return f"--team {who} --{self.period or 'month'}"
        if self.scope == "day":
            return "--day"
        return f"--{self.scope} {shlex.quote(self.target or '')}"

    def window(self, on: date) -> date | None:
        """The first day of the period `on` falls in, for budgets that start again (None: never)."""
        if self.scope == "day" or self.period == "day":
            return on
        if self.period == "month":
            return on.replace(day=1)
        return None

    def applies(self, session_id: str | None, label: str | None, client: str | None,
                developer: str | None = None, project: str | None = None) -> bool:
        if self.scope in ("day", "all"):
            return True
        value = {"session": session_id, "label": label, "client": client,
                 "developer": developer, "project": project}.get(self.scope)
        return value is not None and value == self.target


def new_budget_id() -> str:
    return uuid.uuid4().hex[:8]


def parse_warn_at(text: str | float | None) -> float:
    """'80%', '80', '0.8' -> 0.8. Values above 1 are percents. Raises ValueError."""
    if text is None:
        return DEFAULT_WARN_AT
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.rstrip("%").strip())
    except ValueError:
        raise ValueError(f"--warn-at: {text!r} is not a share (use 80% or 0.8)") from None
    if percent or value > 1:
        value /= 100
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"--warn-at: {text!r} must be between 0 and 100%")
    return value


def parse_tokens(text: str | int) -> int:
    """'2000000', '2M', '500k', '1_000' -> int. Raises ValueError."""
    raw = str(text).strip().replace("_", "").replace(",", "")
    mult = 1
    if raw[-1:].lower() in ("k", "m", "b"):
        mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}[raw[-1].lower()]
        raw = raw[:-1]
    try:
        value = float(raw) * mult
    except ValueError:
        raise ValueError(f"--tokens: {text!r} is not a number of tokens (e.g. 2000000 or 2M)") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"--tokens: {text!r} must be at least 1")
    return int(value)


def parse_usd(text: str | float) -> float:
    raw = str(text).strip().lstrip("$")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"--usd: {text!r} is not an amount (e.g. 20 or 2.50)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--usd: {text!r} must be more than 0")
    return value


def parse_limit(text: str) -> tuple[int | None, float | None]:
    """One limit as a person types it: dollars ('5', '$2.50') or tokens, with a suffix
    ('500k', '2M', '1b') or the word ('300000 tokens'). Returns (max_tokens, max_usd), one of
    them None. Raises ValueError with a message for users."""
    import re

    raw = str(text).strip().lower().replace("_", "").replace(",", "")
    m = re.fullmatch(r"(\$)?\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmb])?\s*(tokens?|tok)?", raw)
    if m is None or (m.group(1) and (m.group(3) or m.group(4))):
        raise ValueError(f"{text!r} is not a limit: dollars (5, $2.50) or tokens with a suffix (500k, 2M)")
    dollar, number, suffix, word = m.groups()
    if suffix or word:
        return parse_tokens(number + (suffix or "")), None
    return None, parse_usd(number)


# --------------------------------------------------------------------------------------------
# What one finished exchange adds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    event_id: str
    session_id: str | None
    label: str | None
    client: str | None
    day: date  # local date of started_at
    tokens: int
    usd: float
    project: str | None = None  # team project budgets: the session's project, where known

    @classmethod
    def from_event(cls, ev: Any) -> Charge:
        """From an ExchangeEvent (or anything with its field names)."""
        get = ev.get if isinstance(ev, Mapping) else lambda name: getattr(ev, name, None)
        return cls(
            event_id=str(get("id")),
            session_id=get("session_id"),
            label=get("label"),
            client=get("client"),
            day=local_date(get("started_at")),
            tokens=event_tokens(get("api"), get("input_tokens"), get("output_tokens"),
                                get("cache_read_tokens"), get("cache_write_tokens")),
            usd=float(get("cost_usd") or 0.0),
        )

    def is_empty(self) -> bool:
        return self.tokens == 0 and self.usd == 0


def event_tokens(api: str | None, *kinds: int | None) -> int:
    """Every token kind counts (input + output + cache read + cache write); 'other' calls none.
    The same rule as `requests.total_tokens` in views.sql."""
    if api == "other":
        return 0
    return sum(int(k) for k in kinds if k)


def local_date(ts: datetime | None) -> date:
    if ts is None:
        return datetime.now().astimezone().date()
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone().date()


def today() -> date:
    return datetime.now().astimezone().date()


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    budget: Budget
    used_tokens: int
    used_usd: float
    kind: Literal["tokens", "usd"]  # the limit closest to (or past) its end
    fraction: float  # used / limit of that kind
    state: State

    @property
    def used(self) -> float:
        return self.used_tokens if self.kind == "tokens" else self.used_usd

    @property
    def limit(self) -> float:
        return (self.budget.max_tokens if self.kind == "tokens" else self.budget.max_usd) or 0


def evaluate(budget: Budget, used_tokens: int, used_usd: float) -> Verdict | None:
    """The state of one budget at the given use; None for a budget without a limit."""
    shares: list[tuple[float, Literal["tokens", "usd"]]] = []
    if budget.max_tokens is not None:
        shares.append((used_tokens / budget.max_tokens if budget.max_tokens > 0 else math.inf, "tokens"))
    if budget.max_usd is not None:
        shares.append((used_usd / budget.max_usd if budget.max_usd > 0 else math.inf, "usd"))
    if not shares:
        return None
    fraction, kind = max(shares, key=lambda s: s[0])
    state: State = "exceeded" if fraction >= 1 else "warn" if fraction >= budget.warn_at else "ok"
    return Verdict(budget, used_tokens, used_usd, kind, fraction, state)


def fmt_amount(kind: str, value: float, *, unit: bool = True) -> str:
    if kind == "usd":
        return f"${value:,.2f}" if value == 0 or value >= 0.01 else f"${value:.2g}"
    return f"{int(value):,} tokens" if unit else f"{int(value):,}"


def raise_command(budget: Budget, kind: str, current_limit: float) -> str:
    """The command that raises this budget (to twice its limit)."""
    if kind == "usd":
        return f"llmsm budget set {budget.option()} --usd {current_limit * 2:g}"
    return f"llmsm budget set {budget.option()} --tokens {int(current_limit) * 2}"


EXCEEDED_PREFIX = "llmsm budget exceeded:"  # how a refusal's message begins (health tells it apart by it)


def exceeded_message(v: Verdict) -> str:
    """What the assistant shows its user: which budget, used, limit, and the way out."""
    b = v.budget
    return (
        f"{EXCEEDED_PREFIX} {b.describe()} has used {fmt_amount(v.kind, v.used, unit=False)} of its "
        f"{fmt_amount(v.kind, v.limit)}{' budget' if v.kind == 'usd' else ''} (budget {b.id}); llmsm stopped this request before it reached "
        f"the provider. To continue, raise the budget: `{raise_command(b, v.kind, v.limit)}` "
        f"(or remove it: `llmsm budget rm {b.id}`)."
    )


def refusal_status(client: str | None) -> int:
    """429, except for Codex CLI: it retries every 429 itself, sleeping `retry-after` between
    tries, and then shows only its own "exceeded retry limit" (minutes of silence). Any other
    4xx it shows at once with the body, so its requests are refused with 402 Payment Required."""
    return 402 if client == "codex" else 429


def error_response(provider: str | None, v: Verdict, client: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the refusal in the provider's own error format; the status is
    `refusal_status(client)`."""
    status, headers, body = _refusal(provider, v, client)
    return status, {"content-type": "application/json", **headers}, json.dumps(body, ensure_ascii=False).encode()


def websocket_error_frame(v: Verdict, client: str | None = None) -> bytes:
    """The refusal of a turn on a Responses WebSocket (Codex): an `error` event with the status
    and headers of the HTTP refusal, which Codex reads as that HTTP error."""
    status, headers, body = _refusal("openai", v, client)
    frame = {"type": "error", "status": status, "error": body["error"], "headers": headers}
    return json.dumps(frame, ensure_ascii=False).encode()


def _refusal(provider: str | None, v: Verdict, client: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers other than content-type, body) of a refusal."""
    status = refusal_status(client)
    msg = exceeded_message(v)
    if provider == "openai":
        body: dict[str, Any] = {
            "error": {"message": msg, "type": "insufficient_quota", "param": None, "code": ERROR_CODE}
        }
    elif provider == "gemini":
        body = {"error": {"code": status, "message": msg, "status": "RESOURCE_EXHAUSTED"}}
    else:  # anthropic, and the default for anything else
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": msg}}
    headers = {
        "retry-after": str(RETRY_AFTER_SECONDS),
        "x-should-retry": "false",  # Stainless SDKs (anthropic, openai) obey it: no retry loop
        BUDGET_HEADER: "exceeded",
        "x-llmsm-budget-id": v.budget.id,
    }
    return status, headers, body


# --------------------------------------------------------------------------------------------
# In-memory counters (the gateway's view of budget_status)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counter:
    budget: Budget
    tokens: int = 0
    usd: float = 0.0
    day: date | None = None  # day budgets: the day these counts are for

    def add(self, c: Charge) -> None:
        window = self.budget.window(c.day)
        if window is not None:
            if self.day is None or window > self.day:  # a new day (or month) began
                self.day, self.tokens, self.usd = window, 0, 0.0
            elif window < self.day:
                return
        self.tokens += c.tokens
        self.usd += c.usd


@dataclass
class BudgetBook:
    """Budgets with their used totals, checked without touching the database.

    `install()` replaces the counters from a database read (`budget_status`) and adds the
    charges seen in memory whose events are not in the database yet; `record()` adds each
    finished exchange; `check()` is what the gateway asks before forwarding a request.
    Thread-safe: the reload thread installs while the event loop records and checks.
    """

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counters: list[_Counter] = field(default_factory=list)
    _pending: OrderedDict[str, Charge] = field(default_factory=OrderedDict)
    loaded: bool = False
    installs: int = 0
    developer: str | None = None  # whose gateway this is (team developer budgets)

    def budgets(self) -> list[Budget]:
        with self._lock:
            return [c.budget for c in self._counters]

    @property
    def idle(self) -> bool:
        """Loaded, and no budget set: nothing to check or count (the common case)."""
        return self.loaded and not self._counters

    def pending_ids(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def record(self, charge: Charge) -> list[Verdict]:
        """Add a finished exchange; returns the verdicts of the budgets it touched."""
        if charge.is_empty():
            return []
        out = []
        with self._lock:
            self._pending[charge.event_id] = charge
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            for ctr in self._counters:
                if ctr.budget.applies(charge.session_id, charge.label, charge.client, self.developer, charge.project):
                    ctr.add(charge)
                    v = evaluate(ctr.budget, ctr.tokens, ctr.usd)
                    if v is not None:
                        out.append(v)
        return out

    def check(self, session_id: str | None, label: str | None, client: str | None, on: date | None = None,
              project: str | None = None, include_ok: bool = False) -> Verdict | None:
        """The most used budget that applies, if any is past its warning threshold (with
        `include_ok`: whatever its state, for the status line); else None."""
        if not self._counters:
            return None
        on = on or today()
        worst: Verdict | None = None
        with self._lock:
            for ctr in self._counters:
                b = ctr.budget
                if not b.applies(session_id, label, client, self.developer, project):
                    continue
                if b.window(on) is not None and ctr.day != b.window(on):
                    tokens, usd = 0, 0.0  # a new day: nothing used yet (the reload catches up)
                else:
                    tokens, usd = ctr.tokens, ctr.usd
                v = evaluate(b, tokens, usd)
                if v is not None and (include_ok or v.state != "ok") and (worst is None or v.fraction > worst.fraction):
                    worst = v
        return worst

    def install(self, rows: Iterable[tuple[Budget, int, float]], in_db: set[str], day: date) -> None:
        """Replace the counters: `rows` are (budget, used tokens, used USD) as the database has
        them on `day`; `in_db` are the ids of pending charges the database already holds.
        Call while the database cannot change (the read connection still open)."""
        with self._lock:
            for event_id in in_db:
                self._pending.pop(event_id, None)
            counters = []
            for budget, tokens, usd in rows:
                ctr = _Counter(budget, int(tokens or 0), float(usd or 0.0), budget.window(day))
                for c in self._pending.values():
                    if budget.applies(c.session_id, c.label, c.client, self.developer, c.project):
                        ctr.add(c)
                counters.append(ctr)
            self._counters = counters
            self.loaded = True
            self.installs += 1

    def snapshot(self) -> list[Verdict]:
        with self._lock:
            return [v for c in self._counters if (v := evaluate(c.budget, c.tokens, c.usd)) is not None]


# --------------------------------------------------------------------------------------------
# Database helpers (a DuckDB connection in, plain values out)
# --------------------------------------------------------------------------------------------

STATUS_COLUMNS = (
    "id", "scope", "target", "max_tokens", "max_usd", "warn_at", "created_at",
    "used_tokens", "used_usd", "pct", "state",
)


def _budget(row: Mapping[str, Any]) -> Budget:
    return Budget(
        id=row["id"], scope=row["scope"], target=row["target"], max_tokens=row["max_tokens"],
        max_usd=row["max_usd"], warn_at=row["warn_at"] if row["warn_at"] is not None else DEFAULT_WARN_AT,
        created_at=row.get("created_at"),
    )


def status(con: Any) -> list[dict[str, Any]]:
    """Every budget with used, pct (0..100+) and state, from the `budget_status` view."""
    cur = con.execute(f"SELECT {', '.join(STATUS_COLUMNS)} FROM budget_status ORDER BY created_at, id")
    return [dict(zip(STATUS_COLUMNS, r)) for r in cur.fetchall()]


def load_for_guard(con: Any, pending_ids: list[str]) -> tuple[list[tuple[Budget, int, float]], set[str], date]:
    """What `BudgetBook.install` needs, read in one go from an open connection."""
    # Most databases have no budget: then budget_status, a pass over every event, is skipped.
    has_budgets = con.execute("SELECT EXISTS (SELECT 1 FROM budgets)").fetchone()[0]
    rows = status(con) if has_budgets else []
    day = con.execute("SELECT current_date").fetchone()[0]
    in_db: set[str] = set()
    if pending_ids:  # with no budget too: the charges the database holds are forgotten
        found = con.execute("SELECT id FROM events WHERE id IN (SELECT unnest(?::VARCHAR[]))", [pending_ids]).fetchall()
        in_db = {r[0] for r in found}
    return [(_budget(r), r["used_tokens"], r["used_usd"]) for r in rows], in_db, day


def session_ids_starting_with(con: Any, prefix: str, limit: int = 3) -> list[str]:
    """Up to `limit` recorded session ids that start with `prefix` (`--session` takes a prefix)."""
    rows = con.execute(
        "SELECT DISTINCT session_id FROM events WHERE starts_with(session_id, ?) LIMIT ?", [prefix, limit]
    ).fetchall()
    return [r[0] for r in rows]


def find(con: Any, scope: str, target: str | None) -> Budget | None:
    row = con.execute(
        "SELECT id, scope, target, max_tokens, max_usd, warn_at, created_at FROM budgets "
        "WHERE scope = ? AND target IS NOT DISTINCT FROM ? ORDER BY created_at LIMIT 1",
        [scope, target],
    ).fetchone()
    if row is None:
        return None
    return _budget(dict(zip(("id", "scope", "target", "max_tokens", "max_usd", "warn_at", "created_at"), row)))


def set_budget(
    con: Any,
    scope: str,
    target: str | None,
    *,
    max_tokens: int | None = None,
    max_usd: float | None = None,
    warn_at: float | None = None,
) -> tuple[Budget, bool]:
    """Create the budget of (scope, target), or update the limits given on the existing one.
    Returns (budget, created)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if scope == "day":
        target = None
    elif not target:
        raise ValueError(f"a {scope} budget needs a {scope} name")
    if max_tokens is None and max_usd is None:
        raise ValueError("give --tokens or --usd (or both)")
    existing = find(con, scope, target)
    if existing is None:
        budget = Budget(new_budget_id(), scope, target, max_tokens, max_usd,
                        warn_at if warn_at is not None else DEFAULT_WARN_AT, datetime.now(timezone.utc))
        con.execute(
            "INSERT INTO budgets (id, scope, target, max_tokens, max_usd, warn_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [budget.id, scope, target, max_tokens, max_usd, budget.warn_at, budget.created_at],
        )
        return budget, True
    budget = Budget(
        existing.id, scope, target,
        max_tokens if max_tokens is not None else existing.max_tokens,
        max_usd if max_usd is not None else existing.max_usd,
        warn_at if warn_at is not None else existing.warn_at,
        existing.created_at,
    )
    con.execute(
        "UPDATE budgets SET max_tokens = ?, max_usd = ?, warn_at = ? WHERE id = ?",
        [budget.max_tokens, budget.max_usd, budget.warn_at, budget.id],
    )
    return budget, False


def remove_budget(con: Any, budget_id: str) -> Budget | None:
    """Delete by id (or a unique id prefix); returns the budget removed, or None."""
    rows = con.execute(
        "SELECT id, scope, target, max_tokens, max_usd, warn_at, created_at FROM budgets WHERE starts_with(id, ?)",
        [budget_id.strip()],
    ).fetchall()
    exact = [r for r in rows if r[0] == budget_id.strip()]
    if exact:
        rows = exact
    if len(rows) != 1:
        if len(rows) > 1:
            raise ValueError(f"{budget_id!r} matches {len(rows)} budgets; give more of the id")
        return None
    b = _budget(dict(zip(("id", "scope", "target", "max_tokens", "max_usd", "warn_at", "created_at"), rows[0])))
    con.execute("DELETE FROM budgets WHERE id = ?", [b.id])
    return b


def remove_scoped_budget(con: Any, scope: str, target: str | None) -> Budget | None:
    """Delete the budget that `set_budget(con, scope, target, ...)` made (a session budget also
    by a unique prefix of its session id); returns it, or None when there is none."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    budget = find(con, scope, None if scope == "day" else target)
    if budget is None and scope == "session" and target:
        ids = [r[0] for r in con.execute(
            "SELECT id FROM budgets WHERE scope = 'session' AND starts_with(target, ?) LIMIT 2", [target]
        ).fetchall()]
        if len(ids) > 1:
            raise ValueError(f"--session {target!r} matches several session budgets; give more of the id")
        return remove_budget(con, ids[0]) if ids else None
    if budget is not None:
        con.execute("DELETE FROM budgets WHERE id = ?", [budget.id])
    return budget
