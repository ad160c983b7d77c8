"""The one grammar of times on the command line: `--since`, `--until`, `--at`, `--older-than`.

Every command that takes a time reads it here (docs/reports.md, "Times"). Forms, case ignored:

=========================  =================================================================
``now``                    this moment
``today``, ``yesterday``   that day's midnight in the zone; as an end (``--until``) the next
                           midnight, so the whole day is included
``2026-11-01``             a date: the same, midnight or (as an end) the next midnight
``2026-11-01T09:30``       a wall-clock time in the zone (seconds optional, a space may replace T)
``2026-11-01T09:30+02:00`` an exact instant (``…Z`` for UTC)
``90s 15m 2h 7d 4w``       that long ago (s, m, h, d, w or their long names; ``1.5h``)
``+10m``, ``-2h``          that long after / before now
=========================  =================================================================

The zone is a ``tzinfo``, or None for the system's local zone. ``--at`` names a moment that may
lie ahead, so there a bare duration is refused: it must say ``+10m`` or ``-10m``
(``ago=False``). Bad input raises BadTime, a ValueError whose text is one line naming the
option. Results are aware datetimes in UTC; a date too far out for Python's datetime is clamped
to the first or last representable instant (``--since 0001-01-01`` means "from the beginning").

Pure: no database, no I/O.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["FORMS", "SINCE_HELP", "UNTIL_HELP", "BadTime", "parse_time", "parse_period", "zone_named"]

UTC = timezone.utc
FORMS = (
    "a date (2026-11-01), a time (2026-11-01T09:30, 2026-11-01T09:30+02:00), "
    "an age (90s, 15m, 2h, 7d, 4w), an offset (+10m, -2h), today, yesterday or now"
)
# the --since / --until help of every command that takes a period
SINCE_HELP = "From this time on (inclusive): 2026-11-01, 2026-11-01T09:30, 90s, 15m, 2h, 7d, 4w (ago), today, yesterday."
UNTIL_HELP = "Up to this time (a date, today or yesterday includes that whole day): the forms of --since."
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)

_DURATION = re.compile(r"^([+-])?\s*(\d+(?:\.\d+)?)\s*([a-z]+)$")
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadTime(ValueError):
    """A time the user gave that cannot be read; str() is one line naming the option."""


def zone_named(name: str) -> tzinfo:
    """The zone of an IANA name (`--tz`), UTC for 'UTC'; BadTime when Python does not know it."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTime(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC") from None


def parse_time(
    text: str,
    *,
    option: str,
    now: datetime | None = None,
    zone: tzinfo | None = None,
    end: bool = False,
    ago: bool = True,
) -> datetime:
    """The instant (UTC) that `text` names, by the grammar above.

    `now`: the moment relative forms are measured from (aware; default: the clock).
    `zone`: where dates and wall-clock times are read (None: the system's local zone).
    `end`: a whole day (date, today, yesterday) stands for its end, the next midnight.
    `ago`: a bare duration (7d) means that long ago; False refuses it (say +7d or -7d).
    """
    raw = (text or "").strip()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not raw:
        raise BadTime(f"{option} is empty: use {FORMS}")
    low = raw.lower()
    if low == "now":
        return now
    if low in ("today", "yesterday"):
        day = now.astimezone(zone).date() if zone is not None else now.astimezone().date()
        return _day(day - timedelta(days=1 if low == "yesterday" else 0), zone, end)
    if m := _DURATION.match(low):
        sign, amount, unit = m.groups()
        if unit not in _UNIT_SECONDS:
            raise BadTime(f"{option} {raw!r}: unknown unit {unit!r}; use s, m, h, d or w (e.g. 90s, 15m, 2h, 7d, 4w)")
        if sign is None and not ago:
            raise BadTime(f"{option} {raw!r}: ahead or ago? say +{raw} or -{raw}")
        try:
            span = timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
            return now + span if sign == "+" else now - span
        except OverflowError:
            return _LAST if sign == "+" else _FIRST
    try:
        return _day(date.fromisoformat(raw), zone, end)
    except ValueError:
        if _DATE_LIKE.match(raw):
            raise BadTime(f"{option} {raw!r}: not a valid date") from None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadTime(f"{option} {raw!r}: not a time; use {FORMS}") from None
    if value.tzinfo is None:
        return _wall_clock(value, zone)
    return _to_utc(value)


def parse_period(
    since: str | None,
    until: str | None,
    *,
    now: datetime | None = None,
    zone: tzinfo | None = None,
) -> tuple[datetime | None, datetime | None]:
    """`--since` (inclusive) and `--until` (exclusive; a day given there is included whole), each
    None when not given. BadTime when either cannot be read or the period is empty."""
    now = now or datetime.now(UTC)
    s = parse_time(since, option="--since", now=now, zone=zone) if since is not None else None
    u = parse_time(until, option="--until", now=now, zone=zone, end=True) if until is not None else None
    if s is not None and u is not None and s >= u:
        raise BadTime(f"--since ({since}) is not before --until ({until}): the period is empty")
    return s, u


def _day(day: date, zone: tzinfo | None, end: bool) -> datetime:
    """Midnight starting `day` in the zone, or (end) the midnight after it."""
    if end:
        try:
            day += timedelta(days=1)
        except OverflowError:
            return _LAST
    return _wall_clock(datetime(day.year, day.month, day.day), zone)


def _wall_clock(value: datetime, zone: tzinfo | None) -> datetime:
    """A naive wall-clock time read in the zone (None: the system's local zone), as UTC."""
    try:
        aware = value.replace(tzinfo=zone) if zone is not None else value.astimezone()
        return aware.astimezone(UTC)
    except (OverflowError, OSError, ValueError):
        # the zone's offset pushes it past year 1 or 9999 (or the C library refuses the year)
        return _FIRST if value.year < 5000 else _LAST


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _FIRST if value.year < 5000 else _LAST
