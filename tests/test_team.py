"""Team shipping with a real PostgreSQL (tests/conftest_team.py) and real gateways: two
developers ship to one team database; the server goes away and comes back; a gateway is
killed with SIGKILL and restarted; every event is in the team database exactly once, the team
reports are the sums of the local ones, and a team budget set from one machine refuses the next
request on the other."""

from __future__ import annotations

import json
import time

import anthropic
import psycopg
import pytest

from tests.conftest import TEST_KEYS, Gateway, run_cli
from tests.conftest_team import otlp_receiver, postgres, team_db  # noqa: F401


def _client(gw: Gateway, session: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=TEST_KEYS["anthropic"], base_url=f"{gw.url}/anthropic",
                               default_headers={"x-llmsm-session": session}, max_retries=0)


def _ask(gw: Gateway, session: str, n: int = 1) -> None:
    c = _client(gw, session)
    for _ in range(n):
        c.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}])


def _local_ids(gw: Gateway) -> set[str]:
    return {r["id"] for r in gw.query("SELECT id FROM events")}


def _team_ids(url: str, developer: str) -> list[str]:
    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute("SELECT id FROM events WHERE developer = %s", [developer]).fetchall()]


def _wait_shipped(url: str, gw: Gateway, developer: str, timeout: float = 20.0) -> list[str]:
    deadline = time.time() + timeout
    want = _local_ids(gw)
    got: list[str] = []
    while time.time() < deadline:
        try:
            got = _team_ids(url, developer)
        except psycopg.Error:
            got = []
        if set(got) >= want:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{developer}: {len(want - set(got))} of {len(want)} not shipped\n{gw.log.read_text()[-2000:]}")


def _gateway(tmp, upstream, url: str, developer: str, *extra: str, db=None) -> Gateway:
    return Gateway(tmp, upstream.url, db=db, extra_args=("--team-db", url, "--developer", developer, *extra))


def test_two_gateways_server_restart_and_sigkill_every_event_exactly_once(upstream, tmp_path, postgres, team_db):
    a = _gateway(tmp_path / "a", upstream, team_db, "alice").start()
    b = _gateway(tmp_path / "b", upstream, team_db, "bob").start()
    try:
        _ask(a, "sa", 3)
        _ask(b, "sb", 2)
        a.wait_rows(3)
        b.wait_rows(2)
        _wait_shipped(team_db, a, "alice")
        _wait_shipped(team_db, b, "bob")

        postgres.stop()  # the team database goes away: the gateways keep serving
        _ask(a, "sa", 2)
        _ask(b, "sb", 2)
        a.wait_rows(5)
        b.wait_rows(4)
        time.sleep(1.5)
        status = json.loads(a.cli("team", "status", "--json").stdout)
        events = [t for t in status["targets"] if t["kind"] == "events"][0]
        assert events["behind"] == 2 and events["last_error"], status
        postgres.start()

        a.kill()  # SIGKILL: what was stored is shipped by the next run, from the stored position
        a2 = _gateway(tmp_path / "a2", upstream, team_db, "alice", db=a.db).start()
        _ask(a2, "sa", 1)
        a2.wait_rows(6)
        alice = _wait_shipped(team_db, a2, "alice")
        bob = _wait_shipped(team_db, b, "bob")
        assert sorted(alice) == sorted(_local_ids(a2)) and len(alice) == len(set(alice))
        assert sorted(bob) == sorted(_local_ids(b)) and len(bob) == len(set(bob))
        status = json.loads(a2.cli("team", "status", "--json").stdout)
        events = [t for t in status["targets"] if t["kind"] == "events"][0]
        assert events["behind"] == 0 and events["last_error"] is None

        # A resend (the position lost) inserts nothing and adds nothing to the rollup.
        before = json.loads(run_cli("team", "report", "daily", "--utc", "--json", "--team-db", team_db).stdout)["totals"]
        p = a2.cli("team", "push", "--team-db", team_db, "--developer", "alice", "--json")
        assert json.loads(p.stdout)["new"] == 0

        # Team reports are the sums of the local ones.
        team = json.loads(run_cli("team", "report", "daily", "--utc", "--json", "--team-db", team_db).stdout)
        assert team["totals"] == before
        local = [json.loads(g.cli("report", "daily", "--utc", "--json").stdout)["totals"] for g in (a2, b)]
        for k, v in team["totals"].items():
            if k == "cost_usd":
                assert v == pytest.approx(sum(t[k] or 0 for t in local))
            else:
                assert v == sum(t[k] for t in local), k
        devs = json.loads(run_cli("team", "report", "developers", "--json", "--team-db", team_db).stdout)
        assert {r["developer"]: r["requests"] for r in devs["rows"]} == {"alice": local[0]["requests"], "bob": local[1]["requests"]}
        sess = json.loads(run_cli("team", "sessions", "--json", "--team-db", team_db).stdout)
        assert {(r["session_id"], r["developer"]) for r in sess["rows"]} == {("sa", "alice"), ("sb", "bob")}
        with psycopg.connect(team_db) as con:  # usage only: no digest left the machine
            assert con.execute("SELECT count(*) FROM events WHERE digest IS NOT NULL").fetchone()[0] == 0
    finally:
        a.stop()
        b.stop()
        if "a2" in locals():
            a2.stop()


def test_a_team_budget_set_on_one_machine_refuses_on_the_other(upstream, tmp_path, team_db):
    a = _gateway(tmp_path / "a", upstream, team_db, "carol").start()
    b = _gateway(tmp_path / "b", upstream, team_db, "dave").start()
    try:
        _ask(a, "sc", 2)
        a.wait_rows(2)
        _wait_shipped(team_db, a, "carol")
        p = run_cli("budget", "set", "--team", "--all", "--day", "--tokens", "1", "--team-db", team_db, "--json")
        assert p.returncode == 0, p.stderr
        deadline = time.time() + 12  # refreshed every 5 s
        while True:
            try:
                _ask(b, "sd")
            except anthropic.RateLimitError as exc:
                assert "llmsm budget exceeded" in str(exc) and "team" in str(exc)
                break
            assert time.time() < deadline, "the team budget was not enforced within 12 s"
            time.sleep(0.5)
    finally:
        a.stop()
        b.stop()


def test_team_prune_drops_whole_months(team_db):
    from datetime import datetime

    from llmsm.analytics.team import schema
    from llmsm.analytics.team.pg import connect

    con = connect(team_db)
    with con.transaction():
        cur = con.cursor()
        schema.ensure_partitions(cur, {schema.month_start(datetime(2025, 1, 5))}, set())
        cur.execute("INSERT INTO events (id, started_at, developer, host, api, outcome) VALUES ('x', '2025-01-05', 'd', 'h', 'messages', 'ok')")
    con.close()
    p = run_cli("team", "prune", "--older-than", "2025-03-01", "--team-db", team_db, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["dropped_months"] == ["2025-01", "2025-02"]


def test_reports_need_only_a_read_only_role(postgres, team_db):
    """docs/team.md's reader: SELECT on events and the two rollups is enough for every report and
    team sessions (they never migrate); a database without the tables is named in one line."""
    from llmsm.analytics.team.pg import connect

    connect(team_db).close()  # the tables, as the first gateway makes them
    role = "reader_" + team_db.rsplit("/", 1)[1]
    with psycopg.connect(team_db, autocommit=True) as con:
        con.execute(f"CREATE ROLE {role} LOGIN")
        con.execute(f"GRANT SELECT ON events, usage_hourly, usage_daily TO {role}")
    url = team_db.replace("postgres@", f"{role}@")
    for kind in ("daily", "weekly", "monthly", "developers", "projects", "models"):
        p = run_cli("team", "report", kind, "--json", "--team-db", url)
        assert p.returncode == 0 and json.loads(p.stdout)["rows"] == [], (kind, p.stderr)
    p = run_cli("team", "sessions", "--json", "--team-db", url)
    assert p.returncode == 0, p.stderr
    p = run_cli("team", "report", "daily", "--team-db", postgres.create_db())
    assert p.returncode == 1 and "has no llmsm tables yet" in p.stderr and "Traceback" not in p.stderr


def test_team_commands_without_a_database_say_so():
    p = run_cli("team", "report", "daily", env={"PATH": "/usr/bin"})
    assert p.returncode == 1 and "no team database" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("team", "report", "daily", "--team-db", "postgresql://nobody@127.0.0.1:1/x")
    assert p.returncode == 1 and "cannot reach the team database" in p.stderr and "Traceback" not in p.stderr


def test_team_reports_from_the_daily_rollup_equal_the_hours_summed_in_any_zone(team_db):
    """The reports read usage_daily (kept by a trigger) corrected by the hours whose local day
    is not their UTC day, and by the hours outside --since/--until: the result must equal the
    plain sum of the hours grouped by their local day, for zones east, west and half-hour."""
    from datetime import datetime, timezone

    from llmsm.analytics.team import reports
    from llmsm.analytics.team.pg import connect

    con = connect(team_db)
    hours = ["2025-03-01 00:00", "2025-03-01 03:00", "2025-03-01 18:00", "2025-03-01 23:00", "2025-03-02 04:00",
             "2025-03-02 12:00", "2025-03-30 00:00", "2025-03-30 01:00", "2025-03-31 22:00", "2025-04-01 02:00"]
    with con.transaction():
        cur = con.cursor()
        for i, h in enumerate(hours):
            for dev, model in (("ann", "m1"), ("ben", "m2"), ("ann", "m2")):
                if (i + len(dev)) % 3 == 0 and model == "m2":
                    continue
                cost = None if (i + len(model)) % 4 == 0 else 0.25 * (i + 1)
                # twice: the second insert is the shipper's ON CONFLICT update (the trigger's UPDATE path)
                for _ in range(2):
                    cur.execute(
                        "INSERT INTO usage_hourly AS u (hour, developer, host, project, provider, model, client, requests,"
                        " input_tokens, output_tokens, unpriced_requests, cost_usd) VALUES (%s, %s, 'h', %s, 'anthropic', %s,"
                        " 'c', 1, 10, 2, %s, %s) ON CONFLICT ON CONSTRAINT usage_hourly_key DO UPDATE SET"
                        " requests = u.requests + 1, input_tokens = u.input_tokens + 10, output_tokens = u.output_tokens + 2,"
                        " unpriced_requests = u.unpriced_requests + excluded.unpriced_requests,"
                        " cost_usd = CASE WHEN u.cost_usd IS NULL AND excluded.cost_usd IS NULL THEN NULL"
                        " ELSE coalesce(u.cost_usd, 0) + coalesce(excluded.cost_usd, 0) END",
                        [h + "+00", dev, "p" + model[-1], model, int(cost is None), cost])
    utc = timezone.utc
    cases = [(None, None), (datetime(2025, 3, 1, 3, tzinfo=utc), datetime(2025, 3, 31, 23, tzinfo=utc)),
             (datetime(2025, 3, 1, 19, tzinfo=utc), None), (datetime(1, 1, 1, tzinfo=utc), datetime(9999, 1, 1, tzinfo=utc)),
             (datetime(2025, 4, 2, tzinfo=utc), None)]
    for tz in ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"):
        for since, until in cases:
            for kind in reports.TEAM_REPORT_KINDS:
                got = reports.build_report(con, kind, tz=tz, since=since, until=until)
                want = _reference(con, kind, tz, since, until)
                rows = {_row_key(kind, r): (r["requests"], r["input_tokens"], r["unpriced_requests"], r["cost_usd"],
                                            r.get("models")) for r in got["rows"]}
                assert rows == want, (kind, tz, since, until)
    assert reports.build_report(con, "daily", tz="UTC", developer="ben")["totals"]["requests"] == sum(
        v[0] for k, v in _reference(con, "daily", "UTC", None, None).items() if k[1] == "ben")
    con.close()
    p = run_cli("team", "report", "weekly", "--json", "--team-db", team_db, env={"TZ": "America/New_York"})
    assert p.returncode == 0 and json.loads(p.stdout)["timezone"] == "America/New_York", p.stderr


_ROW_KEYS = {"daily": ("date", "developer"), "weekly": ("week", "developer"), "monthly": ("month", "developer"),
             "developers": ("developer",), "projects": ("project",), "models": ("provider", "model")}


def _row_key(kind: str, r: dict) -> tuple:
    return tuple(r[k] for k in _ROW_KEYS[kind])


def _reference(con, kind: str, tz: str, since, until) -> dict:
    key = {"daily": "to_char((hour AT TIME ZONE %(tz)s)::date, 'YYYY-MM-DD'), developer",
           "weekly": "to_char(date_trunc('week', hour AT TIME ZONE %(tz)s), 'YYYY-MM-DD'), developer",
           "monthly": "to_char(date_trunc('month', hour AT TIME ZONE %(tz)s), 'YYYY-MM'), developer",
           "developers": "developer", "projects": "project", "models": "provider, model"}[kind]
    n = len(_ROW_KEYS[kind])
    rows = con.execute(
        f"SELECT {key}, sum(requests), sum(input_tokens), sum(unpriced_requests), round(sum(cost_usd)::numeric, 9)::float8,"
        f" array_agg(DISTINCT model) FROM usage_hourly WHERE (%(since)s::timestamptz IS NULL OR hour >= %(since)s)"
        f" AND (%(until)s::timestamptz IS NULL OR hour < %(until)s) GROUP BY {', '.join(str(i + 1) for i in range(n))}",
        {"tz": tz, "since": since, "until": until}).fetchall()
    return {tuple(r[:n]): (int(r[n]), int(r[n + 1]), int(r[n + 2]), r[n + 3], None if kind == "models" else sorted(r[n + 4]))
            for r in rows}
