"""deployctl loadtest: open-loop load against test servers whose behaviour is known (a fixed delay, a
periodic stall, wrong answers, 503s) and against the generated fastapi and flask services.

The test servers answer the fraud model's recorded cases as the artifact's manifest holds them, so
the CLI runs with `--url` against them exactly as against a deployed service. Margins are generous:
the machine is shared and loaded; nothing asserts a speed, only what a user sees (exit codes,
figures in the right ranges, reports that open)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import drawn_fraction, screenshot
from conftest import Result, run_cli
from test_rest import build_artifact  # noqa: F401 (the session fixture)

from deployctl.checks import loadgen
from deployctl.checks.loadtest import parse_slo
from deployctl.errors import UsageError

FRAUD = "models:/fraud_detector@production"


@dataclass
class Behaviour:
    delay: float = 0.0  # seconds before every answer
    stall_every: float = 0.0  # a stall starts every this many seconds...
    stall_for: float = 0.0  # ...and holds every answer due in it until its end
    wrong: bool = False  # answer the other class
    fail_every: int = 0  # every n-th request gets a 503
    fail_fast: bool = False  # the 503s leave at once, before any delay or stall (a cheap refusal)
    version: str | None = None  # /health names this model version instead of the artifact's
    health: str = "healthy"  # the status /health reports


class KnownServer:
    """A keep-alive HTTP/1.1 server on loopback (asyncio, in a thread) that serves the recorded
    answers of an artifact, with a known behaviour."""

    def __init__(self, artifact: Path, behaviour: Behaviour) -> None:
        manifest = json.loads((artifact / "deployctl.json").read_text())
        self.model = manifest["model"]
        self.answers = {self._key(c["row"]): c for c in manifest["smoke_cases"]}
        self.behaviour = behaviour
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    @staticmethod
    def _key(row: Any) -> str:
        return json.dumps(row, sort_keys=True)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self.started = self.loop.time()
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path = head[0].split(" ")[:2]
                length = next(
                    (int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0
                )
                body = await reader.readexactly(length)
                status, answer = await self._answer(method, path, body)
                data = json.dumps(answer).encode()
                reason = "OK" if status == 200 else "Service Unavailable"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        model = self.model
        b = self.behaviour
        if path == "/health":
            version = model["version"] if b.version is None else b.version
            return 200, {"status": b.health, "model_name": model["name"], "model_version": version}
        self.requests += 1
        failing = bool(b.fail_every) and self.requests % b.fail_every == 0
        if failing and b.fail_fast:
            return 503, {"error": "overloaded"}
        if b.stall_every:
            phase = (self.loop.time() - self.started) % b.stall_every
            if phase < b.stall_for:
                await asyncio.sleep(b.stall_for - phase)
        if b.delay:
            await asyncio.sleep(b.delay)
        if failing:
            return 503, {"error": "overloaded"}
        case = self.answers.get(self._key(json.loads(body)["features"]))
        if case is None:  # a row of --data: any well-formed answer
            return 200, {"prediction": 0, "probability": 0.5, "model_version": model["version"]}
        prediction = 1 - case["prediction"] if b.wrong else case["prediction"]
        probability = case["probabilities"][str(model["classes"][1])]
        return 200, {"prediction": prediction, "probability": probability, "model_version": model["version"]}


@pytest.fixture(scope="module")
def fastapi_artifact(build_artifact: Callable[..., Path]) -> Path:  # noqa: F811
    return build_artifact(FRAUD, "fastapi")


@pytest.fixture
def server(fastapi_artifact: Path) -> Iterator[Callable[[Behaviour], KnownServer]]:
    started: list[KnownServer] = []

    def start(behaviour: Behaviour) -> KnownServer:
        started.append(KnownServer(fastapi_artifact, behaviour))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def loadtest(artifact: Path, *args: str) -> tuple[Result, dict[str, Any]]:
    result = run_cli("loadtest", str(artifact), "--json", *args, timeout=300)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {}
    return result, report


def test_a_fixed_20ms_server_is_measured_at_20ms(server: Any, fastapi_artifact: Path) -> None:
    s = server(Behaviour(delay=0.020))
    result, report = loadtest(
        fastapi_artifact, "--url", s.url, "--rate", "100", "--duration", "3", "--slo", "p50<=40ms"
    )
    assert result.code == 0, result.output
    assert report["passed"] and report["requests"] == 300 and s.requests >= 300
    assert 19.5 <= report["latency_ms"]["p50"] <= 30, report["latency_ms"]
    assert report["offered_rate"] == 100 and 80 <= report["achieved_rate"] <= 101
    assert report["errors"] == {} and report["timeouts"] == 0 and report["wrong_answers"] == 0
    assert report["answers_checked"] >= 25
    assert report["cold_start_s"] is None  # a deployed service: not started here
    assert report["slo"][0] == {
        "term": "p50<=40ms", "op": "<=", "limit": 40.0, "value": report["latency_ms"]["p50"], "unit": "ms",
        "passed": True,
    }  # fmt: skip


def closed_loop_p99(url: str, seconds: float) -> float:
    """What a closed-loop client (one request after the other) measures in `seconds`: the p99 ms."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"features": {}}).encode()  # not a recorded row: the server answers anyway
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
        conn.getresponse().read()
        latencies.append((time.monotonic() - started) * 1000)
    latencies.sort()
    return latencies[int(len(latencies) * 0.99)]


def test_a_periodic_stall_shows_in_p99_where_a_closed_loop_hides_it(
    server: Any, fastapi_artifact: Path
) -> None:
    s = server(Behaviour(stall_every=3.0, stall_for=1.0))
    result, report = loadtest(
        fastapi_artifact, "--url", s.url, "--rate", "100", "--duration", "6", "--slo", "p99<=100ms"
    )
    assert result.code == 1, result.output
    latency = report["latency_ms"]
    assert latency["p99"] >= 700 and latency["max"] >= 800, latency  # the 1 s stalls and the queue behind
    assert latency["p50"] < 300, latency  # two thirds of the time it answers at once
    assert "p99<=100ms" in result.stderr and "SLO not met" in result.stderr
    # the same server measured in a closed loop: one slow request per stall, p99 stays small
    assert closed_loop_p99(s.url, 4.0) < 100


def test_fast_wrong_answers_fail_the_gate(server: Any, fastapi_artifact: Path, tmp_path: Path) -> None:
    s = server(Behaviour(wrong=True))
    junit = tmp_path / "loadtest.xml"
    result, report = loadtest(
        fastapi_artifact,
        "--url",
        s.url,
        "--rate",
        "200",
        "--duration",
        "2",
        "--slo",
        "p99<=1s",
        "--junit",
        str(junit),
    )
    assert result.code == 1, result.output
    # only the rows whose recorded answer is the other class come back wrong: most of a sample
    assert report["wrong_answers"] > 0 and not report["passed"]
    assert report["slo"][-1]["term"] == "wrong_answers" and not report["slo"][-1]["passed"]
    assert "wrong_answers" in result.stderr and "First wrong answer" in result.stderr
    from junitparser import Failure, JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    results = {case.name: case.result for case in suite}
    assert isinstance(results["gate wrong_answers <= 0"][0], Failure)
    assert not results["gate p99<=1s <= 1000ms"]  # met


def test_503s_on_part_of_the_load_are_the_error_rate(
    server: Any, fastapi_artifact: Path, tmp_path: Path
) -> None:
    s = server(Behaviour(fail_every=5))
    rows = tmp_path / "rows.jsonl"  # --data: the rows sent beside the recorded ones
    row = {
        "amount": 12.5,
        "hour": 9,
        "merchant_category": "grocery",
        "is_foreign": False,
        "account_age_days": 400,
    }
    rows.write_text(json.dumps(row) + "\n" + json.dumps({"features": row}) + "\n")
    result, report = loadtest(
        fastapi_artifact, "--url", s.url, "--rate", "200", "--duration", "2", "--data", str(rows),
        "--slo", "error_rate<=1%,p99<=1s",
    )  # fmt: skip
    assert result.code == 1, result.output
    assert report["errors"] == {"503": 80} and report["error_rate"] == 0.2
    assert report["slo"][0]["term"] == "error_rate<=1%" and report["slo"][0]["value"] == 0.2
    assert report["slo"][1]["passed"] and report["wrong_answers"] == 0
    assert "error_rate" in result.stderr
    # the user's error_rate term replaces the default error_rate<=0: one error-rate gate, theirs
    assert [g["term"] for g in report["slo"]] == ["error_rate<=1%", "p99<=1s", "wrong_answers"]


@pytest.mark.parametrize("slo", [[], ["--slo", "p99<=50ms"]], ids=["no-slo", "p99-only"])
def test_a_server_refusing_every_request_fails_on_the_default_error_rate_gate(
    server: Any, fastapi_artifact: Path, tmp_path: Path, slo: list[str]
) -> None:
    """No error_rate term given: error_rate<=0 is a gate all the same, in every report. A server
    answering 503 to everything fast must not pass (nor show a latency: no 2xx answer was timed)."""
    s = server(Behaviour(fail_every=1))
    junit, html = tmp_path / "load.xml", tmp_path / "load.html"
    args = ("--url", s.url, "--rate", "100", "--duration", "1", *slo)
    result, report = loadtest(fastapi_artifact, *args, "--junit", str(junit), "--html", str(html))
    assert result.code == 1, result.output
    said = " ".join(result.stderr.split())  # as Rich wrapped it
    assert "SLO not met" in said and "error_rate 1 <= 0: failed" in said
    assert report["errors"] == {"503": 100} and report["error_rate"] == 1.0 and not report["passed"]
    default = {"term": "error_rate", "op": "<=", "limit": 0.0, "value": 1.0, "unit": "", "passed": False}
    assert report["slo"][-2:] == [default, {**default, "term": "wrong_answers", "value": 0, "passed": True}]
    assert report["latency_of"] == "2xx answers" and report["latency_ms"]["p99"] is None
    if slo:  # a latency term with no 2xx answer to time: not measured, so not met
        assert report["slo"][0]["term"] == "p99<=50ms" and report["slo"][0]["value"] is None
        assert not report["slo"][0]["passed"]
    from junitparser import Failure, JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert isinstance({case.name: case.result for case in suite}["gate error_rate <= 0"][0], Failure)
    page = html.read_text()
    assert "error_rate" in page and "2xx answers" in page
    table = run_cli("loadtest", str(fastapi_artifact), *args, timeout=300)  # the terminal's table
    assert table.code == 1 and re.search(r"error_rate\s.*<= 0\s.*1\s.*NOT MET", table.stdout), table.output


def test_the_default_error_rate_gate_is_replaced_by_the_users_term(
    server: Any, fastapi_artifact: Path
) -> None:
    s = server(Behaviour(fail_every=5))
    result, report = loadtest(
        fastapi_artifact, "--url", s.url, "--rate", "100", "--duration", "2", "--slo", "error_rate<=25%"
    )
    assert result.code == 0, result.output
    assert report["error_rate"] == 0.2 and report["passed"]
    assert [g["term"] for g in report["slo"]] == ["error_rate<=25%", "wrong_answers"]


def test_latency_percentiles_are_of_the_2xx_answers_only(server: Any, fastapi_artifact: Path) -> None:
    """Half the requests refused at once, the other half served in 30 ms: mixed together, the
    instant refusals would make the median ~0 ms; the served answers' median is 30 ms."""
    s = server(Behaviour(delay=0.030, fail_every=2, fail_fast=True))
    result, report = loadtest(
        fastapi_artifact, "--url", s.url, "--rate", "100", "--duration", "2", "--slo", "error_rate<=60%"
    )
    assert result.code == 0, result.output
    assert report["errors"] == {"503": 100} and report["latency_of"] == "2xx answers"
    assert report["latency_ms"]["p50"] >= 29, report["latency_ms"]


@pytest.mark.parametrize(
    ("behaviour", "code", "said"),
    [
        (Behaviour(version="999"), 2, "serves another deployment: the endpoint serves version 999"),
        (Behaviour(health="starting"), 1, "status 'starting', not 'healthy'"),
    ],
    ids=["another-version", "unhealthy"],
)
def test_url_serving_another_version_is_a_usage_error_and_an_unhealthy_one_a_failure(
    server: Any, fastapi_artifact: Path, behaviour: Behaviour, code: int, said: str
) -> None:
    """As compare --candidate-url: a URL serving another version names another deployment (exit
    2); this deployment unhealthy is a failed check (exit 1). Either way no load is sent."""
    s = server(behaviour)
    result, _ = loadtest(fastapi_artifact, "--url", s.url, "--rate", "50", "--duration", "1")
    assert result.code == code, result.output
    assert said in " ".join(result.stderr.split()) and "No load was sent" in result.stderr
    assert s.requests == 0 and "Traceback" not in result.output


def test_find_max_stops_at_the_first_rate_with_errors_and_climbs_without(
    server: Any, fastapi_artifact: Path
) -> None:
    """One request in 20 refused: each step keeps up (95% answered), so only the default
    error_rate<=0 gate stops the search, at the first step. Without errors it climbs to --max-rate."""
    args = ("--find-max", "--slo", "p99<=1s", "--rate", "40", "--duration", "2", "--max-rate", "160")
    result, report = loadtest(fastapi_artifact, "--url", server(Behaviour(fail_every=20)).url, *args)
    assert result.code == 1, result.output
    assert report["max_rate"] is None and report["stopped"] == "slo_broken"
    assert len(report["steps"]) == 1 and not report["steps"][0]["passed"]
    assert report["steps"][0]["error_rate"] == 0.05
    said = " ".join(result.stderr.split())
    assert "not even 40 req/s" in said and "error_rate 0.05 <= 0: failed" in said

    result, report = loadtest(fastapi_artifact, "--url", server(Behaviour()).url, *args)
    if report.get("generator_limited"):
        pytest.skip("the machine is too loaded for the generator to keep 160 req/s (generator_limited)")
    assert result.code == 0, result.output
    assert report["max_rate"] == 160 and report["stopped"] == "ceiling"
    assert [st["offered_rate"] for st in report["steps"]] == [40, 80, 160]
    assert [g["term"] for g in report["slo"]] == ["p99<=1s", "max_rate", "error_rate", "wrong_answers"]
    assert all(g["passed"] for g in report["slo"])


def test_an_endpoint_that_never_answers_exits_3(fastapi_artifact: Path) -> None:
    from deployctl.process import free_port

    result, _ = loadtest(fastapi_artifact, "--url", f"http://127.0.0.1:{free_port()}", "--rate", "10")
    assert result.code == 3, result.output
    assert "unreachable" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--rate", "10", "--slo", "p99<50ms"], "not understood"),
        (["--rate", "10", "--slo", "p99<=50"], "time unit"),
        (["--rate", "10", "--slo", "rate<=5"], "rate takes >="),
        (["--find-max"], "needs an SLO"),
        (["--duration", "3"], "Give --rate"),
        (["--rate", "10", "--route", "nope"], "--route nope"),
    ],
)
def test_usage_mistakes_exit_2(fastapi_artifact: Path, args: list[str], said: str) -> None:
    result, _ = loadtest(fastapi_artifact, *args)
    assert result.code == 2, result.output
    assert said in result.stderr and "Traceback" not in result.output


def test_slo_terms_parse_to_limits_in_ms_fractions_and_req_per_s() -> None:
    terms = parse_slo(["p99<=50ms, p50<=0.01s", "p999 <= 250us,error_rate<=0.5%", "rate>=100/s", "max<=2s"])
    assert [(t.name, t.op, t.limit) for t in terms] == [
        ("p99", "<=", 50.0), ("p50", "<=", 10.0), ("p999", "<=", 0.25), ("error_rate", "<=", 0.005),
        ("rate", ">=", 100.0), ("max", "<=", 2000.0),
    ]  # fmt: skip
    with pytest.raises(UsageError):
        parse_slo(["error_rate<=150%"])


def test_the_generator_reports_itself_limited_when_it_sends_late() -> None:
    """The report blames the generator, not the service, when its own loop sent late."""
    from array import array

    def outcome(late_ms: list[float]) -> loadgen.Outcome:
        n = len(late_ms)
        lag = array("d", [ms / 1000 for ms in late_ms])
        return loadgen.Outcome(
            array("d", [0] * n),
            array("d", [0] * n),
            array("d", [0] * n),
            array("i", [0] * n),
            dispatch_lag=lag,
        )

    assert not outcome([0.5] * 995 + [50.0] * 5).generator_limited  # 0.5%: noise
    assert outcome([0.5] * 95 + [50.0] * 5).generator_limited  # 5% of the requests late


@pytest.mark.parametrize("target", ["fastapi", "flask"])
def test_find_max_finds_a_rate_the_slo_meets_below_and_breaks_far_above(
    target: str,
    build_artifact: Callable[..., Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    artifact = build_artifact(FRAUD, target)
    html, junit = tmp_path / "find-max.html", tmp_path / "find-max.xml"
    result, report = loadtest(
        artifact, "--find-max", "--slo", "p99<=250ms", "--rate", "25", "--duration", "2",
        "--html", str(html), "--junit", str(junit),
    )  # fmt: skip
    if report.get("generator_limited") and report.get("max_rate") is None:
        # the machine, not the service: the generator itself could not keep even the first step's
        # schedule (seen at a load average of 20 on 2 cores); the report must say so, not blame it
        assert result.code == 1 and "load generator fell behind" in result.stderr, result.output
        pytest.skip("the machine is too loaded for the generator to keep 25 req/s (generator_limited)")
    assert result.code == 0, result.output
    max_rate = report["max_rate"]
    assert max_rate >= 25 and report["passed"] and report["stopped"] in ("slo_broken", "generator_limited")
    assert len(report["steps"]) >= 2 and report["cold_start_s"] > 0
    assert report["offered_rate"] == max_rate and report["wrong_answers"] == 0
    assert report["slo"][1] == {
        "term": "max_rate",
        "op": ">=",
        "limit": 25.0,
        "value": max_rate,
        "unit": "req/s",
        "passed": True,
    }

    from junitparser import JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert {case.name for case in suite} >= {"gate p99<=250ms <= 250ms", "gate max_rate >= 25 req/s"}
    assert suite.failures == 0 and suite.properties is not None

    page = html.read_text()
    assert page.count("<svg") == 3  # over time, distribution, against the rate
    png = screenshot(html, tmp_path / "find-max.png", size="1200,3000")
    assert drawn_fraction(png) > 0.02

    # each step is a run at one rate with the SLO applied (one service start keeps the test short on
    # a loaded CI box): the SLO held at a fraction of the rate found and broke above it, unless the
    # generator (not the service) was what stopped the search
    steps = report["steps"]
    assert any(st["passed"] and st["offered_rate"] <= max_rate / 2 for st in steps), steps
    if report["stopped"] == "slo_broken":
        assert any(not st["passed"] and st["offered_rate"] > max_rate for st in steps), steps
