"""Rows to send to a service, read from data files in chunks: CSV, JSON lines and Parquet.

`read_rows(path, columns, chunk)` yields lists of at most `chunk` rows, each a dict {column: value}
keyed by the model's signature columns, so a file of any size is read in bounded memory. CSV cells
are text: they are typed by the signature (`columns`, as the manifest records them), an empty
cell being a missing value. JSON lines (or a .json file holding one array) and Parquet keep their
own types; a JSON row may be an object {column: value}, a /predict body {"features": ...}, a list in
signature order, or for a tensor signature an example (a nested list). Any mistake in a file is a
UsageError naming the file and the line (or row) where it is.
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


def all_rows(path: Path, model: dict[str, Any]) -> list[Any]:
    """Every row of `path` at once (`loadtest --data`: it cycles through them), each checked against
    the model's signature up front, so that a mistake names its row instead of failing the load."""
    rows = [row for batch in read_rows(path, model["columns"]) for row in batch]
    if not rows:
        raise UsageError(f"{path} holds no rows.", "Give at least one row.")
    tensor = model.get("tensor") is not None
    required = [c["name"] for c in model["columns"] if c.get("required", True)]
    for i, row in enumerate(rows, 1):
        if tensor != isinstance(row, list):
            wanted = "an example (a nested list)" if tensor else "an object keyed by column"
            raise UsageError(f"{path} row {i} is not {wanted}.", HINT)
        missing = [] if tensor else [name for name in required if row.get(name) is None]
        if missing:
            raise UsageError(f"{path} row {i} lacks column(s) {', '.join(missing)}.", HINT)
    return rows


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
        required = [c["name"] for c in columns if c.get("required", True)]
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: the header has no column {', '.join(map(repr, missing))}.", HINT)
        for line, record in enumerate(reader, 2):
            try:
                yield {name: _typed(record.get(name), kind) for name, kind in types.items()}
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


def _jsonl(path: Path, columns: list[dict[str, Any]], chunk: int) -> Iterator[Any]:
    names = [c["name"] for c in columns]
    for where, value in _json_values(path):
        if isinstance(value, dict) and isinstance(value.get("features"), dict | list):
            value = value["features"]  # a /predict body
        if isinstance(value, list) and names and len(value) == len(names):
            value = dict(zip(names, value))
        if isinstance(value, list) and not names:
            yield value  # an example of a tensor signature (a nested list)
            continue
        if not isinstance(value, dict):
            raise UsageError(f"{where}: a {type(value).__name__}, not an object of column values.", HINT)
        yield value


def _json_values(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, value) of each JSON line; a .json file may instead hold one JSON array of rows."""
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(path.read_text(encoding="utf-8-sig"))
        except ValueError:
            values = None  # not one JSON document: JSON lines, told apart below
        if isinstance(values, list):
            yield from ((f"{path} item {i}", value) for i, value in enumerate(values, 1))
            return
    with path.open(encoding="utf-8-sig") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                yield f"{path} line {line}", json.loads(text)
            except ValueError as exc:
                raise UsageError(f"{path} line {line} is not JSON ({exc}).", HINT) from None


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
    """The rows of captured traffic (CAPTURE's records, a file or a directory of rotated files), as
    rows the model saw them: {column: value} (a tensor model's examples as they are). Records of
    refused requests hold no rows and are skipped; so are rows with a redacted value, which no
    service would score as it scored the original."""
    batch: list[Any] = []
    for where, record in read_records(path):
        batch.extend(row for row in record_rows(record, where) if REDACTED not in _values(row))
        while len(batch) >= chunk:
            yield batch[:chunk]
            batch = batch[chunk:]
    if batch:
        yield batch


# The marker CAPTURE_REDACT puts in place of a value (app/capture.py REDACTED; a test checks they agree).
REDACTED = "[REDACTED]"
TRAFFIC_HINT = (
    "Give a file of capture records (CAPTURE=file:PATH, one JSON object a line, see "
    "deployctl/schemas/capture-record.schema.json) or the directory of its rotated files."
)


def traffic_files(path: Path) -> list[Path]:
    """`path` itself, or the capture files of a directory, oldest first: PATH.N .. PATH.1, PATH."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UsageError(f"{path} does not exist.", TRAFFIC_HINT)
    files = [p for p in path.iterdir() if p.is_file() and not p.name.endswith(".lock")]
    if not files:
        raise UsageError(f"{path} holds no capture file.", TRAFFIC_HINT)

    def age(file: Path) -> tuple[str, int]:  # capture.jsonl.3 is older than capture.jsonl.1
        stem, _, number = file.name.rpartition(".")
        return (stem, -int(number)) if number.isdigit() else (file.name, 0)

    return sorted(files, key=age)


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for every capture record of a file or directory; a UsageError names the line
    that is not one."""
    for file in traffic_files(path):
        with file.open(encoding="utf-8") as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                where = f"{file} line {line}"
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    raise UsageError(f"{where} is not JSON ({exc}).", TRAFFIC_HINT) from None
                if not isinstance(record, dict) or "schema_version" not in record or "input" not in record:
                    raise UsageError(f"{where} is not a capture record.", TRAFFIC_HINT)
                if record["schema_version"] != 1:
                    raise UsageError(
                        f"{where}: capture schema version {record['schema_version']!r}; "
                        "this deployctl reads version 1.",
                        "Replay it with the deployctl version that matches the service that captured it.",
                    )
                yield where, record


def record_rows(record: dict[str, Any], where: str) -> list[Any]:
    """The rows of one record, {column: value} each (a tensor model's examples as they are)."""
    inputs = record.get("input")
    if inputs is None:
        return []
    try:
        columns, rows = inputs["columns"], inputs["rows"]
        if not columns:
            return list(rows)
        return [dict(zip(columns, row, strict=True)) for row in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{where}: its input is not {{columns, rows}} ({exc}).", TRAFFIC_HINT) from None


def _values(row: Any) -> list[Any]:
    return list(row.values()) if isinstance(row, dict) else []
