"""Traffic capture (issue 23): every answered request recorded off the request path, as one JSON record
validated against deployctl/schemas/capture-record.schema.json, on the built fastapi and flask
artifacts of the fraud model, served for real and asked over real sockets."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import FRAUD_ROW, run_cli
from test_rest import build_artifact, serve  # noqa: F401 - the session's artifacts
from test_runtime import runtime

from deployctl.checks import capture_check
from deployctl.checks.contract import Exchange
from deployctl.manifest import Artifact
from deployctl.process import free_port
from deployctl.targets import aws_lambda
from deployctl.targets.aws_lambda import emulator as apigw

pytestmark = pytest.mark.slow
FRAUD = "models:/fraud_detector@production"
SCHEMA = json.loads(
    (
        Path(__file__).resolve().parent.parent / "deployctl" / "schemas" / "capture-record.schema.json"
    ).read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
TARGETS = ["fastapi", "flask"]


def row(i: int) -> dict[str, Any]:
    """A distinct known row per request."""
    return {**FRAUD_ROW, "amount": 10.0 + i, "hour": i % 24}


def records_in(*files: Path) -> list[dict[str, Any]]:
    """The records of JSON-lines files, each checked against the record's JSON Schema."""
    records = []
    for file in files:
        for line in file.read_text().splitlines():
            record = json.loads(line)
            VALIDATOR.validate(record)
            records.append(record)
    return records


def wait_for_lines(path: Path, count: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out.decode(errors="replace")


@pytest.fixture(scope="module", params=TARGETS)
def artifact(request: pytest.FixtureRequest, build_artifact: Callable[..., Path]) -> Path:  # noqa: F811
    return build_artifact(FRAUD, request.param)


@pytest.fixture
def captured(artifact: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Serve the artifact with capture to a file and the given settings: (url, the file)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> tuple[str, Path]:
        sink = tmp_path / "capture.jsonl"
        proc, url = serve(artifact, {"CAPTURE": f"file:{sink}", "ACCESS_LOG": "0", **env})
        procs.append(proc)
        return url, sink

    yield start
    for proc in procs:
        if proc.poll() is None:
            stop(proc)


def test_each_request_gives_one_record_with_its_answer_and_id(
    captured: Callable[..., tuple[str, Path]],
) -> None:
    url, sink = captured(CAPTURE_ERRORS="1")
    answers: dict[str, Any] = {}
    with httpx.Client(base_url=url) as client:
        for i in range(20):
            answer = client.post("/predict", json={"features": row(i)}, headers={"X-Request-ID": f"req-{i}"})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == f"req-{i}"
            answers[f"req-{i}"] = answer.json()
        batch = client.post(
            "/predict_batch", json={"instances": [row(1), row(2)]}, headers={"X-Request-ID": "b"}
        )
        answers["b"] = batch.json()
        # an id no log line should hold is replaced by a generated one, returned all the same
        odd = client.post("/predict", json={"features": row(3)}, headers={"X-Request-ID": "x" * 200})
        assert odd.headers["x-request-id"] != "x" * 200 and len(odd.headers["x-request-id"]) == 32
        answers[odd.headers["x-request-id"]] = odd.json()
        refused = client.post("/predict", json={"features": [1]}, headers={"X-Request-ID": "bad-1"})
        assert refused.status_code == 400 and refused.headers["x-request-id"] == "bad-1"
        assert client.get("/health").headers["x-request-id"]  # every answer has one
        assert client.get("/no-such-path").headers["x-request-id"]
        assert client.get("/metrics").status_code == 200
    wait_for_lines(sink, len(answers) + 1)
    records = {r["request_id"]: r for r in records_in(sink)}
    assert len(records) == len(answers) + 1  # one each, and none for /health, /metrics, 404
    for rid, answer in answers.items():
        assert records[rid]["answer"] == answer and records[rid]["status"] == 200
    first = records["req-0"]
    assert first["route"] == "/predict" and first["model"] == {"name": "fraud_detector", "version": "1"}
    assert dict(zip(first["input"]["columns"], first["input"]["rows"][0])) == row(0)
    assert len(records["b"]["input"]["rows"]) == 2 and records["b"]["route"] == "/predict_batch"
    assert records["bad-1"]["status"] == 400 and "expected 5 values" in records["bad-1"]["error"]
    assert metric(url, "deployctl_capture_records_total") == len(answers) + 1


def test_sampling_records_about_the_fraction_asked(captured: Callable[..., tuple[str, Path]]) -> None:
    url, sink = captured(CAPTURE_SAMPLE="0.1")
    sent = 600
    with httpx.Client(base_url=url) as client:
        for i in range(sent):
            assert client.post("/predict", json={"features": row(i)}).status_code == 200
    time.sleep(1.0)
    recorded = len(records_in(sink)) if sink.exists() else 0
    # binomial(600, 0.1): mean 60, sd 7.3; 5 sd either side fails one run in millions
    assert 23 <= recorded <= 97, recorded
    assert metric(url, "deployctl_capture_records_total") == recorded


def test_redacted_columns_never_reach_the_sink(captured: Callable[..., tuple[str, Path]]) -> None:
    url, sink = captured(CAPTURE_REDACT="amount, merchant_category", CAPTURE_ERRORS="1")
    secret_amount, secret_category = 98765.4321, "zz-secret-merchant"
    with httpx.Client(base_url=url) as client:
        answer = client.post("/predict", json={"features": {**FRAUD_ROW, "amount": secret_amount}})
        assert answer.status_code == 200
        batch = {"instances": [{**FRAUD_ROW, "merchant_category": secret_category}]}
        assert client.post("/predict_batch", json=batch).status_code == 200
        # refused, with an error that quotes the value
        bad = {"features": {**FRAUD_ROW, "merchant_category": 1, "amount": f"{secret_category}"}}
        assert client.post("/predict", json=bad).status_code == 400
    wait_for_lines(sink, 3)
    text = sink.read_text()
    assert secret_category not in text and "98765" not in text
    records = records_in(sink)
    assert len(records) == 3
    for record in records[:2]:
        values = dict(zip(record["input"]["columns"], record["input"]["rows"][0]))
        assert values["amount"] == values["merchant_category"] == runtime.REDACTED
        assert values["hour"] == FRAUD_ROW["hour"]


@pytest.mark.parametrize("broken", ["unwritable", "full queue"])
def test_a_broken_or_blocked_sink_fails_no_request_and_counts_the_drops(
    artifact: Path, tmp_path: Path, broken: str
) -> None:
    if broken == "unwritable":
        env = {"CAPTURE": f"file:{tmp_path / 'missing' / 'capture.jsonl'}"}
    else:  # a FIFO nobody reads: the writer blocks on it for good, and a queue of 2 fills at once
        os.mkfifo(tmp_path / "fifo")
        env = {"CAPTURE": f"file:{tmp_path / 'fifo'}", "CAPTURE_QUEUE": "2", "GRACEFUL_TIMEOUT": "2"}
    proc, url = serve(artifact, {**env, "ACCESS_LOG": "0"})
    try:
        sent = 30
        with httpx.Client(base_url=url, timeout=10) as client:
            statuses = [client.post("/predict", json={"features": row(i)}).status_code for i in range(sent)]
        assert statuses == [200] * sent
        deadline = time.monotonic() + 10
        least = sent if broken == "unwritable" else sent - 4
        while metric(url, "deployctl_capture_dropped_total") < least and time.monotonic() < deadline:
            time.sleep(0.1)
        dropped = metric(url, "deployctl_capture_dropped_total")
        # unwritable: every record; full queue: all but the batch being written (at most 2) and the two queued
        assert dropped == sent if broken == "unwritable" else sent - 4 <= dropped <= sent, dropped
        assert metric(url, "deployctl_capture_records_total") == 0
    finally:
        started = time.monotonic()
        stop(proc)
    assert time.monotonic() - started < 30  # a stuck sink does not hold the stop beyond the drain time


def test_sigterm_writes_out_every_record_already_answered(artifact: Path, tmp_path: Path) -> None:
    """The sink is a pipe nobody reads until SIGTERM is sent, then slowly: it holds some records and
    the rest are still queued when the service is told to stop, and are written for seconds after
    the server has drained; every answered request's record arrives all the same."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = bytearray()
    stopping = threading.Event()

    def read_after_sigterm() -> None:
        with open(fifo, "rb") as pipe:
            stopping.wait(300)
            while chunk := pipe.read1(4096):  # type: ignore[attr-defined]
                received.extend(chunk)
                time.sleep(0.25)  # slowly: the records outlast the server's own shutdown by seconds

    reader = threading.Thread(target=read_after_sigterm)
    reader.start()
    proc, url = serve(artifact, {"CAPTURE": f"file:{fifo}", "ACCESS_LOG": "0"})
    ids: list[str] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as client:

            def ask(i: int) -> str:
                headers = {"X-Request-ID": f"t-{i}"}
                answer = client.post("/predict", json={"features": row(i)}, headers=headers)
                assert answer.status_code == 200
                return answer.headers["x-request-id"]

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(ask, range(300)))  # ~130 KB of records: twice a pipe's buffer
    finally:
        proc.send_signal(signal.SIGTERM)
        stopping.set()
        logs, _ = proc.communicate(timeout=60)
    reader.join(60)
    got = [json.loads(line)["request_id"] for line in bytes(received).decode().splitlines()]
    assert sorted(got) == sorted(ids), (len(got), len(ids), logs.decode(errors="replace")[-2000:])


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and its worker processes at once, as the OOM killer or a node loss would."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == proc.pid:
            children.append(int(stat.parent.name))
    for pid in [proc.pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)


def test_kill_9_loses_at_most_the_queue_and_leaves_the_file_whole(artifact: Path, tmp_path: Path) -> None:
    """Records written before a SIGKILL stay, whole and once each; only those still queued (the last
    answers, at most WRITE_SECONDS old) may be lost; a service started again appends after them."""
    sink = tmp_path / "capture.jsonl"
    env = {"CAPTURE": f"file:{sink}", "ACCESS_LOG": "0"}
    written, queued = {f"w-{i}" for i in range(100)}, {f"q-{i}" for i in range(30)}
    proc, url = serve(artifact, env)
    try:
        with httpx.Client(base_url=url) as client:
            for rid in sorted(written) + sorted(queued):
                answer = client.post("/predict", json={"features": row(0)}, headers={"X-Request-ID": rid})
                assert answer.status_code == 200
                if rid == "w-99":
                    wait_for_lines(sink, len(written))
    finally:
        kill_9(proc)
    ids = [r["request_id"] for r in records_in(sink)]  # every line a whole record of the schema
    assert len(ids) == len(set(ids)) and written <= set(ids) <= written | queued
    proc, url = serve(artifact, env)
    try:
        assert httpx.post(f"{url}/predict", json={"features": row(0)}, headers={"X-Request-ID": "after"})
        wait_for_lines(sink, len(ids) + 1)
    finally:
        stop(proc)
    assert [r["request_id"] for r in records_in(sink)] == [*ids, "after"]


def test_bad_capture_settings_stop_the_service_with_one_line(artifact: Path) -> None:
    for env, said in (
        ({"CAPTURE": "kafka-ish"}, "CAPTURE must be 'stdout', 'file:PATH' or 'kafka:TOPIC'"),
        # kafka:TOPIC where the artifact does not install the client (only the kafka target's does)
        (
            {"CAPTURE": "kafka:capture", "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
            "CAPTURE=kafka:TOPIC needs the confluent-kafka package",
        ),
        ({"CAPTURE": "stdout", "CAPTURE_SAMPLE": "lots"}, "CAPTURE_SAMPLE must be a float"),
        ({"CAPTURE": "stdout", "CAPTURE_SAMPLE": "1.5"}, "CAPTURE_SAMPLE must be a fraction from 0 to 1"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "deployctl", "serve", str(artifact), "--port", str(free_port())],
            env={**os.environ, "WORKERS": "1", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
        assert f"the service cannot start: {said}" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr


def test_a_served_model_is_frozen_out_of_the_collector(artifact: Path) -> None:
    """Full collections of the loaded heap (MLflow, pandas, the model) stopped every request for
    60-170 ms under capture's load (bench/results.md): a server freezes what is alive once loaded.
    (The embedded package leaves its user's collector alone: tests/test_embedded.py.)"""
    script = "import gc; from app.service import ModelService\n"
    script += "ModelService.from_artifact(); print(gc.get_freeze_count())"
    python = str(artifact / ".venv" / "bin" / "python")
    proc = subprocess.run([python, "-c", script], cwd=artifact, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) > 20_000, proc.stdout  # the imports and the model


def test_file_sink_rotates_by_size_and_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    counts: dict[str, int] = {"records": 0, "dropped": 0}
    environ = {"CAPTURE": f"file:{path}", "CAPTURE_FILE_BYTES": "1000", "CAPTURE_FILE_COUNT": "3"}
    capture = runtime.Capture.from_environ(
        lambda kind, n: counts.__setitem__(kind, counts[kind] + n), environ
    )
    assert capture is not None
    for i in range(200):
        capture.record({"request_id": f"r{i}", "input": None, "padding": "x" * 80})
        capture.flush()
    capture.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "capture.jsonl",
        "capture.jsonl.1",
        "capture.jsonl.2",
    ]
    kept = [
        json.loads(line)["request_id"]
        for p in (path.with_suffix(".jsonl.2"), path.with_suffix(".jsonl.1"), path)
        for line in p.read_text().splitlines()
    ]
    assert kept == [f"r{i}" for i in range(200 - len(kept), 200)]  # the newest, in order
    assert counts == {"records": 200, "dropped": 0}
    assert runtime.Capture.from_environ(lambda kind, n: None, {}) is None  # off by default


# -- replay and compare --traffic ------------------------------------------------------------------------


def written_lines(where: Path, count: int, seconds: float = 30) -> None:
    """Wait until the capture files in `where` hold `count` lines (the writer wakes every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        files = [p for p in where.glob("capture.jsonl*") if not p.name.endswith(".lock")]
        if sum(p.read_bytes().count(b"\n") for p in files) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} records were not written in {seconds} s")


@pytest.fixture(scope="module")
def capture_dir(build_artifact: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A capture of the fastapi service, rotated over several files: /predict, /predict_batch,
    /invocations and refused requests."""
    where = tmp_path_factory.mktemp("captured")
    env = {
        "CAPTURE": f"file:{where / 'capture.jsonl'}",
        "CAPTURE_FILE_BYTES": "3000",
        "CAPTURE_FILE_COUNT": "100",
        "CAPTURE_ERRORS": "1",
        "ACCESS_LOG": "0",
    }
    proc, url = serve(build_artifact(FRAUD, "fastapi"), env)
    try:
        with httpx.Client(base_url=url) as client:
            for i in range(20):
                client.post("/predict", json={"features": row(i)}, headers={"X-Request-ID": f"p-{i}"})
                written_lines(where, i + 1)  # one record per write, so the files rotate whatever the load
            client.post("/predict_batch", json={"instances": [row(30), row(31), row(32)]})
            columns = list(FRAUD_ROW)
            split = {"columns": columns, "data": [list(row(40).values()), list(row(41).values())]}
            client.post("/invocations", json={"dataframe_split": split})
            client.post("/predict", json={"features": [1]})  # refused: recorded, never replayed
    finally:
        stop(proc)
    return where


def test_replay_asks_a_service_again_and_writes_its_answers_as_records(
    capture_dir: Path,
    build_artifact: Callable[..., Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    files = sorted(p.name for p in capture_dir.iterdir() if not p.name.endswith(".lock"))
    assert len(files) > 2, files  # rotated: the directory is read as one capture, oldest first
    captured = {r["request_id"]: r for r in records_in(*(capture_dir / f for f in files))}
    assert len(captured) == 23
    proc, url = serve(build_artifact(FRAUD, "flask"), {"ACCESS_LOG": "0"})
    out = tmp_path / "replayed.jsonl"
    try:
        result = run_cli("replay", str(capture_dir), "--url", url, "--out", str(out))
        assert result.code == 0, result.output
        assert "22 answered, 0 refused, 1 skipped" in result.stderr
        again = run_cli("replay", str(capture_dir), "--url", url, "--out", str(out))
        assert again.code == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    finally:
        stop(proc)
    replayed = records_in(out)
    assert len(replayed) == 22
    for record in replayed:
        original = captured[record["request_id"]]
        assert record["route"] == original["route"] and record["input"] == original["input"]
        assert record["status"] == 200 and record["model"] == original["model"]
        assert record["answer"].keys() == original["answer"].keys()
        labels = "predictions" if "predictions" in record["answer"] else "prediction"
        assert record["answer"][labels] == original["answer"][labels]
    unreachable = run_cli("replay", str(capture_dir), "--url", url, "--out", str(tmp_path / "x.jsonl"))
    assert unreachable.code == 3 and "did not answer" in unreachable.stderr


def test_compare_reads_captured_traffic_from_a_directory_of_rotated_files(
    capture_dir: Path,
    build_artifact: Callable[..., Path],  # noqa: F811
) -> None:
    fastapi, flask = build_artifact(FRAUD, "fastapi"), build_artifact(FRAUD, "flask")
    both = ("compare", str(fastapi), "--against", str(flask))
    result = run_cli(*both, "--traffic", str(capture_dir), "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    # 20 /predict rows, 3 of the batch, 2 of /invocations; the refused request has none
    assert report["rows"] == report["compared"] == 25 and report["agreement"] == 1.0
    missing = run_cli(*both, "--traffic", str(capture_dir / "nope"))
    assert missing.code == 2 and "does not exist" in missing.stderr


def test_gcf_writes_records_to_stdout(build_artifact: Callable[..., Path]) -> None:  # noqa: F811
    """The real functions-framework, CAPTURE=stdout: what Cloud Logging keeps."""
    proc, url = serve(build_artifact(FRAUD, "gcf"), {"CAPTURE": "stdout", "ACCESS_LOG": "0"})
    answers = {}
    try:
        for i in range(3):
            headers = {"X-Request-ID": f"s-{i}"}
            answer = httpx.post(f"{url}/predict", json={"features": row(i)}, headers=headers)
            assert answer.status_code == 200 and answer.headers["x-request-id"] == f"s-{i}"
            answers[f"s-{i}"] = answer.json()
    finally:
        output = stop(proc)
    assert records_on(output) == answers, output[-3000:]


def test_lambda_writes_records_to_stdout_before_each_invocation_returns(
    build_artifact: Callable[..., Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The handler in Lambda's clean interpreter (the local emulator), CAPTURE=stdout: the function's
    output, which Lambda sends to CloudWatch Logs. The environment is killed right after the last
    invocation, as Lambda may freeze or end it once a handler returns."""
    art = Artifact.open(build_artifact(FRAUD, "lambda"))
    zip_path, python, _ = aws_lambda.local_run(art)
    task, runtime_paths = apigw.prepare(zip_path, tmp_path / "task", False)
    function = aws_lambda.function_config(art, runtime_paths)
    function.env.update({"CAPTURE": "stdout", "ACCESS_LOG": "0"})
    log = tmp_path / "function.log"
    answers = {}
    with log.open("w") as out:
        invoker = apigw.Invoker(task, python, function, stderr=out)
        try:
            for i in range(3):
                headers = {"content-type": "application/json", "x-request-id": f"l-{i}"}
                body = json.dumps({"features": row(i)}).encode()
                result = invoker.invoke(apigw.v2_event("POST", "/predict", body, headers))["result"]
                assert result["statusCode"] == 200 and result["headers"]["x-request-id"] == f"l-{i}"
                answers[f"l-{i}"] = json.loads(result["body"])
        finally:
            invoker.close()
    assert records_on(log.read_text()) == answers, log.read_text()[-3000:]


def records_on(output: str) -> dict[str, Any]:
    """{request id: answer} of the capture records among a process's output lines, each validated."""
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"schema_version"')]
    for record in records:
        VALIDATOR.validate(record)
    return {r["request_id"]: r["answer"] for r in records}


@pytest.mark.parametrize("target", TARGETS)
def test_smoke_test_checks_each_request_was_recorded_once(
    build_artifact: Callable[..., Path],  # noqa: F811
    target: str,
    tmp_path: Path,
) -> None:
    """CAPTURE set where smoke-test runs: the service it starts records every request of the
    contract to its output (not to the user's file, whatever the sample), and the check matches
    each record with its request's id, status and answer, the redacted column as the marker."""
    user_file = tmp_path / "production.jsonl"
    env = {
        **os.environ,
        "CAPTURE": f"file:{user_file}",
        "CAPTURE_SAMPLE": "0.1",
        "CAPTURE_REDACT": "amount",
    }
    result = run_cli("smoke-test", str(build_artifact(FRAUD, target)), "--json", env=env)
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    detail = checks[capture_check.NAME]["detail"]
    assert checks[capture_check.NAME]["ok"], detail
    scored, records = (int(n) for n in re.findall(r"\d+", detail))
    assert scored >= 6 and records == scored  # /predict per case, batch, /invocations, infer, 2 refused
    assert not user_file.exists()


def exchange(n: int, path: str = "/predict", status: int = 200, answer: Any = None) -> Exchange:
    body = json.dumps(answer if answer is not None else {"label": n}).encode()
    return Exchange(f"smoke-{n}", "GET" if path == "/health" else "POST", path, status, body)


def record(n: int, status: int = 200, answer: Any = None, amount: Any = 1.0) -> str:
    error = None if status == 200 else "expected 5 values"
    return json.dumps(
        {
            "schema_version": 1,
            "request_id": f"smoke-{n}",
            "status": status,
            "answer": (answer if answer is not None else {"label": n}) if status == 200 else None,
            "error": error,
            "input": {"columns": ["amount", "hour"], "rows": [[amount, 3]]},
        }
    )


@pytest.mark.parametrize(
    ("journal", "lines", "wrong"),
    [
        ([exchange(1), exchange(2, "/health")], [record(1, amount="[REDACTED]")], None),
        ([exchange(1)], [], "0 records, expected 1"),
        ([exchange(1)], [record(1, amount="[REDACTED]")] * 2, "2 records, expected 1"),
        ([exchange(1)], [record(1, answer={"label": 9}, amount="[REDACTED]")], "not the one given"),
        ([exchange(1, status=400)], [record(1, amount="[REDACTED]")], "recorded status 200, answered 400"),
        ([exchange(1)], [record(1)], "column 'amount' is in CAPTURE_REDACT"),
        ([exchange(1, "/health")], [record(1)], "not a scoring request but was recorded"),
    ],
)
def test_the_capture_check_fails_on_each_kind_of_wrong_record(
    journal: list[Exchange], lines: list[str], wrong: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPTURE_REDACT", "amount")
    output = "\n".join(['{"level": "info", "msg": "model loaded"}', *lines])
    check = capture_check.capture_check(journal, lambda: output, seconds=0.3)
    assert check.ok is (wrong is None), check.detail
    assert wrong is None or wrong in check.detail


def test_the_capture_check_reads_capture_off_as_the_runtime_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert capture_check.OFF == importlib.import_module("artifact_app.capture").OFF
    for value, on in [("", False), (" Off ", False), ("none", False), ("0", False), ("stdout", True)]:
        monkeypatch.setenv("CAPTURE", value)
        assert capture_check.requested() is on
