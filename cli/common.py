"""What every command shares: the database option, consoles, errors, JSON output."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="LLMSM_DB",
        # No square brackets here: rich would read them as markup and drop them.
        help="DuckDB database file (default: llmsm.duckdb in your user data directory, e.g. ~/.local/share/llmsm/).",
        show_default=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

# Colour and decoration only on a terminal; rich also honours NO_COLOR and FORCE_COLOR.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def resolve_db(db: Path | None) -> Path:
    if db is not None:
        return db.expanduser()
    from llmsm.analytics.store import default_db_path

    return default_db_path()


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: no traceback for the user's mistakes."""
    if err_console.is_terminal:
        err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def to_json(value: Any) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)`, byte for byte,
    but each run of plain values (a report row's numbers) is written by json's C encoder, its
    item separator being the newline and indent of its depth: the pure-Python indenting encoder
    took most of a large report's time (18k team rows: 0.4 s of 0.5)."""
    return _pretty(value, 0)


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_NESTED = (dict, list, tuple)
_FLAT: dict[int, Any] = {}
_KEYS: dict[tuple[type, Any], str] = {}
_SHORT: dict[tuple, str] = {}


def _flat(level: int) -> Any:
    """Encodes a plain value, or a container of plain values whose items sit at depth `level`."""
    enc = _FLAT.get(level)
    if enc is None:
        from json import encoder as _enc

        sep = ",\n" + "  " * level
        if _enc.c_make_encoder is not None:  # json.JSONEncoder.encode's own C path, made once
            c = _enc.c_make_encoder(None, _json_default, _enc.encode_basestring, None, ": ", sep, False, False, True)

            def enc(o: Any, _c: Any = c) -> str:
                return _enc.encode_basestring(o) if isinstance(o, str) else "".join(_c(o, 0))
        else:
            enc = json.JSONEncoder(ensure_ascii=False, default=_json_default, separators=(sep, ": ")).encode
        _FLAT[level] = enc
    return enc


def _key(k: Any) -> str:
    text = _KEYS.get((type(k), k))
    if text is None:
        text = _KEYS[(type(k), k)] = _flat(0)({k: 0})[1:-4]  # str() and escaped as json does
    return text


def _pretty(value: Any, level: int) -> str:
    while type(value) not in _PLAIN_TYPES and not isinstance(value, (str, int, float, *_NESTED)):
        value = _json_default(value)
    if not isinstance(value, _NESTED):
        return _flat(level)(value)
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    inner = level + 1
    pad, close = "\n" + "  " * inner, "\n" + "  " * level + ("}" if isinstance(value, dict) else "]")
    values = value.values() if isinstance(value, dict) else value
    odd = [i for i, t in enumerate(map(type, values)) if t not in _PLAIN_TYPES]
    if not odd:
        if type(value) is list and len(value) < 8:  # a row's short list (its models): often the same
            key = (level, *value, *map(type, value))
            text = _SHORT.get(key)
            if text is None:
                if len(_SHORT) > 4096:
                    _SHORT.clear()
                text = _SHORT[key] = "[" + pad + _flat(inner)(value)[1:-1] + close
            return text
        return ("{" if isinstance(value, dict) else "[") + pad + _flat(inner)(value)[1:-1] + close
    parts = []
    if isinstance(value, dict):
        items = list(value.items())
        prev = 0
        for i in odd:
            if i > prev:
                parts.append(_flat(inner)(dict(items[prev:i]))[1:-1])
            parts.append(_key(items[i][0]) + ": " + _pretty(items[i][1], inner))
            prev = i + 1
        if prev < len(items):
            parts.append(_flat(inner)(dict(items[prev:]))[1:-1])
        return "{" + pad + ("," + pad).join(parts) + close
    if len(odd) == len(value) and all(type(v) is dict and v for v in value):
        return _rows(value, level)
    return "[" + pad + ("," + pad).join(_pretty(v, inner) for v in value) + close


def _rows(rows: list[dict], level: int) -> str:
    """A list of non-empty dicts (a report's rows) at depth `level`, in one C-encoder call: a
    row's non-plain values are encoded apart and stand in as a marker string meanwhile (the
    encoder keeps their order); a row with a single one has it swapped in place and put back. Encoded strings hold no raw newline, so
    "},<newline+indent>{" only ever joins two rows."""
    import itertools
    import uuid

    marker = "\x00" + uuid.uuid4().hex + "\x00"
    pieces: list[str] = []
    plain = _PLAIN_TYPES.issuperset
    swapped = []
    restore: list[tuple[dict, Any, Any]] = []  # rows whose one nested value is swapped in place
    guess = [k for k, v in rows[0].items() if type(v) not in _PLAIN_TYPES]
    in_place = len(guess) == 1 and len({id(r) for r in rows}) == len(rows)
    try:
        for row in rows:
            if not plain(map(type, row.values())):
                if in_place:  # the usual report row: one nested value (its models), at the first row's key
                    v = row.get(guess[0], row)
                    if v is not row and type(v) not in _PLAIN_TYPES:
                        row[guess[0]] = marker
                        restore.append((row, guess[0], v))
                        if plain(map(type, row.values())):
                            pieces.append(_pretty(v, level + 2))
                            swapped.append(row)
                            continue
                        row[guess[0]] = v
                        restore.pop()
                row = dict(row)
                for k, v in row.items():
                    if type(v) not in _PLAIN_TYPES:
                        row[k] = marker
                        pieces.append(_pretty(v, level + 2))
            swapped.append(row)
        ind1, ind2 = "\n" + "  " * (level + 1), "\n" + "  " * (level + 2)
        text = _flat(level + 2)(swapped)
    finally:
        for row, k, v in restore:
            row[k] = v
    text = "[" + ind1 + "{" + ind2 + text[2:-2].replace("}," + ind2 + "{", ind1 + "}," + ind1 + "{" + ind2) + ind1 + "}\n" + "  " * level + "]"
    if pieces:
        chunks = text.split(_flat(0)(marker))
        pieces.append("")
        text = "".join(itertools.chain.from_iterable(zip(chunks, pieces)))
    return text


def print_json(value: Any) -> None:
    sys.stdout.write(to_json(value) + "\n")


def rows_as_dicts(columns: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row)) for row in rows]
