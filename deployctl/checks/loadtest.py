"""loadtest: an SLO gate for an artifact (started here) or a deployed endpoint (`--url`).

The load is open-loop (`loadgen`): requests leave at a constant rate and each latency counts from
the moment the request was due, so a stalled service shows in the percentiles. Requests cycle
through the artifact's recorded rows (or `--data`'s, with one request in `CHECK_EVERY` still a
recorded row), and those sampled answers are checked against what the model answered in-process:
a fast wrong answer is a failure. `--find-max` steps the rate up until the SLO breaks.

Two gates are always on: no wrong answer, and (unless an `error_rate` term sets its own limit) no
failed request. Latency percentiles are of the 2xx answers only: a service that refuses fast must
not look fast; its refusals count in `error_rate` instead.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployctl.checks import contract, loadgen
from deployctl.checks.gates import Gate
from deployctl.errors import DeployctlError, UsageError
from deployctl.manifest import Artifact

ROUTES = ("predict", "predict_batch", "invocations", "infer")
BATCH_ROUTES = frozenset({"predict_batch", "invocations", "infer"})
CHECK_EVERY = 10  # one answer in this many is checked against the recorded one
KEEPS_UP = 0.9  # a find-max step passes only if the service answered this share of the offered rate
FIND_MAX_START = 50.0  # req/s, the first step when --rate is not given
BISECTIONS = 3  # after the first failing step: the highest passing rate within 1/2**3 of the limit
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999, "max": 1.0}
Window = tuple[float, float, float, float]  # latency over time: (start s, p50, p99, max ms)
TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
SLO_TERM = re.compile(
    r"^\s*(?P<name>p50|p90|p99|p99\.9|p999|max|error_rate|rate)\s*(?P<op><=|>=)\s*"
    r"(?P<value>\d+(?:\.\d+)?(?:e-?\d+)?)\s*(?P<unit>ms|us|s|%|/s|req/s|rps)?\s*$"
)
# The error-rate gate when --slo sets none: a gate that passed a service refusing every request
# would be worse than no gate. Any tolerance is the user's to state (`error_rate<=0.1%`).
DEFAULT_ERROR_RATE = 0.0
LATENCY_OF = "2xx answers"  # what the percentiles measure (reports say it beside them)
SLO_HINT = (
    "Terms: p50|p90|p99|p999|max <= N ms|s|us, error_rate <= N or N%, rate >= N (req/s); "
    "comma-separated or --slo repeated, e.g. --slo 'p99<=50ms,error_rate<=0.1%'."
)


class LoadTestFailed(DeployctlError):
    """An SLO term was not met, or answers were wrong (exit 1)."""


@dataclass(frozen=True)
class Term:
    """One SLO term: `p99<=50ms` is Term("p99", "<=", 50.0, "ms", "p99<=50ms")."""

    name: str
    op: str
    limit: float
    unit: str
    text: str


def parse_slo(texts: list[str]) -> list[Term]:
    """`['p99<=50ms, error_rate<=1%']` -> terms; a mistake names the term and the syntax."""
    terms = []
    for text in texts:
        for part in filter(str.strip, text.split(",")):
            match = SLO_TERM.match(part)
            if not match:
                raise UsageError(f"--slo term '{part.strip()}' is not understood.", SLO_HINT)
            terms.append(_term(match, part.strip()))
    return terms


def _term(match: re.Match[str], text: str) -> Term:
    name, op, value, unit = match["name"], match["op"], float(match["value"]), match["unit"] or ""
    name = "p999" if name == "p99.9" else name
    want = ">=" if name == "rate" else "<="
    if op != want:
        raise UsageError(f"--slo term '{text}': {name} takes {want}.", SLO_HINT)
    if name in QUANTILES:
        if unit not in TIME_UNITS:
            raise UsageError(f"--slo term '{text}': give a time unit (ms, s or us).", SLO_HINT)
        return Term(name, op, value * TIME_UNITS[unit], "ms", text)
    if name == "error_rate":
        if unit not in ("", "%"):
            raise UsageError(f"--slo term '{text}': an error rate is a fraction or a percentage.", SLO_HINT)
        limit = value / 100 if unit == "%" else value
        if limit > 1:
            raise UsageError(f"--slo term '{text}': an error rate is at most 1 (100%).", SLO_HINT)
        return Term(name, op, limit, "", text)
    if unit in ("ms", "us", "s", "%"):
        raise UsageError(f"--slo term '{text}': a rate is in requests per second.", SLO_HINT)
    return Term(name, op, value, " req/s", text)


# -- what is sent, and how an answer is checked ----------------------------------------------


@dataclass
class Payloads:
    """The request bodies of a route, the recorded cases each checked body covers, and a check."""

    path: str
    recorded: list[bytes]  # body k covers the cases `covers[k]`
    covers: list[list[dict[str, Any]]]
    extra: list[bytes]  # --data's bodies (no recorded answer)
    verify: Callable[[Any, list[dict[str, Any]]], contract.Problem | None]

    def body(self, i: int) -> bytes:
        """Request i: a recorded body when it will be checked, else --data's when given."""
        if not self.extra:
            return self.recorded[i % len(self.recorded)]
        if i % CHECK_EVERY == 0:
            return self.recorded[(i // CHECK_EVERY) % len(self.recorded)]
        return self.extra[i % len(self.extra)]

    def cases(self, i: int) -> list[dict[str, Any]]:
        k = i % len(self.recorded) if not self.extra else (i // CHECK_EVERY) % len(self.recorded)
        return self.covers[k]


def payloads(artifact: Artifact, route: str, batch_size: int, data: list[Any] | None) -> Payloads:
    cases, rows = artifact.smoke_cases, data or []
    if not cases:
        raise UsageError(f"{artifact.path} records no answers to check.", "Generate the artifact again.")
    size = batch_size if route in BATCH_ROUTES else 1
    covers = [[cases[(k * size + j) % len(cases)] for j in range(size)] for k in range(len(cases))]
    extra = [[{"row": rows[(k * size + j) % len(rows)]} for j in range(size)] for k in range(len(rows))]
    build, path, verify = _route(route, artifact)
    return Payloads(
        path,
        [_json(build(batch)) for batch in covers],
        covers,
        [_json(build(batch)) for batch in extra],
        verify,
    )


def _route(route: str, artifact: Artifact) -> tuple[Callable[[list[dict[str, Any]]], Any], str, Any]:
    """(body for some cases, path, check of an answer against those cases) of a route."""
    model = artifact.model
    names = [c["name"] for c in model["columns"]]
    tensor = model.get("tensor") is not None
    if route == "predict":
        return (
            lambda cs: {"features": cs[0]["row"]},
            "/predict",
            lambda body, cs: contract.predict_problem(body, cs[0], model),
        )
    if route == "predict_batch":
        return (
            lambda cs: {"instances": [c["row"] for c in cs]},
            "/predict_batch",
            lambda body, cs: contract.batch_problem(body, cs, model),
        )
    if route == "invocations":

        def split(cs: list[dict[str, Any]]) -> Any:
            rows = [c["row"] for c in cs]
            if tensor:
                return {"inputs": rows}
            return {"dataframe_split": {"columns": names, "data": [[r.get(n) for n in names] for r in rows]}}

        return split, "/invocations", lambda body, cs: contract.invocations_problem(body, cs)
    return (
        lambda cs: {"id": "loadtest", **contract.infer_request(model, cs)},
        f"/v2/models/{artifact.name}/infer",
        lambda body, cs: contract.infer_problem(body, cs, model),
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- one run at one rate -----------------------------------------------------------------------


@dataclass
class Step:
    """The figures of one run at one offered rate."""

    offered_rate: float
    duration: float
    requests: int
    achieved_rate: float
    latency_ms: dict[str, float | None]
    errors: dict[str, int]
    timeouts: int
    wrong_answers: int
    answers_checked: int
    first_wrong: str | None
    generator: dict[str, Any]
    timeline: list[Window] = field(default_factory=list)  # (t s, p50, p99, max ms) per window
    latencies: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        failed = sum(self.errors.values()) + self.timeouts
        return failed / self.requests if self.requests else 0.0

    @property
    def generator_limited(self) -> bool:
        return bool(self.generator["limited"])

    def figure(self, name: str) -> float | None:
        if name == "error_rate":
            return self.error_rate
        if name == "rate":
            return self.achieved_rate
        return self.latency_ms[name]

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "achieved_rate": round(self.achieved_rate, 2),
            "duration_s": self.duration,
            "requests": self.requests,
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "error_rate": round(self.error_rate, 6),
            "wrong_answers": self.wrong_answers,
            "answers_checked": self.answers_checked,
            "generator_limited": self.generator_limited,
            "generator": self.generator,
        }


def run_step(
    url: str,
    headers: dict[str, str],
    sent: Payloads,
    rate: float,
    duration: float,
    timeout: float,
    connections: int,
    progress: Callable[[int, int], None] | None = None,
) -> Step:
    target = loadgen.Target.parse(url)
    encoded = [loadgen.encode_request(target, "POST", sent.path, b, headers) for b in sent.recorded]
    extra = [loadgen.encode_request(target, "POST", sent.path, b, headers) for b in sent.extra]
    requests = Payloads(sent.path, encoded, sent.covers, extra, sent.verify)
    plan = loadgen.Plan(
        requests.body, rate, duration, timeout, connections, keep=lambda i: i % CHECK_EVERY == 0
    )
    outcome = loadgen.run(url, plan, progress)
    return summarize(outcome, plan, sent)


def summarize(outcome: loadgen.Outcome, plan: loadgen.Plan, sent: Payloads) -> Step:
    # served answers only: refusals (503s are often instant) would pull the percentiles down
    answered = [
        ((done - due) * 1000, due)
        for done, due, status in zip(outcome.done, outcome.due, outcome.status)
        if 200 <= status < 300
    ]
    latencies = sorted(ms for ms, _ in answered)
    errors: dict[str, int] = {}
    ok = 0
    last_ok = 0.0
    for status, done in zip(outcome.status, outcome.done):
        if 200 <= status < 300:
            ok, last_ok = ok + 1, max(last_ok, done)
        elif status == loadgen.NO_ANSWER:
            errors["no answer"] = errors.get("no answer", 0) + 1
        elif status != loadgen.TIMEOUT:
            errors[str(status)] = errors.get(str(status), 0) + 1
    timeouts = sum(1 for s in outcome.status if s == loadgen.TIMEOUT)
    wrong, checked, first = check_answers(outcome, sent)
    return Step(
        offered_rate=plan.rate,
        duration=plan.duration,
        requests=plan.total,
        achieved_rate=ok / max(plan.duration, last_ok),
        latency_ms={name: _quantile(latencies, q) for name, q in QUANTILES.items()},
        errors=errors,
        timeouts=timeouts,
        wrong_answers=wrong,
        answers_checked=checked,
        first_wrong=first,
        generator={
            "limited": outcome.generator_limited,
            "late_share": round(outcome.late_share, 4),
            "late_ms": loadgen.LATE_MS,
            "cpu_share": round(outcome.cpu_seconds / outcome.seconds, 3) if outcome.seconds else None,
            "connections": outcome.connections,
            "connection_errors": outcome.errors,
        },
        timeline=_timeline(answered, plan.duration),
        latencies=latencies,
    )


def check_answers(outcome: loadgen.Outcome, sent: Payloads) -> tuple[int, int, str | None]:
    """(wrong, checked, the first wrong one said plainly) over the kept answers that were 2xx."""
    wrong = checked = 0
    first = None
    for i, body in outcome.bodies.items():
        if not 200 <= outcome.status[i] < 300:
            continue
        checked += 1
        try:
            problem = sent.verify(json.loads(body), sent.cases(i))
        except ValueError:
            problem = contract.Problem(f"not JSON: {body[:100]!r}")
        if problem is not None:
            wrong += 1
            first = first or f"request {i} to {sent.path}: {problem.detail}"[:300]
    return wrong, checked, first


def _quantile(ordered: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)


def _timeline(answered: list[tuple[float, float]], duration: float) -> list[Window]:
    """Latency over time: (window start s, p50, p99, max) per window of the schedule."""
    width = max(0.1, duration / 60)
    windows: dict[int, list[float]] = {}
    for ms, due in answered:
        windows.setdefault(int(due / width), []).append(ms)
    rows = []
    for key in sorted(windows):
        values = sorted(windows[key])
        rows.append((key * width, _quantile(values, 0.5) or 0.0, _quantile(values, 0.99) or 0.0, values[-1]))
    return rows


# -- the gate --------------------------------------------------------------------------------


def gates(terms: list[Term], step: Step | None, search: FindMax | None = None) -> list[Gate]:
    """Every SLO term as a gate on `step`'s figures, and the gates always on: `error_rate<=0` when
    no `error_rate` term is given, and no wrong answer among those checked. With --find-max,
    `rate>=` applies to the highest rate found (`max_rate`), which must at least be the first
    step's when no `rate` term is given."""
    result = []
    for term in terms:
        value = step.figure(term.name) if step else None
        if term.name == "rate" and search is not None:
            value = search.max_rate
        result.append(Gate(term.text.replace(" ", ""), term.op, term.limit, value, term.unit))  # type: ignore[arg-type]
    if search is not None and not any(t.name == "rate" for t in terms):
        result.append(Gate("max_rate", ">=", search.steps[0].offered_rate, search.max_rate, " req/s"))
    if not any(t.name == "error_rate" for t in terms):
        result.append(Gate("error_rate", "<=", DEFAULT_ERROR_RATE, step.error_rate if step else None))
    result.append(Gate("wrong_answers", "<=", 0, step.wrong_answers if step else None))
    return result


def step_passes(terms: list[Term], step: Step) -> bool:
    """A find-max step: every term but `rate` met, the gates always on too, and the service kept up."""
    latency_terms = [t for t in terms if t.name != "rate"]
    kept_up = step.achieved_rate >= KEEPS_UP * step.offered_rate
    return kept_up and all(g.passed for g in gates(latency_terms, step))


@dataclass
class FindMax:
    """--find-max's steps in the order run, the highest rate that met the SLO, and why it stopped."""

    steps: list[Step]
    max_rate: float | None
    best: Step | None
    stopped: str


def find_max(run: Callable[[float], Step], terms: list[Term], start: float, ceiling: float) -> FindMax:
    """Double the rate until a step breaks the SLO, then bisect between the last good and the first
    bad rate BISECTIONS times. A step the generator could not send on time ends the search: beyond
    it, the figures would measure the generator, not the service."""
    steps: list[Step] = []
    best: Step | None = None
    low, high, rate = 0.0, 0.0, start
    while not high:
        steps.append(run(rate))
        if steps[-1].generator_limited:
            return FindMax(steps, low or None, best, "generator_limited")
        if not step_passes(terms, steps[-1]):
            high = rate
        elif rate * 2 > ceiling:
            return FindMax(steps, rate, steps[-1], "ceiling")
        else:
            best, low, rate = steps[-1], rate, rate * 2
    if best is None:
        return FindMax(steps, None, None, "slo_broken")  # even the first rate breaks it
    for _ in range(BISECTIONS):
        rate = round((low + high) / 2, 1)
        steps.append(run(rate))
        if steps[-1].generator_limited:
            return FindMax(steps, low, best, "generator_limited")
        if step_passes(terms, steps[-1]):
            best, low = steps[-1], rate
        else:
            high = rate
    return FindMax(steps, low, best, "slo_broken")


# -- the service under load ------------------------------------------------------------------


def start_service(artifact: Artifact, sent: Payloads, timeout: float) -> tuple[Any, float]:
    """Start the built artifact on loopback, as smoke-test does; (the service, its cold start: the
    seconds from the process start to the first correct answer). The caller stops the service."""
    from deployctl.process import free_port
    from deployctl.targets import get as get_target
    from deployctl.targets.base import Target

    target = get_target(artifact.target)
    if not target.serves_http or type(target).smoke is not Target.smoke:  # its own smoke: not HTTP
        raise UsageError(
            f"{artifact.path} ({artifact.target}) does not serve HTTP requests: there is nothing to load.",
            "Load an HTTP target (flask, fastapi, docker, k8s, lambda, gcf) or a deployed --url.",
        )
    started = time.monotonic()
    service = target.start(artifact, free_port())
    try:
        return service, first_correct_answer(service, sent, started, timeout)
    except BaseException:
        service.stop()
        raise


def first_correct_answer(service: Any, sent: Payloads, started: float, timeout: float) -> float:
    """Ask the first recorded row until the service answers 200; that answer must be the recorded
    one. The seconds since `started`."""
    from deployctl.process import request

    while time.monotonic() - started < timeout:
        if not service.alive():
            raise LoadTestFailed(
                "The service exited before it answered. Its last log lines:\n" + service.logs(),
                "Fix the error above, rebuild, then run the load test again.",
            )
        try:
            status, answer = request(service.base_url, "POST", sent.path, sent.recorded[0], timeout=2.0)
        except contract.NO_ANSWER:
            status, answer = 0, b""
        if status == 200:
            seconds = time.monotonic() - started
            try:
                problem = sent.verify(json.loads(answer), sent.covers[0])
            except ValueError:
                problem = contract.Problem("not JSON")
            if problem is not None:
                raise LoadTestFailed(
                    f"The started service's first answer is wrong: {problem.detail}",
                    "It does not serve the model as recorded: `deployctl smoke-test` says more.",
                )
            return seconds
        time.sleep(0.02)
    raise LoadTestFailed(
        f"The started service gave no 200 answer to {sent.path} within {timeout:g} s. "
        f"Its last log lines:\n{service.logs()}",
        "A slow model load needs a longer --start-timeout; otherwise fix the error above.",
    )


# -- the whole command -----------------------------------------------------------------------


@dataclass
class Options:
    """What `deployctl loadtest` was asked (already parsed and checked by the CLI)."""

    url: str | None
    headers: dict[str, str]
    route: str
    batch_size: int
    data: list[Any] | None
    rate: float | None
    duration: float
    find_max: bool
    terms: list[Term]
    timeout: float
    connections: int
    start_timeout: float
    max_rate: float


@dataclass
class LoadTest:
    """The outcome: the step reported (the run, or find-max's highest passing step), the gates."""

    options: Options
    step: Step | None
    gates: list[Gate]
    cold_start_s: float | None = None
    search: FindMax | None = None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def generator_limited(self) -> bool:
        steps = self.search.steps if self.search else [self.step] if self.step else []
        return any(s.generator_limited for s in steps)


def check_options(options: Options) -> None:
    if options.find_max and not options.terms:
        raise UsageError("--find-max needs an SLO to find the highest rate for.", "e.g. --slo 'p99<=50ms'.")
    if not options.find_max and options.rate is None:
        raise UsageError(
            "Give --rate R (requests per second, with --duration S), or --find-max with an --slo.",
            "e.g. deployctl loadtest build/api --rate 200 --duration 30 --slo 'p99<=50ms'.",
        )
    given = (("--rate", options.rate), ("--duration", options.duration), ("--timeout", options.timeout))
    for name, value in given:
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be more than 0, got {value:g}.")
    if options.route not in ROUTES:
        raise UsageError(f"--route {options.route} is not one of {', '.join(ROUTES)}.")


def run(
    artifact: Artifact,
    options: Options,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> LoadTest:
    """Load the service (started here, or at --url) and judge the SLO. Raises EndpointUnreachable
    when --url does not answer at all, UsageError when it serves another model or version,
    LoadTestFailed when it is unhealthy or the started service never answers right."""
    sent = payloads(artifact, options.route, options.batch_size, options.data)
    if options.url is not None:
        check_endpoint(artifact, options.url, options.headers, options.timeout)
        return _load(options.url, artifact, options, sent, None, progress, log)
    service, cold = start_service(artifact, sent, options.start_timeout)
    try:
        if log:
            log(f"Started {artifact.path} ({artifact.target}): first correct answer after {cold:.2f} s")
        return _load(service.base_url, artifact, options, sent, cold, progress, log)
    finally:
        service.stop()


def check_endpoint(artifact: Artifact, url: str, headers: dict[str, str], timeout: float) -> None:
    """--url must serve this artifact's model version, healthy, before any load is sent. Another
    model or version there is a usage error (exit 2, as `compare --candidate-url`): the URL names
    another deployment, and exit 1 would read as "this version missed its SLO". An unhealthy or
    refusing endpoint is this deployment failing (exit 1)."""
    client = contract.Client(url, headers, timeout)
    problem, _ = contract.health_problem(artifact.model, client)
    if problem is None:
        return
    if problem.elsewhere:
        raise UsageError(
            f"{url} serves another deployment: {problem.detail}. No load was sent.",
            "Point --url at the deployment of this artifact, or load the artifact of the version "
            "deployed there (without --url, the artifact is started here).",
        )
    raise LoadTestFailed(
        f"{url}: {problem.detail}. No load was sent.",
        "Check that --url serves this artifact and is healthy (smoke-test --url says more).",
    )


def _load(
    url: str,
    artifact: Artifact,
    options: Options,
    sent: Payloads,
    cold: float | None,
    progress: Callable[[str, int, int], None] | None,
    log: Callable[[str], None] | None,
) -> LoadTest:
    def at(rate: float) -> Step:
        label = f"{rate:g} req/s for {options.duration:g} s"
        report = (lambda done, total: progress(label, done, total)) if progress else None
        step = run_step(
            url, options.headers, sent, rate, options.duration, options.timeout, options.connections, report
        )
        if log:
            log(describe_step(step))
        return step

    if not options.find_max:
        assert options.rate is not None
        step = at(options.rate)
        return LoadTest(options, step, gates(options.terms, step), cold)
    search = find_max(at, options.terms, options.rate or FIND_MAX_START, options.max_rate)
    step = search.best or search.steps[0]  # no rate met the SLO: the first step's figures show how far
    return LoadTest(options, step, gates(options.terms, step, search), cold, search)


def describe_step(step: Step) -> str:
    """One line per step, for the progress log."""
    latency = step.latency_ms
    p = " ".join(f"{k} {v:g}ms" for k, v in latency.items() if v is not None and k in ("p50", "p99", "max"))
    late = " (generator lagged)" if step.generator_limited else ""
    return (
        f"{step.offered_rate:g} req/s offered, {step.achieved_rate:.0f} answered/s: {p}, "
        f"error rate {step.error_rate:.2%}, "
        f"{step.wrong_answers} wrong of {step.answers_checked} checked{late}"
    )


def failure(result: LoadTest) -> LoadTestFailed:
    """The failed terms with their figures; the generator named when it, not the service, lagged."""
    failed = [g for g in result.gates if not g.passed]
    said = "; ".join(g.describe() for g in failed) or "no rate met the SLO"
    if result.search is not None and result.search.max_rate is None:
        first = result.search.steps[0]
        said = f"no rate met the SLO, not even {first.offered_rate:g} req/s ({describe_step(first)}); " + said
    if result.step and result.step.first_wrong:
        said += f". First wrong answer: {result.step.first_wrong}"
    if result.generator_limited:
        return LoadTestFailed(
            f"SLO not met: {said}. The load generator fell behind its schedule (its own lateness is in "
            "the figures): the service may not be at fault.",
            "Run the load test from a machine with a free core, or at a lower --rate.",
        )
    return LoadTestFailed(f"SLO not met: {said}.", "Fix the service's speed or errors, or relax the SLO.")
