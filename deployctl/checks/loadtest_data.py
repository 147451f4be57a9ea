"""`loadtest --data FILE`: the rows a load test sends beside the recorded ones.

JSON lines (one row per line), a JSON array, or CSV with a header. A row is an object keyed by the
signature's columns (a `{"features": {...}}` body is accepted too); for a tensor signature, one
example (a nested list). CSV cells are typed by the signature (a CSV has no types of its own).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from deployctl.errors import UsageError

TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def read_rows(path: Path, model: dict[str, Any]) -> list[Any]:
    """Every row of `path`, checked against the model's signature: a mistake names the row."""
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file.", "Give a .jsonl, .json or .csv file of rows.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        table = csv.DictReader(text.splitlines())
        rows: list[Any] = [_typed(row, model, line) for line, row in enumerate(table, 2)]
    else:
        rows = _json_rows(path, text)
    if not rows:
        raise UsageError(f"--data {path} holds no rows.", "Give at least one row.")
    for i, row in enumerate(rows, 1):
        _check(row, model, f"--data {path} row {i}")
    return rows


def _json_rows(path: Path, text: str) -> list[Any]:
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise UsageError(
            f"--data {path} is not JSON lines or a JSON array ({exc}).", "One JSON object per line."
        ) from None
    return [row["features"] if isinstance(row, dict) and "features" in row else row for row in rows]


def _typed(row: dict[str, str], model: dict[str, Any], line: int) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for column in model["columns"]:
        name, kind = column["name"], column["type"]
        raw = row.get(name)
        if raw is None or raw == "":
            typed[name] = None
            continue
        try:
            typed[name] = _cell(raw, kind)
        except ValueError:
            raise UsageError(f"--data line {line}: column {name} is {kind}, got '{raw[:40]}'.") from None
    return typed


def _cell(raw: str, kind: str) -> Any:
    if kind in ("double", "float"):
        return float(raw)
    if kind in ("long", "integer"):
        return int(raw)
    if kind == "boolean":
        if raw.lower() not in TRUE | FALSE:
            raise ValueError(raw)
        return raw.lower() in TRUE
    return raw


def _check(row: Any, model: dict[str, Any], where: str) -> None:
    if model.get("tensor") is not None:
        if not isinstance(row, list):
            raise UsageError(f"{where} is not an example (a nested list) for the tensor signature.")
        return
    if not isinstance(row, dict):
        raise UsageError(f"{where} is not an object keyed by column.", "One JSON object per line.")
    required = [c["name"] for c in model["columns"] if c.get("required", True)]
    missing = [name for name in required if row.get(name) is None]
    if missing:
        raise UsageError(f"{where} lacks column(s) {', '.join(missing)}.")
