"""analytics/timespec.py: every form of the one time grammar, against instants computed here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from llmsm.analytics.timespec import FORMS, BadTime, parse_period, parse_time, zone_named

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
# 02:30 UTC on Nov 25 is still Nov 24 in New York: "today" depends on the zone
NOW = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)


def at(text: str, *, zone=NY, end: bool = False, ago: bool = True) -> datetime:
    return parse_time(text, option="--since", now=NOW, zone=zone, end=end, ago=ago)


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY).astimezone(UTC)


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("15m", 15 * 60), ("2h", 7200), ("7d", 7 * 86400), ("4w", 28 * 86400),
    ("1.5h", 5400), ("10 min", 600), ("3 days", 3 * 86400), ("2weeks", 14 * 86400), ("45 SECS", 45),
])
def test_durations_mean_that_long_ago(text, seconds):
    assert at(text) == NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize("text, seconds", [("+10m", 600), ("-1h", -3600), ("-90s", -90), ("+2d", 2 * 86400), ("+ 1w", 7 * 86400)])
def test_signed_offsets_are_ahead_or_back(text, seconds):
    assert at(text) == at(text, ago=False) == NOW + timedelta(seconds=seconds)


def test_a_moment_that_may_be_ahead_needs_the_sign():
    with pytest.raises(BadTime, match=r"^--at '10m': ahead or ago\? say \+10m or -10m$"):
        parse_time("10m", option="--at", now=NOW, ago=False)


def test_now_today_yesterday_in_the_zone():
    assert at("now") == at("NOW") == NOW
    assert at("today") == ny(2026, 11, 24)  # New York's today at 02:30 UTC
    assert at("today", end=True) == ny(2026, 11, 25)
    assert at("yesterday") == ny(2026, 11, 23)
    assert at("yesterday", end=True) == ny(2026, 11, 24)
    assert at("today", zone=UTC) == datetime(2026, 11, 25, tzinfo=UTC)


def test_dates_are_whole_days_in_the_zone():
    assert at("2026-11-01") == ny(2026, 11, 1)
    assert at("2026-11-01", end=True) == ny(2026, 11, 2)  # --until includes the day
    assert at("2026-11-01", end=True) - at("2026-11-01") == timedelta(hours=25)  # DST ends that night
    assert at("20261101") == ny(2026, 11, 1)


def test_wall_clock_times_and_exact_instants():
    assert at("2026-11-01T09:30") == at("2026-11-01 09:30:00") == ny(2026, 11, 1, 9, 30)
    assert at("2026-11-01T09:30", end=True) == ny(2026, 11, 1, 9, 30)  # a time is a time, also as an end
    assert at("2026-11-01T09:30+02:00") == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    assert at("2026-11-01T09:30Z") == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert at("2026-11-01T09:30:15.250Z").microsecond == 250_000


def test_the_system_zone_when_none_is_given():
    assert at("2026-11-01T09:30", zone=None) == datetime(2026, 11, 1, 9, 30).astimezone().astimezone(UTC)
    assert at("today", zone=None) == datetime.combine(NOW.astimezone().date(), datetime.min.time()).astimezone().astimezone(UTC)


def test_results_are_utc():
    for text in ("7d", "today", "2026-11-01", "2026-11-01T09:30", "2026-11-01T09:30+02:00", "now"):
        assert at(text).tzinfo is UTC


def test_far_dates_are_the_first_and_last_instants_not_today():
    """Placeholder dates once stood for today and yesterday: 0001-01-01 reported from today."""
    first = at("0001-01-01")
    assert first.year == 1 and first < datetime(1900, 1, 1, tzinfo=UTC)
    assert at("0001-01-01", zone=UTC) == datetime(1, 1, 1, tzinfo=UTC)
    assert at("0001-01-02") < datetime(1, 1, 3, tzinfo=UTC)
    assert at("9999-12-31", end=True) == datetime.max.replace(tzinfo=UTC)
    assert at("9999-12-31T23:00", zone=ZoneInfo("Pacific/Kiritimati")) <= datetime.max.replace(tzinfo=UTC)
    assert at("1000000w") == datetime.min.replace(tzinfo=UTC)  # ~19,000 years ago
    assert at("+1000000w") == datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize("text, message", [
    ("soon", "--since 'soon': not a time; use "),
    ("last tuesday", "not a time"),
    ("2026-02-30", "--since '2026-02-30': not a valid date"),
    ("2026-13-01", "not a valid date"),
    ("5y", "--since '5y': unknown unit 'y'"),
    ("", "--since is empty"),
    ("   ", "--since is empty"),
    ("2026-11-01T25:00", "not a time"),
])
def test_bad_input_is_one_line_naming_the_option(text, message):
    with pytest.raises(BadTime) as info:
        at(text)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_forms_name_every_kind():
    for example in ("2026-11-01", "2026-11-01T09:30", "90s", "7d", "+10m", "today", "yesterday", "now"):
        assert example in FORMS


def test_period():
    assert parse_period(None, None, now=NOW) == (None, None)
    assert parse_period("2026-11-01", "2026-11-01", now=NOW, zone=NY) == (ny(2026, 11, 1), ny(2026, 11, 2))
    assert parse_period("7d", "1h", now=NOW) == (NOW - timedelta(days=7), NOW - timedelta(hours=1))
    with pytest.raises(BadTime, match=r"--since \(1h\) is not before --until \(7d\): the period is empty"):
        parse_period("1h", "7d", now=NOW)
    with pytest.raises(BadTime, match="--until 'x'"):
        parse_period("1h", "x", now=NOW)


def test_zone_named():
    assert zone_named("UTC") is UTC and zone_named("utc") is UTC
    assert zone_named("Europe/Paris") == ZoneInfo("Europe/Paris")
    with pytest.raises(BadTime, match="unknown time zone 'Mars/Olympus'"):
        zone_named("Mars/Olympus")
