"""The team database (PostgreSQL): numbered migrations like the local ones, monthly partitions,
the hourly rollup. docs/team.md describes every column.

`events` holds the local columns (the `events` table of analytics/migrations.py, read from a
local schema so the list is written once: `sync_columns`) plus who shipped them (`developer`,
`host`, `project`, `counted`). It is partitioned by month of `started_at`; a partition is made
before the first row of its month arrives (`ensure_partitions`), and `llmsm team prune` drops
whole months. `usage_hourly` is kept current by each shipped batch, in the batch's own
statement, from the rows that batch really inserted: a resent batch inserts nothing and adds
nothing. Hours (not days) so that day boundaries can be taken in any time zone; `usage_daily`
(the hours summed per UTC day, kept by a trigger on usage_hourly) lets a report read a day in
one row, corrected by the few hours whose local day differs.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

MIGRATIONS_TABLE = "_llmsm_team_migrations"
IDENTITY_COLUMNS = ("developer", "host", "project", "counted")
# Sums kept per hour; the names and meaning of analytics/reports.py's metrics.
ROLLUP_SUMS = (
    "requests", "errors", "estimated_requests", "transcript_requests",
    "input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens",
    "unpriced_requests",
)
ROLLUP_KEYS = ("hour", "developer", "host", "project", "provider", "model", "client")

Migration = Callable[[Any], None]
MIGRATIONS: list[Migration] = []
_lock = threading.Lock()


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def t001_events(cur: Any) -> None:
    # The local columns are added by sync_columns (after every migrate), in the local order.
    cur.execute(
        """
        CREATE TABLE events (
            id text NOT NULL,
            started_at timestamptz NOT NULL,
            developer text NOT NULL,
            host text NOT NULL,
            project text,
            counted boolean NOT NULL DEFAULT true,
            shipped_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (id, started_at)
        ) PARTITION BY RANGE (started_at)
        """
    )


@migration
def t002_usage_hourly(cur: Any) -> None:
    sums = ",\n".join(f"{name} bigint NOT NULL DEFAULT 0" for name in ROLLUP_SUMS)
    cur.execute(
        f"""
        CREATE TABLE usage_hourly (
            hour timestamptz NOT NULL,
            developer text NOT NULL,
            host text NOT NULL,
            project text,
            provider text,
            model text,
            client text,
            {sums},
            cost_usd double precision,
            CONSTRAINT usage_hourly_key UNIQUE NULLS NOT DISTINCT (hour, developer, host, project, provider, model, client)
        )
        """
    )


@migration
def t003_team_budgets(cur: Any) -> None:
    cur.execute(
        """
        CREATE TABLE team_budgets (
            id text PRIMARY KEY,
            scope text NOT NULL CHECK (scope IN ('developer', 'project', 'all')),
            target text,
            period text NOT NULL CHECK (period IN ('day', 'month')),
            max_tokens bigint,
            max_usd double precision,
            warn_at double precision NOT NULL DEFAULT 0.8,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT team_budgets_scope UNIQUE NULLS NOT DISTINCT (scope, target, period)
        )
        """
    )


@migration
def t004_usage_daily(cur: Any) -> None:
    """The daily rollup: usage_hourly summed per UTC day, kept by a trigger on usage_hourly (so
    every writer, of any llmsm version, keeps it, in the writer's own statement). The reports
    read it and correct it with the few hours whose local day is not their UTC day
    (analytics/team/reports.py). `cost_usd` is a plain sum (0 for none), `priced_hours` how
    many of the day's hourly rows have a cost: none means the cost is unknown (NULL)."""
    keys = ", ".join(ROLLUP_KEYS[1:])
    sums = ",\n".join(f"{name} bigint NOT NULL DEFAULT 0" for name in ROLLUP_SUMS)
    names = ", ".join(ROLLUP_SUMS)
    cur.execute("LOCK TABLE usage_hourly IN SHARE ROW EXCLUSIVE MODE")  # no writer between the copy and the trigger
    cur.execute(
        f"""
        CREATE TABLE usage_daily (
            day date NOT NULL,
            developer text NOT NULL,
            host text NOT NULL,
            project text,
            provider text,
            model text,
            client text,
            {sums},
            cost_usd double precision NOT NULL DEFAULT 0,
            priced_hours bigint NOT NULL DEFAULT 0,
            CONSTRAINT usage_daily_key UNIQUE NULLS NOT DISTINCT (day, {keys})
        )
        """
    )

    def upsert(rec: str, sign: str) -> str:
        vals = ", ".join(f"{sign}{rec}.{n}" for n in ROLLUP_SUMS)
        return (f"INSERT INTO usage_daily AS d (day, {keys}, {names}, cost_usd, priced_hours) VALUES "
                f"(({rec}.hour AT TIME ZONE 'UTC')::date, {', '.join(f'{rec}.{k}' for k in ROLLUP_KEYS[1:])}, {vals}, "
                f"{sign}coalesce({rec}.cost_usd, 0), {sign}({rec}.cost_usd IS NOT NULL)::int) "
                f"ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE SET "
                + ", ".join(f"{n} = d.{n} + excluded.{n}" for n in (*ROLLUP_SUMS, "cost_usd", "priced_hours")) + ";")

    same = " AND ".join(f"OLD.{k} IS NOT DISTINCT FROM NEW.{k}" for k in ROLLUP_KEYS)
    delta = ", ".join(f"NEW.{n} - OLD.{n}" for n in ROLLUP_SUMS)
    cur.execute(
        f"""
        CREATE FUNCTION llmsm_usage_daily() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND {same} THEN
                INSERT INTO usage_daily AS d (day, {keys}, {names}, cost_usd, priced_hours) VALUES
                    ((NEW.hour AT TIME ZONE 'UTC')::date, {', '.join(f'NEW.{k}' for k in ROLLUP_KEYS[1:])}, {delta},
                     coalesce(NEW.cost_usd, 0) - coalesce(OLD.cost_usd, 0),
                     (NEW.cost_usd IS NOT NULL)::int - (OLD.cost_usd IS NOT NULL)::int)
                ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE SET
                    {", ".join(f"{n} = d.{n} + excluded.{n}" for n in (*ROLLUP_SUMS, "cost_usd", "priced_hours"))};
                RETURN NULL;
            END IF;
            IF TG_OP = 'UPDATE' THEN
                {upsert("OLD", "-")}
            END IF;
            {upsert("NEW", "")}
            RETURN NULL;
        END $$
        """
    )
    cur.execute(
        f"""
        INSERT INTO usage_daily (day, {keys}, {names}, cost_usd, priced_hours)
        SELECT (hour AT TIME ZONE 'UTC')::date, {keys}, {", ".join(f"sum({n})" for n in ROLLUP_SUMS)},
               coalesce(sum(cost_usd), 0), count(cost_usd)
        FROM usage_hourly GROUP BY 1, {keys}
        """
    )
    cur.execute("CREATE TRIGGER usage_daily_sync AFTER INSERT OR UPDATE ON usage_hourly FOR EACH ROW EXECUTE FUNCTION llmsm_usage_daily()")


_PG_TYPES = {
    "VARCHAR": "text", "TIMESTAMP WITH TIME ZONE": "timestamptz", "BIGINT": "bigint", "INTEGER": "integer",
    "BOOLEAN": "boolean", "DOUBLE": "double precision", "JSON": "jsonb",
}


@functools.cache
def local_columns() -> tuple[tuple[str, str], ...]:
    """(name, PostgreSQL type) of every column of the local `events` table, in order: the local
    migrations run on an in-memory DuckDB, so this follows them without a second list."""
    import duckdb

    from llmsm.analytics import migrations

    con = duckdb.connect(":memory:")
    try:
        migrations.migrate(con)
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY ordinal_position"
        ).fetchall()
    finally:
        con.close()
    return tuple((name, _PG_TYPES[dtype]) for name, dtype in rows)


def sync_columns(cur: Any) -> None:
    """Every local column exists in the team `events` (a newer llmsm's new column is added)."""
    for name, pg_type in local_columns():
        cur.execute(f"ALTER TABLE events ADD COLUMN IF NOT EXISTS {name} {pg_type}")


def migrate(con: Any) -> list[str]:
    """Apply the missing team migrations (one transaction each, serialized across machines by an
    advisory lock), then add any missing local column. Returns the names applied now."""
    with _lock, con.transaction():
        cur = con.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(8107001)")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at timestamptz NOT NULL)")
        cur.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")
        done = {r[0] for r in cur.fetchall()}
        ran = []
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            fn(cur)
            cur.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (%s, now())", [fn.__name__])
            ran.append(fn.__name__)
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'events' AND table_schema = current_schema()")
        if cur.fetchone()[0] < len(local_columns()) + 5:
            sync_columns(cur)
    return ran


# --------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------


def month_start(d: date | datetime) -> date:
    return date(d.year, d.month, 1)


def next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"events_p{month.year:04d}{month.month:02d}"


def ensure_partitions(cur: Any, months: set[date], known: set[date]) -> None:
    """Create the monthly partitions of `months` (and the month after each, ahead) that are not
    in `known`; adds them to `known`. Runs inside the caller's transaction."""
    wanted = set()
    for m in months:
        wanted.add(m)
        wanted.add(next_month(m))
    missing = sorted(wanted - known)
    if not missing:
        return
    cur.execute("SELECT pg_advisory_xact_lock(8107002)")  # two shippers creating the same month
    for m in missing:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {partition_name(m)} PARTITION OF events "
            f"FOR VALUES FROM ('{m.isoformat()} 00:00:00+00') TO ('{next_month(m).isoformat()} 00:00:00+00')"
        )
        known.add(m)


def partitions(cur: Any) -> list[date]:
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events' ORDER BY c.relname"
    )
    out = []
    for (name,) in cur.fetchall():
        if name.startswith("events_p") and len(name) == 14 and name[8:].isdigit():
            out.append(date(int(name[8:12]), int(name[12:14]), 1))
    return out


def prune(con: Any, cutoff: datetime, *, dry_run: bool = False) -> dict[str, Any]:
    """Drop the monthly partitions that end at or before `cutoff` (whole months: the month that
    holds the cutoff is kept), and the rollup's hours before the first month kept."""
    cutoff = cutoff.astimezone(timezone.utc)
    with con.transaction():
        cur = con.cursor()
        old = [m for m in partitions(cur) if next_month(m) <= cutoff.date()]
        rows = 0
        for m in old:
            cur.execute(f"SELECT count(*) FROM {partition_name(m)}")
            rows += cur.fetchone()[0]
        keep_from = next_month(old[-1]) if old else None
        if not dry_run:
            for m in old:
                cur.execute(f"DROP TABLE {partition_name(m)}")
            if keep_from is not None:
                cur.execute("DELETE FROM usage_hourly WHERE hour < %s", [datetime(keep_from.year, keep_from.month, 1, tzinfo=timezone.utc)])
                cur.execute("DELETE FROM usage_daily WHERE day < %s", [keep_from])  # the trigger sees no DELETE
    return {
        "cutoff": cutoff.isoformat(),
        "dropped_months": [m.strftime("%Y-%m") for m in old],
        "dropped_rows": rows,
        "dry_run": dry_run,
    }
