"""compare and promote end to end: real fastapi artifacts of versions built to differ in known ways
(tests/make_compare_registry.py), the champion as an artifact dir and as a separately started service,
the reports read back (JSON, JUnit with junitparser, HTML in headless Chromium), the registry checked
with MLflow's own client. Where refusals are the point, both sides are small servers of the contract
in the test (`RowServer`) that answer alike and refuse known rows with a known error."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import drawn_fraction, screenshot
from conftest import ROOT, Registry, Result, build_registry, run_cli

from deployctl.process import free_port, get

ROWS = 200
# Timing on a shared CI machine is noisy: where latency is not what a test is about, its gate gets
# room (the slow model is ~10x slower, far beyond it).
ROOMY = ("--max-latency-ratio", "5", "--batch-size", "20")


@pytest.fixture(scope="module")
def compare_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_compare_registry.py", tmp_path_factory.mktemp("compare-registry"))


@pytest.fixture(scope="module")
def artifact(compare_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`artifact("cmp_classifier/2")`: the fastapi artifact of that version, generated and built once."""
    root = tmp_path_factory.mktemp("compare-artifacts")
    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        if model not in made:
            out = root / model.replace("/", "_")
            for step in (
                ("generate", "-m", f"models:/{model}", "-t", "fastapi", "-o", str(out)),
                ("build", str(out)),
            ):
                result = run_cli(*step, env=compare_registry.env())
                assert result.code == 0, result.output
            made[model] = out
        return made[model]

    return make


def compare(registry: Registry, *args: str) -> tuple[Result, dict]:
    result = run_cli("compare", *args, "--json", env=registry.env())
    assert result.code in (0, 1), result.output
    return result, json.loads(result.stdout)


@pytest.fixture
def served(artifact: Callable[[str], Path]) -> Iterator[Callable[[str], str]]:
    """`served("cmp_classifier/1")`: that artifact running as its own service (`deployctl serve`); its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(model: str) -> str:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "deployctl", "serve", str(artifact(model)), "--port", str(port)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if get(url, "/health")[0] == 200:
                    return url
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{model} never answered /health at {url}")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(30)


def gate(report: dict, name: str) -> dict:
    return next(g for g in report["gates"] if g["name"] == name)


def test_identical_models_agree_fully_with_no_difference(
    compare_registry: Registry, artifact: Callable[[str], Path], tmp_path: Path
) -> None:
    root = compare_registry.root
    traffic = tmp_path / "traffic.jsonl"  # the same rows again, as capture records of /predict calls
    rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]
    records = [{"schema_version": 1, "input": {"columns": list(r), "rows": [list(r.values())]}} for r in rows]
    traffic.write_text("".join(json.dumps(record) + "\n" for record in records))
    candidate, champion = artifact("cmp_classifier/2"), artifact("cmp_classifier/1")
    args = (
        str(candidate),
        "--against",
        str(champion),
        "--data",
        str(root / "rows.jsonl"),
        "--traffic",
        str(traffic),
    )
    result, report = compare(compare_registry, *args, *ROOMY)
    assert result.code == 0, result.stderr
    assert report["passed"] and report["rows"] == report["compared"] == 2 * ROWS
    assert report["agreement"] == 1.0 and report["flips"] == []
    assert report["outputs"]["probability"] == {
        "max_abs_diff": 0.0,
        "p99_abs_diff": 0.0,
        "mean_abs_diff": 0.0,
    }
    assert report["errors"]["candidate"] == report["errors"]["champion"] == 0
    assert (report["model"], report["version"], report["champion"]["model_version"]) == (
        "cmp_classifier",
        "2",
        "1",
    )
    assert report["digest"].startswith("sha256:") and [g["passed"] for g in report["gates"]] == [True] * 4


def test_a_moved_threshold_flips_exactly_the_known_rows_against_a_live_champion(
    compare_registry: Registry, artifact: Callable[[str], Path], served: Callable[[str], str], tmp_path: Path
) -> None:
    from junitparser import Failure, JUnitXml

    flips = int(compare_registry.run_ids["flips"])
    url = served("cmp_classifier/1")
    junit, html = tmp_path / "compare.xml", tmp_path / "compare.html"
    result, report = compare(
        compare_registry,
        str(artifact("cmp_classifier/3")),
        "--against", url,
        "--data", str(compare_registry.root / "rows.parquet"),
        "--junit", str(junit),
        "--html", str(html),
        *ROOMY,
    )  # fmt: skip
    assert result.code == 1 and "agreement" in result.stderr
    assert report["flips"] == [{"champion": "churn", "candidate": "stay", "count": flips}]
    assert report["agreement"] == pytest.approx(1 - flips / ROWS)
    churn = next(c for c in report["per_class"] if c["label"] == "churn")
    assert churn["rows"] - round(churn["agreement"] * churn["rows"]) == flips
    assert report["outputs"]["probability"]["max_abs_diff"] == 0.0  # same probabilities, other labels
    assert report["champion"]["where"] == url
    assert sum(d["flipped"] for d in report["disagreements"]) == flips
    assert not gate(report, "agreement")["passed"] and gate(report, "max_abs_diff")["passed"]

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    cases = {case.name: case for case in suite}
    assert len(cases) == 4 and suite.failures == 1
    failed = [name for name, case in cases.items() if any(isinstance(r, Failure) for r in case.result)]
    assert failed == ["gate agreement >= 0.99"]

    page = html.read_text()
    assert page.count("<svg") == 4  # scatter, difference histogram, flip matrix, latency
    assert not re.search(r"""(src|href)=["']?https?:""", page), "the page must fetch nothing"
    png = screenshot(html, tmp_path / "compare.png", size="1200,3000")
    assert drawn_fraction(png) > 0.03


def test_a_shifted_regressor_shows_its_shift_in_every_output(
    compare_registry: Registry, artifact: Callable[[str], Path]
) -> None:
    shift = float(compare_registry.run_ids["shift"])
    args = (str(artifact("cmp_regressor/2")), "--against", str(artifact("cmp_regressor/1")))
    data = ("--data", str(compare_registry.root / "houses.csv"))
    result, report = compare(compare_registry, *args, *data, *ROOMY)
    assert result.code == 1 and "max_abs_diff" in result.stderr
    figures = report["outputs"]["prediction"]
    for key in ("max_abs_diff", "p99_abs_diff", "mean_abs_diff"):
        assert figures[key] == pytest.approx(shift, abs=1e-6)
    assert report["flips"] == [] and report["agreement"] == 0.0  # no row within the 0.05 default
    result, report = compare(compare_registry, *args, *data, *ROOMY, "--max-diff", str(shift + 0.01))
    assert result.code == 0 and report["agreement"] == 1.0


def test_a_slower_candidate_fails_the_latency_gate_only(
    compare_registry: Registry, artifact: Callable[[str], Path]
) -> None:
    args = (str(artifact("cmp_regressor/3")), "--against", str(artifact("cmp_regressor/1")))
    data = ("--data", str(compare_registry.root / "houses.csv"), "--batch-size", "10")
    result, report = compare(compare_registry, *args, *data)
    assert result.code == 1 and "latency_p99_ratio" in result.stderr
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["latency_p99_ratio"]
    assert report["latency"]["candidate"]["p50_ms"] >= 50  # it sleeps 50 ms per call
    assert report["latency"]["p99_ratio"] > 1.5


def test_a_deployed_candidate_is_compared_where_it_runs_and_must_serve_the_pinned_version(
    compare_registry: Registry, artifact: Callable[[str], Path], served: Callable[[str], str]
) -> None:
    """--candidate-url: a canary already running is compared, not a copy started here; a URL
    serving another version than the artifact pins is refused before any row is sent."""
    flips = int(compare_registry.run_ids["flips"])
    canary, champion = served("cmp_classifier/3"), served("cmp_classifier/1")
    args = ("--against", champion, "--data", str(compare_registry.root / "rows.parquet"), *ROOMY)
    result, report = compare(
        compare_registry, str(artifact("cmp_classifier/3")), "--candidate-url", canary, *args
    )
    assert result.code == 1 and report["flips"] == [
        {"champion": "churn", "candidate": "stay", "count": flips}
    ]
    assert report["candidate"]["where"] == canary and report["champion"]["where"] == champion
    assert report["candidate"]["model_version"] == "3"

    wrong = run_cli("compare", str(artifact("cmp_classifier/3")), "--candidate-url", champion, *args,
                    env=compare_registry.env())  # fmt: skip
    assert wrong.code == 2 and "serves model version 1" in wrong.stderr and "pins" in wrong.stderr
    assert "Traceback" not in wrong.output


def test_an_unreachable_champion_exits_3_and_usage_mistakes_exit_2(
    compare_registry: Registry, artifact: Callable[[str], Path], tmp_path: Path
) -> None:
    candidate = str(artifact("cmp_classifier/2"))
    closed = f"http://127.0.0.1:{free_port()}"
    result = run_cli("compare", candidate, "--against", closed, env=compare_registry.env())
    assert result.code == 3 and "champion" in result.stderr and "Traceback" not in result.output
    bad = tmp_path / "rows.txt"
    bad.write_text("x0\n1\n")
    for args in (
        ("--against", str(tmp_path / "nowhere")),
        ("--against", closed, "--data", str(bad)),
        ("--against", closed, "--min-agreement", "1.5"),
    ):
        result = run_cli("compare", candidate, *args, env=compare_registry.env())
        assert result.code == 2, result.output
        assert "Error:" in result.stderr and "Traceback" not in result.output


def registry_state(registry: Registry, name: str, version: str) -> tuple[dict, dict]:
    from mlflow import MlflowClient

    client = MlflowClient(registry.tracking_uri)
    aliases = {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}  # ints
    return aliases, dict(client.get_model_version(name, version).tags)


def test_promote_moves_the_alias_only_on_a_passed_report_for_this_artifact(
    compare_registry: Registry, artifact: Callable[[str], Path], tmp_path: Path
) -> None:
    v1, v2, v3 = (str(artifact(f"cmp_classifier/{v}")) for v in (1, 2, 3))
    _, passed = compare(compare_registry, v2, "--against", v1, *ROOMY)  # the recorded rows
    _, failed = compare(
        compare_registry, v3, "--against", v1, "--data", str(compare_registry.root / "rows.csv"), *ROOMY
    )
    assert passed["passed"] and not failed["passed"]
    reports = {"passed": passed, "failed": failed}
    edited = dict(failed, passed=True, gates=[dict(g, passed=True) for g in failed["gates"]])
    reports["edited"] = edited
    from deployctl.checks.compare import checksum

    reports["edited, checksum redone"] = dict(edited, checksum=checksum(edited))
    for name, report in reports.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    before = registry_state(compare_registry, "cmp_classifier", "3")

    def promote(candidate: str, report: str, *extra: str) -> Result:
        args = ("promote", candidate, "--alias", "champion", "--report", str(tmp_path / f"{report}.json"))
        return run_cli(*args, *extra, env=compare_registry.env())

    refusals = {
        ("failed", v3): "did not pass",
        ("edited", v3): "edited after compare",
        ("edited, checksum redone", v3): "did not pass",
        ("passed", v3): "another artifact",  # foreign: made for v2
    }
    for (report, candidate), reason in refusals.items():
        result = promote(candidate, report)
        assert result.code == 1 and reason in result.stderr, (report, result.output)
    assert registry_state(compare_registry, "cmp_classifier", "3") == before

    result = promote(v2, "passed", "--dry-run")
    assert result.code == 0 and "from version 1 -> version 2" in " ".join(result.stderr.split())
    assert registry_state(compare_registry, "cmp_classifier", "2")[0]["champion"] == "1"

    result = promote(v2, "passed")
    assert result.code == 0, result.output
    aliases, tags = registry_state(compare_registry, "cmp_classifier", "2")
    assert aliases["champion"] == "2"
    assert tags["deployctl.compare.agreement"] == "1" and tags["deployctl.compare.digest"] == passed["digest"]
    assert tags["deployctl.compare.champion_version"] == "1"
    assert {
        f"deployctl.compare.{g}" for g in ("max_abs_diff", "latency_p99_ratio", "candidate_errors")
    } <= set(tags)


Row = dict[str, float]


class RowServer:
    """A service of the deployctl contract on loopback (/health, /predict_batch) whose answers are
    known: each row's probability of "churn" is sigmoid(x0), the same on every server, and the rows
    `refuses` picks are refused (HTTP 400, `error`). A batch holding one is refused whole, as the
    runtime refuses a batch."""

    def __init__(
        self, version: str, refuses: Callable[[Row], bool] = lambda row: False, error: str = ""
    ) -> None:
        self.version, self.refuses, self.error = version, refuses, error
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def answer(self, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/health":
            return 200, {"status": "healthy", "model_name": "cmp_classifier", "model_version": self.version}
        rows = json.loads(body)["instances"]
        if any(self.refuses(row) for row in rows):
            return 400, {"error": self.error}
        p = [1 / (1 + math.exp(-row["x0"])) for row in rows]
        labels = ["churn" if q > 0.5 else "stay" for q in p]
        return 200, {"predictions": labels, "probabilities": p, "model_version": self.version}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as compare's client expects

            def do_GET(self) -> None:
                self._send(*server.answer(self.path, b""))

            def do_POST(self) -> None:
                self._send(*server.answer(self.path, self.rfile.read(int(self.headers["Content-Length"]))))

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def row_server() -> Iterator[Callable[..., RowServer]]:
    started: list[RowServer] = []

    def start(*args: Any) -> RowServer:
        started.append(RowServer(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def known_rows(registry: Registry) -> list[Row]:
    with (registry.root / "rows.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def big_x0(row: Row) -> bool:
    return row["x0"] > 1.0


def big_x1(row: Row) -> bool:
    return row["x1"] > 1.0


# the two known servers answer alike but for the refused rows: the latency ratio is not at stake here
FAST_SIDES = ("--batch-size", "20", "--max-latency-ratio", "1000")


def test_rows_the_candidate_refuses_are_counted_per_side_and_gated_by_max_errors(
    compare_registry: Registry, artifact: Callable[[str], Path], row_server: Callable[..., RowServer]
) -> None:
    """The candidate refuses the known rows with x0 > 1, the champion those with x1 > 1: each side's
    refusals are counted with their error; only the rows the candidate alone refuses are its errors."""
    rows = known_rows(compare_registry)
    mine, theirs = sum(map(big_x0, rows)), sum(map(big_x1, rows))
    only = sum(big_x0(r) and not big_x1(r) for r in rows)
    assert 0 < only < mine and theirs > 0  # some rows refused by both: not the candidate's fault
    candidate = row_server("2", big_x0, "x0 out of range")
    champion = row_server("1", big_x1, "x1 out of range")
    args = (
        str(artifact("cmp_classifier/2")), "--candidate-url", candidate.url, "--against", champion.url,
        "--data", str(compare_registry.root / "rows.csv"), *FAST_SIDES,
    )  # fmt: skip
    result, report = compare(compare_registry, *args)  # --max-errors 0, the default
    assert result.code == 1, result.output
    assert f"candidate_errors {only} (limit <= 0)" in " ".join(result.stderr.split())
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["candidate_errors"]
    assert report["errors"] == {
        "candidate": mine,
        "champion": theirs,
        "candidate_only": only,
        "messages": {
            "candidate": [{"error": "HTTP 400: x0 out of range", "rows": mine}],
            "champion": [{"error": "HTTP 400: x1 out of range", "rows": theirs}],
        },
    }
    assert report["rows"] == ROWS and report["compared"] == sum(not big_x0(r) and not big_x1(r) for r in rows)
    assert report["agreement"] == 1.0

    result, report = compare(compare_registry, *args, "--max-errors", str(only - 1))
    said = " ".join(result.stderr.split())
    assert result.code == 1 and f"candidate_errors {only} (limit <= {only - 1})" in said, said
    result, report = compare(compare_registry, *args, "--max-errors", str(only))
    assert result.code == 0, result.output
    assert report["passed"] and gate(report, "candidate_errors") == {
        "name": "candidate_errors", "op": "<=", "limit": only, "value": only, "unit": "", "passed": True,
    }  # fmt: skip


def test_rows_only_the_champion_refuses_are_counted_on_its_side_and_fail_no_gate(
    compare_registry: Registry, artifact: Callable[[str], Path], row_server: Callable[..., RowServer]
) -> None:
    rows = known_rows(compare_registry)
    theirs = sum(map(big_x1, rows))
    candidate, champion = row_server("2"), row_server("1", big_x1, "x1 out of range")
    result, report = compare(
        compare_registry, str(artifact("cmp_classifier/2")), "--candidate-url", candidate.url,
        "--against", champion.url, "--data", str(compare_registry.root / "rows.csv"), *FAST_SIDES,
    )  # fmt: skip
    assert result.code == 0, result.output
    assert (report["errors"]["candidate"], report["errors"]["champion"]) == (0, theirs)
    assert report["errors"]["candidate_only"] == 0 and gate(report, "candidate_errors")["value"] == 0
    refused = [{"error": "HTTP 400: x1 out of range", "rows": theirs}]
    assert report["errors"]["messages"] == {"candidate": [], "champion": refused}
    assert report["compared"] == ROWS - theirs and report["passed"]


def promote(registry: Registry, candidate: Path, report: Path, *extra: str) -> Result:
    args = ("promote", str(candidate), "--alias", "champion", "--report", str(report), *extra)
    return run_cli(*args, env=registry.env())


@pytest.fixture
def passed_report(
    compare_registry: Registry,
    artifact: Callable[[str], Path],
    row_server: Callable[..., RowServer],
    tmp_path: Path,
) -> Path:
    """A passed compare report made for cmp_classifier/2's artifact (its recorded rows, both sides
    answering alike): each refusal below is then for the reason the test gives, not the report."""
    candidate, champion = row_server("2"), row_server("1")
    result, report = compare(
        compare_registry, str(artifact("cmp_classifier/2")), "--candidate-url", candidate.url,
        "--against", champion.url, *FAST_SIDES,
    )  # fmt: skip
    assert result.code == 0 and report["passed"], result.output
    path = tmp_path / "passed.json"
    path.write_text(result.stdout)
    return path


def test_promote_refuses_a_model_that_is_not_in_the_registry_with_exit_2(
    compare_registry: Registry, passed_report: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    run_id = MlflowClient(compare_registry.tracking_uri).get_model_version("cmp_classifier", "2").run_id
    out = tmp_path / "from-run"
    made = run_cli(
        "generate", "-m", f"runs:/{run_id}/model", "-t", "fastapi", "-o", str(out), env=compare_registry.env()
    )
    assert made.code == 0, made.output
    before = registry_state(compare_registry, "cmp_classifier", "2")
    result = promote(compare_registry, out, passed_report)
    said = " ".join(result.stderr.split())
    assert result.code == 2, result.output
    assert f"generated from 'runs:/{run_id}/model', not from a registered model" in said
    assert "Traceback" not in result.output
    assert registry_state(compare_registry, "cmp_classifier", "2") == before


def test_promote_refuses_an_unreachable_registry_at_once_and_creates_nothing(
    compare_registry: Registry, artifact: Callable[[str], Path], passed_report: Path, tmp_path: Path
) -> None:
    candidate = artifact("cmp_classifier/2")
    before = registry_state(compare_registry, "cmp_classifier", "2")
    started = time.monotonic()
    closed = f"http://127.0.0.1:{free_port()}"
    result = promote(compare_registry, candidate, passed_report, "--tracking-uri", closed)
    assert result.code == 1, result.output
    assert f"Cannot reach the tracking server at {closed}" in " ".join(result.stderr.split())
    assert time.monotonic() - started < 60  # refused, not retried for minutes as MLflow does by default
    typo = tmp_path / "typo.db"  # a mistyped registry path: MLflow would create an empty database
    result = promote(compare_registry, candidate, passed_report, "--tracking-uri", f"sqlite:///{typo}")
    assert result.code == 1 and "No MLflow database" in " ".join(result.stderr.split()), result.output
    assert not typo.exists() and "Traceback" not in result.output
    assert registry_state(compare_registry, "cmp_classifier", "2") == before


def test_promote_refuses_an_artifact_edited_since_generate(
    compare_registry: Registry, artifact: Callable[[str], Path], passed_report: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "candidate"  # the compared artifact's generated files (its manifest: its digest)
    shutil.copytree(artifact("cmp_classifier/2"), copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    unedited = promote(compare_registry, copy, passed_report, "--dry-run")
    assert unedited.code == 0, unedited.output  # the copy is the artifact the report was made for
    files = json.loads((copy / "deployctl.json").read_text())["files"]
    edited = next(name for name in sorted(files) if name.endswith(".py"))
    with (copy / edited).open("a") as fh:
        fh.write("\n# edited by hand after generate\n")
    before = registry_state(compare_registry, "cmp_classifier", "2")
    result = promote(compare_registry, copy, passed_report)
    said = " ".join(result.stderr.split())
    assert result.code == 1 and "was edited since generate" in said and edited in said, result.output
    assert registry_state(compare_registry, "cmp_classifier", "2") == before
