"""Run by the embedded target's smoke test inside a fresh venv holding only the built wheel.

It must not import deployctl (the venv does not have it): it exercises the installed package
through its public API and its CLI, and prints one JSON report on stdout that the smoke test
(`deployctl.targets.embedded`) compares with the answers recorded at generate time.

    python embedded_probe.py <import name> <cases.json> <work dir>
"""

from __future__ import annotations

import csv
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEAVY = ("numpy", "pandas", "sklearn", "onnxruntime")  # what `import <package>` must not import
LATENCY_CALLS = 200


def main(package: str, cases_file: str, work: str, only: str = "all") -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(Path(cases_file).read_text())
    started = time.perf_counter()
    pkg = importlib.import_module(package)
    if only == "frame":  # again, once the [pandas] extra is installed
        names = [c["name"] for c in pkg.model.signature["columns"]]
        return {"predict_frame": _frame(pkg.model, rows, names)}
    report: dict[str, Any] = {"import_ms": (time.perf_counter() - started) * 1000}
    report["heavy_at_import"] = [name for name in HEAVY if name in sys.modules]
    model = pkg.model
    started = time.perf_counter()
    model.load()
    report["load_ms"] = (time.perf_counter() - started) * 1000
    names = [c["name"] for c in model.signature["columns"]]
    report["signature"] = model.signature
    report["predict"] = [model.predict([r[n] for n in names] if i == 0 else r) for i, r in enumerate(rows)]
    report["predict_batch"] = model.predict_batch(rows)
    report["predict_frame"] = _frame(model, rows, names)
    report["cli"] = {kind: _cli(package, rows, names, Path(work), kind) for kind in ("csv", "jsonl")}
    report["bad_inputs"] = _bad_inputs(pkg, rows[0])
    report["latency_ms"] = _latency(model, rows[0])
    return report


def _frame(model: Any, rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    try:
        import pandas as pd
    except ImportError:  # installed without it (an ONNX model's package): what does it say?
        try:
            model.predict_frame(None)
        except ImportError as exc:
            return {"without_pandas": str(exc)}
        return {"without_pandas": "predict_frame raised no ImportError without pandas"}

    out = model.predict_frame(pd.DataFrame(rows, columns=names))
    answer: dict[str, Any] = {"predictions": out["prediction"].tolist(), "columns": list(out.columns)}
    if "probability" in out:
        answer["probabilities"] = out["probability"].tolist()
    elif len(out.columns) > 1:
        keys = [c.removeprefix("probability_") for c in out.columns[1:]]
        answer["probabilities"] = [dict(zip(keys, r)) for r in out.iloc[:, 1:].itertuples(index=False)]
    return answer


def _cli(package: str, rows: list[dict[str, Any]], names: list[str], work: Path, kind: str) -> dict[str, Any]:
    """The score CLI on the rows plus one bad row (last): its answers, its errors, its exit status."""
    source, output = work / f"rows.{kind}", work / f"answers.{kind}"
    bad = {**rows[0], "not_a_column": 1}
    if kind == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad]))
    else:
        with source.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerows([[_csv_text(r.get(n)) for n in names] for r in rows])
            writer.writerow([_csv_text(rows[0].get(n)) for n in names] + ["extra"])
    proc = subprocess.run(
        [sys.executable, "-m", package, "score", str(source), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = output.with_name(output.name + ".errors.jsonl")
    result: dict[str, Any] = {
        "exit": proc.returncode,
        "stderr": proc.stderr[-2000:],
        "bad_line": len(rows) + 1,
    }
    result["bad_line"] += 1 if kind == "csv" else 0  # the CSV header is line 1
    result["errors"] = (
        [json.loads(line) for line in errors.read_text().splitlines()] if errors.exists() else []
    )
    result["answers"] = _read_answers(output, kind) if output.exists() else []
    return result


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_answers(path: Path, kind: str) -> list[dict[str, Any]]:
    if kind == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _bad_inputs(pkg: Any, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Each bad input: did it raise the package's ValidationError (a ValueError), and with the
    message the HTTP service answers for the same body?"""
    cases = [
        ("predict: not a row", "/predict", {"features": "oops"}),
        ("predict: an unknown column", "/predict", {"features": {**row, "not_a_column": 1}}),
        ("predict: the first column left out", "/predict", {"features": dict(list(row.items())[1:])}),
        ("predict_batch: no rows", "/predict_batch", {"instances": []}),
    ]
    results = []
    for what, path, body in cases:
        assert isinstance(body, dict)
        status, http = pkg.model.service.handle("POST", path, json.dumps(body).encode(), "application/json")
        call = pkg.model.predict if path == "/predict" else pkg.model.predict_batch
        try:
            call(body["features"] if path == "/predict" else body["instances"])
            raised, message = "nothing", None
        except pkg.ValidationError as exc:
            raised, message = (
                "ValidationError" if isinstance(exc, ValueError) else "not a ValueError",
                str(exc),
            )
        except Exception as exc:
            raised, message = type(exc).__name__, str(exc)
        results.append(
            {
                "call": what,
                "raised": raised,
                "message": message,
                "http_status": status,
                "http_error": json.loads(http).get("error"),
            }
        )
    return results


def _latency(model: Any, row: dict[str, Any]) -> dict[str, float]:
    times = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        model.predict(row)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": statistics.median(times), "p99": sorted(times)[int(len(times) * 0.99) - 1]}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
