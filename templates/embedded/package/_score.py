"""Batch scoring: `python -m <package> score IN -o OUT` (CSV, JSON Lines, or Parquet with pyarrow).

Rows stream in chunks. Each row is validated alone, as the HTTP service validates a request, so a
bad row is written to `OUT.errors.jsonl` with its line number (its row number in a Parquet file)
and the others are scored. Exit status: 0 when every row scored, 1 when any failed, 2 for a usage
error (unknown format, unreadable file).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from . import model
from ._embedded import ValidationError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
Numbered = tuple[int, Any]  # (line number, the row: an object, or an error message)


class UsageError(Exception):
    """A mistake in the command line or the input file as a whole: exit 2, one message."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        failed, total = score(Path(args.input), Path(args.output), args.chunk_rows)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors = _errors_path(Path(args.output))
    print(f"{total - failed} of {total} rows scored into {args.output}", file=sys.stderr)
    if failed:
        print(f"{failed} rows failed: see {errors}", file=sys.stderr)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a CSV, JSON Lines or Parquet file")
    score.add_argument("input", help="rows to score: .csv (with a header), .jsonl or .parquet")
    score.add_argument("-o", "--output", required=True, help="answers: .csv, .jsonl or .parquet")
    score.add_argument("--chunk-rows", type=int, default=2000, help="rows scored per model call")
    return parser


def _format(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unknown format; name it .csv, .jsonl or .parquet")
    return kind


def _errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def score(source: Path, output: Path, chunk_rows: int = 2000) -> tuple[int, int]:
    """(rows failed, rows read). Bad rows go to OUT.errors.jsonl, written only when there are any."""
    reader, writer = _format(source), _format(output)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    model.load()
    errors_file = _errors_path(output)
    errors_file.unlink(missing_ok=True)
    failed = total = 0
    progress = Progress(source)
    with Writer(output, writer, model.signature) as out:
        for chunk in _chunks(READERS[reader](source, progress), chunk_rows):
            total += len(chunk)
            answers, bad = _score_chunk(chunk)
            out.write(answers)
            if bad:
                failed += len(bad)
                with errors_file.open("a") as fh:
                    fh.writelines(json.dumps({"line": n, "error": e}) + "\n" for n, e in bad)
            progress.show(total)
    progress.done(total)
    return failed, total


def _score_chunk(chunk: list[Numbered]) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """Validate each row, score the valid ones together; if the model refuses the chunk (a value it
    cannot score, 422), score them one by one so that only the rows it refuses fail."""
    good: list[tuple[int, list[Any]]] = []
    bad: list[tuple[int, str]] = []
    for line, row in chunk:
        try:
            if isinstance(row, str):  # the reader could not parse this line
                raise ValidationError(row)
            good.append((line, model.validate(row, f"line {line}")))
        except ValidationError as exc:
            bad.append((line, exc.message))
    if not good:
        return [], bad
    try:
        answer = model.predict_batch([row for _, row in good])
        return list(zip([n for n, _ in good], _split(answer))), bad
    except ValidationError:
        answers = []
        for line, row in good:
            try:
                answers.append((line, model.predict(row)))
            except ValidationError as exc:
                bad.append((line, f"line {line}: {exc.message}"))
        return answers, sorted(bad)


def _split(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A /predict_batch answer as one /predict-shaped answer per row."""
    probabilities = batch.get("probabilities")
    for i, label in enumerate(batch["predictions"]):
        answer: dict[str, Any] = {"prediction": label}
        if probabilities is not None:
            key = "probabilities" if isinstance(probabilities[i], dict) else "probability"
            answer[key] = probabilities[i]
        yield answer


def _chunks(rows: Iterator[Numbered], size: int) -> Iterator[list[Numbered]]:
    chunk: list[Numbered] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- readers: (line number, row) -----------------------------------------------------------------


def _read_jsonl(path: Path, progress: Progress) -> Iterator[Numbered]:
    with path.open("rb") as raw:
        progress.follow(raw)
        for number, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                yield number, f"line {number}: not JSON: {exc}"


def _read_csv(path: Path, progress: Progress) -> Iterator[Numbered]:
    """CSV text to the signature's types where it converts (else the text, which validation then
    refuses with the service's message); an empty field is a missing value."""
    types = {c["name"]: c["type"] for c in model.signature["columns"]}
    with path.open("rb") as raw:
        progress.follow(raw)
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.DictReader(text)
        start = 2  # the header is line 1
        for record in reader:
            if None in record:  # more fields than the header names
                yield start, f"line {start}: more fields than the header's {len(reader.fieldnames or [])}"
            else:
                yield start, {k: _typed(v, types.get(k, "string")) for k, v in record.items()}
            start = reader.line_num + 1


TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _typed(text: str | None, kind: str) -> Any:
    if text is None or text == "":
        return None
    try:
        if kind in ("double", "float"):
            return float(text)
        if kind in ("long", "integer"):
            return int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        return text
    if kind == "boolean":
        return True if text.lower() in TRUE else False if text.lower() in FALSE else text
    return text


def _read_parquet(path: Path, progress: Progress) -> Iterator[Numbered]:
    parquet = _pyarrow_parquet()
    try:
        source = parquet.ParquetFile(path)
    except Exception as exc:
        raise UsageError(f"{path}: not a Parquet file ({exc})") from None
    progress.rows = source.metadata.num_rows
    number = 0
    for batch in source.iter_batches(batch_size=2000):
        for row in batch.to_pylist():
            number += 1
            yield number, row


READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise UsageError(
            "Parquet needs pyarrow: pip install pyarrow (or the package's [parquet] extra)"
        ) from None
    return parquet


# -- writers ---------------------------------------------------------------------------------------


class Writer:
    """Answers in OUT's format: `line` (the input's line or row number), `prediction`, and the
    probabilities (`probability`, or one `probability_<class>` column per class in CSV and Parquet)."""

    def __init__(self, path: Path, kind: str, signature: dict[str, Any]) -> None:
        self.path, self.kind = path, kind
        self.columns = ["line", "prediction"]
        if signature["task"] == "binary":
            self.columns.append("probability")
        elif signature["task"] == "multiclass":
            self.columns += [f"probability_{c}" for c in signature["classes"]]
        self.file: IO[str] | None = None
        self.csv: Any = None
        self.parquet: Any = None

    def __enter__(self) -> Writer:
        if self.kind == "parquet":
            _pyarrow_parquet()
        else:
            self.file = self.path.open("w", newline="")
            if self.kind == "csv":
                self.csv = csv.DictWriter(self.file, self.columns)
                self.csv.writeheader()
        return self

    def write(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        if self.kind == "jsonl":
            assert self.file is not None
            self.file.writelines(json.dumps({"line": n, **a}) + "\n" for n, a in answers)
            return
        rows = [self._flat(n, a) for n, a in answers]
        if self.kind == "csv":
            self.csv.writerows(rows)
        elif rows:
            self._parquet(rows)

    def _flat(self, line: int, answer: dict[str, Any]) -> dict[str, Any]:
        row = {"line": line, "prediction": answer["prediction"]}
        if "probability" in answer:
            row["probability"] = answer["probability"]
        for key, p in answer.get("probabilities", {}).items():
            row[f"probability_{key}"] = p
        return row

    def _parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows)
        if self.parquet is None:
            self.parquet = _pyarrow_parquet().ParquetWriter(self.path, table.schema)
        self.parquet.write_table(table.cast(self.parquet.schema))

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()
        if self.parquet is not None:
            self.parquet.close()
        elif self.kind == "parquet" and exc[0] is None:  # no row scored: an empty file still
            import pyarrow as pa

            _pyarrow_parquet().write_table(pa.table({c: pa.array([]) for c in self.columns}), self.path)


# -- progress ----------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, source: Path) -> None:
        self.show_it = sys.stderr.isatty()
        self.size = source.stat().st_size if source.is_file() else 0
        self.raw: IO[bytes] | None = None
        self.rows = 0  # Parquet: the rows the file holds

    def follow(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def show(self, done: int) -> None:
        if not self.show_it:
            return
        if self.rows:
            share = done / self.rows
        elif self.raw is not None and self.size:
            share = self.raw.tell() / self.size
        else:
            share = 0.0
        bar = "#" * int(share * 30)
        print(f"\r[{bar:<30}] {share:4.0%} {done:,} rows", end="", file=sys.stderr, flush=True)

    def done(self, total: int) -> None:
        if self.show_it:
            self.show(total)
            print(file=sys.stderr)
