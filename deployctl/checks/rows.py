"""Rows to send to a service, read from data files in chunks: CSV, JSON lines and Parquet.

`read_rows(path, columns, chunk)` yields lists of at most `chunk` rows, each a dict {column: value}
keyed by the model's signature columns, so a file of any size is read in bounded memory. CSV cells
are text: they are typed by the signature (`columns`, as the manifest records them), an empty
cell being a missing value. JSON lines and Parquet keep their own types; a JSON line may be an
object {column: value} or a list in signature order. Any mistake in a file is a UsageError naming
the file and the line (or row) where it is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployctl.errors import UsageError

Row = dict[str, Any]
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
HINT = "Give a .csv (header row of column names), .jsonl (one JSON object a line) or .parquet file."


def read_rows(path: Path, columns: list[dict[str, Any]], chunk: int = 1000) -> Iterator[list[Row]]:
    """Every row of `path`, `chunk` rows at a time."""
    kind = check_format(path)
    reader = {"csv": _csv, "jsonl": _jsonl, "parquet": _parquet}[kind]
    batch: list[Row] = []
    for row in reader(path, columns, chunk):
        batch.append(row)
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def check_format(path: Path) -> str:
    """The file's format, told by its suffix; a UsageError for a file that is not one."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: cannot tell the format from the suffix '{path.suffix}'.", HINT)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file.", HINT)
    return kind


def _csv(path: Path, columns: list[dict[str, Any]], chunk: int) -> Iterator[Row]:
    types = {c["name"]: c["type"] for c in columns}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [name for name in types if name not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: the header has no column {', '.join(map(repr, missing))}.", HINT)
        for line, record in enumerate(reader, 2):
            try:
                yield {name: _typed(record[name], kind) for name, kind in types.items()}
            except ValueError as exc:
                raise UsageError(f"{path} line {line}: {exc}.", HINT) from None


def _typed(text: str | None, kind: str) -> Any:
    """A CSV cell as the signature's type: what a JSON client would have sent."""
    if text is None or text == "":
        return None
    if kind in ("double", "float"):
        return float(text)
    if kind in ("long", "integer"):
        return int(text)
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"'{text[:40]}' is not a boolean")
    return text


def _jsonl(path: Path, columns: list[dict[str, Any]], chunk: int) -> Iterator[Row]:
    names = [c["name"] for c in columns]
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"{path} line {line} is not JSON ({exc}).", HINT) from None
            if isinstance(value, list) and names and len(value) == len(names):
                value = dict(zip(names, value))
            if not isinstance(value, dict):
                raise UsageError(
                    f"{path} line {line}: a {type(value).__name__}, not an object of column values.", HINT
                )
            yield value


def _parquet(path: Path, columns: list[dict[str, Any]], chunk: int) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("Reading Parquet needs pyarrow.", "pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise UsageError(f"{path} is not a Parquet file ({exc}).", HINT) from None
    wanted = [c["name"] for c in columns] or None
    present = set(table.schema_arrow.names)
    missing = [name for name in wanted or [] if name not in present]
    if missing:
        raise UsageError(f"{path}: no column {', '.join(map(repr, missing))}.", HINT)
    for batch in table.iter_batches(batch_size=chunk, columns=wanted):
        yield from batch.to_pylist()


def read_traffic(path: Path, chunk: int = 1000) -> Iterator[list[Any]]:
    """The requests of captured traffic (JSON lines {"request": ..., "answer": ...}), as rows:
    a /predict request gives its `features`, a /predict_batch request each of its `instances`."""
    batch: list[Any] = []
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"{path} line {line} is not JSON ({exc}).", TRAFFIC_HINT) from None
            batch.extend(_requested_rows(record, f"{path} line {line}"))
            while len(batch) >= chunk:
                yield batch[:chunk]
                batch = batch[chunk:]
    if batch:
        yield batch


TRAFFIC_HINT = 'Each line is a captured call: {"request": {"features": ...} or {"instances": [...]}, ...}.'


def _requested_rows(record: Any, where: str) -> list[Any]:
    request = record.get("request") if isinstance(record, dict) else None
    if isinstance(request, dict) and "features" in request:
        return [request["features"]]
    if isinstance(request, dict) and isinstance(request.get("instances"), list):
        return list(request["instances"])
    raise UsageError(f"{where}: no request with features or instances.", TRAFFIC_HINT)
