"""Batch scoring: `python -m <package> score IN -o OUT` (CSV, JSON Lines, or Parquet with pyarrow).

Rows stream in chunks. Each row is validated alone, as the HTTP service validates a request, so a
bad row is written to `OUT.errors.jsonl` with its line number (its row number in a Parquet file)
and the others are scored. A row that cannot even be read (not UTF-8, a field over the CSV limit,
malformed quoting, a JSON line nested too deep) is a bad row too: the rest of the file is scored.
Exit status: 0 when every row scored, 1 when any failed, 2 for a usage error (unknown format,
unreadable input, OUT the input itself, a missing output folder, OUT or its errors file existing
without --force). OUT and its errors file are written to temporary files beside them and renamed
once complete: an interrupted run leaves what was there before.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from . import model
from ._embedded import ValidationError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
Numbered = tuple[int, Any]  # (line number, the row: an object, or an error message)
BOM = b"\xef\xbb\xbf"  # Excel's "CSV UTF-8" starts with it


class UsageError(Exception):
    """A mistake in the command line or the input file as a whole: exit 2, one message."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        failed, total = score(Path(args.input), Path(args.output), args.chunk_rows, args.force)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable input, a folder not writable, a full disk
        print(f"error: {exc.strerror or exc}: {exc.filename or args.output}", file=sys.stderr)
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
    score.add_argument("--chunk-rows", type=_positive, default=2000, help="rows scored per model call")
    score.add_argument("--force", action="store_true", help="replace OUT and OUT.errors.jsonl if they exist")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows of at least 1")
    return value


def _format(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unknown format; name it .csv, .jsonl or .parquet")
    return kind


def _errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def score(source: Path, output: Path, chunk_rows: int = 2000, force: bool = False) -> tuple[int, int]:
    """(rows failed, rows read). Bad rows go to OUT.errors.jsonl, written only when there are any."""
    reader, writer = _format(source), _format(output)
    errors_path = _errors_path(output)
    _check_paths(source, output, errors_path, force)
    model.load()
    failed = total = 0
    progress = Progress(source)
    with Replacing(output) as out_path, Replacing(errors_path) as errors_tmp:
        with Writer(out_path, writer, model.signature) as out, errors_tmp.open("w") as errors:
            for chunk in _chunks(READERS[reader](source, progress), chunk_rows):
                total += len(chunk)
                answers, bad = _score_chunk(chunk)
                out.write(answers)
                failed += len(bad)
                errors.writelines(json.dumps({"line": n, "error": e}) + "\n" for n, e in bad)
                progress.show(total)
        if not failed:  # no errors file: and none left from an earlier run (--force)
            errors_path.unlink(missing_ok=True)
            errors_tmp.unlink()
    progress.done(total)
    return failed, total


def _check_paths(source: Path, output: Path, errors: Path, force: bool) -> None:
    """Usage errors found before the model loads: nothing is written when one is found."""
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    for path in (output, errors):
        if path.exists() and os.path.samefile(path, source):
            raise UsageError(f"{path} is the input file; write the answers to another file")
    if not output.parent.is_dir():
        raise UsageError(f"{output}: the folder {output.parent} does not exist; create it first")
    for path in (output, errors):
        if path.is_dir():
            raise UsageError(f"{path} is a folder; name a file to write")
        if path.exists() and not force:
            raise UsageError(f"{path} exists; pass --force to replace it")


class Replacing:
    """A temporary file beside `path` that replaces it on a clean exit, and is removed otherwise
    (or when the caller removed it): `path` is never half-written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.temp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temp, 0o666 & ~umask)  # as a file the user created (mkstemp's is 0600)

    def __enter__(self) -> Path:
        return self.temp

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None and self.temp.exists():
            os.replace(self.temp, self.path)
        else:
            with contextlib.suppress(OSError):
                self.temp.unlink()


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
        except Exception as exc:  # e.g. RecursionError on a deeply nested value: this row's alone
            bad.append((line, f"line {line}: cannot be read: {type(exc).__name__}: {exc}"))
    if not good:
        return [], bad
    try:
        answer = model.predict_batch([row for _, row in good])
        return list(zip([n for n, _ in good], _split(answer))), bad
    except Exception:  # a value the model refuses (422) or fails on: find the rows one by one
        answers = []
        for line, row in good:
            try:
                answers.append((line, model.predict(row)))
            except ValidationError as exc:
                bad.append((line, f"line {line}: {exc.message}"))
            except Exception as exc:
                bad.append((line, f"line {line}: the model failed: {type(exc).__name__}: {exc}"))
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
            if number == 1:
                line = line.removeprefix(BOM)
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    f"line {number}: not UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1}",
                )
            except ValueError as exc:
                yield number, f"line {number}: not JSON: {exc}"
            except RecursionError:
                yield number, f"line {number}: JSON nested too deep to read"


def _read_csv(path: Path, progress: Progress) -> Iterator[Numbered]:
    """CSV text to the signature's types where it converts (else the text, which validation then
    refuses with the service's message); an empty field is a missing value. A record the csv
    module refuses (a field over its limit, a quote that never closes, text after a closing
    quote) or that is not UTF-8 is a bad row, named by its first line; reading goes on after it."""
    types = {c["name"]: c["type"] for c in model.signature["columns"]}
    with path.open("rb") as raw:
        progress.follow(raw)
        # Bytes that are not UTF-8 become lone surrogates (surrogateescape) and fail their row
        # only; strict: a malformed quote is reported, not guessed around.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        records = csv.reader(text, strict=True)
        try:
            header = next(records, [])
        except csv.Error as exc:
            raise UsageError(f"{path}: line 1, the header, cannot be read: {exc}") from None
        if _undecoded(header) is not None:
            raise UsageError(f"{path}: the header is not UTF-8 text")
        start = records.line_num + 1
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, f"line {start}{_through(start, records.line_num)}: not valid CSV: {exc}"
                start = records.line_num + 1
                continue
            if record:  # not a blank line
                yield start, _csv_row(start, header, record, types)
            start = records.line_num + 1


def _through(start: int, end: int) -> str:
    return f" (through line {end})" if end > start else ""


def _csv_row(line: int, header: list[str], record: list[str], types: dict[str, str]) -> Any:
    """The row as {column: typed value}, or its error message."""
    if len(record) > len(header):
        return f"line {line}: more fields than the header's {len(header)}"
    byte = _undecoded(record)
    if byte is not None:
        return f"line {line}: not UTF-8: byte 0x{byte:02x}"
    values = dict(zip(header, record))
    return {name: _typed(values.get(name), types.get(name, "string")) for name in header}


def _undecoded(fields: list[str]) -> int | None:
    """The first byte that was not UTF-8 (decoded as a lone surrogate: nothing else encodes one), if any."""
    for field in fields:
        if not field.isascii():
            try:
                field.encode("utf-8")
            except UnicodeEncodeError as exc:
                return ord(field[exc.start]) - 0xDC00
    return None


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
