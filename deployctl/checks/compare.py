"""compare: a candidate artifact against the champion it would replace, row by row.

Both sides answer the same contract: each chunk of rows goes to both through `/predict_batch`,
over kept-alive connections, several chunks in flight. A chunk a side refuses (4xx) is asked again
row by row, so that each refused row is counted, with its error, for that side only: a batch is
all or nothing in the runtime. `Tally` folds the answers into the figures of the report (label
agreement, the flip matrix, per numeric output the absolute differences, latency per side) in
bounded memory but for one float per row and output; `Report` turns them into gates and into
the JSON, JUnit and HTML documents.
"""

from __future__ import annotations

import hashlib
import heapq
import http.client
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployctl.checks.contract import NO_ANSWER, Client
from deployctl.checks.gates import Gate
from deployctl.errors import DeployctlError, EndpointUnreachable, UsageError
from deployctl.manifest import Artifact

SIDES = ("candidate", "champion")
WORST_ROWS = 20  # the rows that disagree most, named in the report
SCATTER_POINTS = 5000  # points kept per output for the plots (the first rows compared)


@dataclass(frozen=True)
class Limits:
    """The gates' limits; the defaults are the documented ones (README, `deployctl compare --help`)."""

    min_agreement: float = 0.99
    max_diff: float = 0.05
    max_latency_ratio: float = 1.5
    max_errors: int = 0


class CompareFailed(DeployctlError):
    """A gate failed: the candidate does not answer like the champion (or is slower)."""


class KeepAliveTransport:
    """HTTP on one kept-alive connection per thread: a comparison of many rows must not spend its
    time (and the services' sockets) opening a connection per request."""

    def __init__(self, base_url: str) -> None:
        self.url = urlsplit(base_url)
        self.local = threading.local()

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        sent = {"content-type": "application/json", **headers}
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more
            conn = self._connection(timeout)
            try:
                conn.request(method, self.url.path.rstrip("/") + path, body=data, headers=sent)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            conn = kind(self.url.hostname or "", self.url.port, timeout=timeout)
            self.local.conn = conn
        return conn


@dataclass
class Side:
    """One service of the comparison: where it is, what /health said, how it answered."""

    role: str  # candidate | champion
    where: str  # a URL, or an artifact dir started here
    client: Client
    health: dict[str, Any] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # one per /predict_batch of a chunk
    errors: Counter[str] = field(default_factory=Counter)  # error -> rows refused with it

    def ask(self, rows: list[Any]) -> tuple[int, Any, float]:
        try:
            return self.client.call("POST", "/predict_batch", {"instances": rows})
        except NO_ANSWER as exc:
            raise unreachable(self, exc) from None

    def answers(self, rows: list[Any], classifier: bool, timed: bool = True) -> list[Answer | str]:
        """One Answer per row, or the error the side gave for that row. Only the chunks' requests
        are timed: the row-by-row retries of a refused chunk are not the service's usual load."""
        status, body, ms = self.ask(rows)
        if timed:
            self.latencies_ms.append(ms)  # list.append is atomic: the workers share the list
        if status == 200:
            return parse_batch(body, len(rows), classifier)
        if 400 <= status < 500 and len(rows) > 1:  # all or nothing: find the rows it refuses
            return [self.answers([row], classifier, timed=False)[0] for row in rows]
        return [error_text(status, body)] * len(rows)


def unreachable(side: Side, exc: BaseException) -> EndpointUnreachable:
    return EndpointUnreachable(
        f"The {side.role} at {side.where} did not answer ({type(exc).__name__}: {exc}).",
        "Check that the service runs and the URL is right; --timeout gives a slow one longer.",
    )


def error_text(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"HTTP {status}: {body['error'][:200]}"
    return f"HTTP {status}: {str(body)[:200]}"


@dataclass(frozen=True)
class Answer:
    """One row's answer: its label (classifiers) and its numeric outputs by name."""

    label: Any
    outputs: dict[str, float]


def parse_batch(body: Any, rows: int, classifier: bool) -> list[Answer | str]:
    """The rows' answers in a /predict_batch answer; an answer off the contract is an error each."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    probabilities = body.get("probabilities") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        return [f"not a /predict_batch answer for {rows} rows: {str(body)[:120]}"] * rows
    if not isinstance(probabilities, list) or len(probabilities) != rows:
        probabilities = [None] * rows
    return [answer(p, q, classifier) for p, q in zip(predictions, probabilities)]


def answer(prediction: Any, probability: Any, classifier: bool) -> Answer:
    outputs: dict[str, float] = {}
    if classifier:
        label = prediction if _scalar(prediction) else json.dumps(prediction, sort_keys=True)
    else:
        label = None
        _numbers("prediction", prediction, outputs)
    if isinstance(probability, dict):
        for cls, p in probability.items():
            _numbers(f"probability[{cls}]", p, outputs)
    elif probability is not None:
        _numbers("probability", probability, outputs)
    return Answer(label, outputs)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _numbers(name: str, value: Any, into: dict[str, float]) -> None:
    """Every number in `value` (one output, a list of outputs, an object of outputs) by name."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        into[name] = float(value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _numbers(f"{name}[{i}]", item, into)
    elif isinstance(value, dict):
        for key, item in value.items():
            _numbers(f"{name}.{key}", item, into)


@dataclass
class Tally:
    """The figures of the comparison, folded one chunk at a time."""

    classifier: bool
    max_diff: float  # a regressor's row agrees when every output is within it
    rows: int = 0
    compared: int = 0
    agreed: int = 0
    pairs: Counter[tuple[Any, Any]] = field(default_factory=Counter)  # (champion, candidate) labels
    diffs: dict[str, list[float]] = field(default_factory=dict)  # output -> |candidate - champion|
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (champion, candidate)
    missing_outputs: Counter[str] = field(default_factory=Counter)  # given by one side only
    candidate_only_errors: int = 0  # refused by the candidate, answered by the champion
    worst: list[tuple[float, float, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, first: int, candidate: list[Answer | str], champion: list[Answer | str]) -> None:
        for offset, (mine, theirs) in enumerate(zip(candidate, champion)):
            self.rows += 1
            if isinstance(mine, str) and not isinstance(theirs, str):
                self.candidate_only_errors += 1
            if isinstance(mine, Answer) and isinstance(theirs, Answer):
                self._compare(first + offset, mine, theirs)

    def _compare(self, index: int, mine: Answer, theirs: Answer) -> None:
        self.compared += 1
        largest = 0.0
        for name in theirs.outputs.keys() | mine.outputs.keys():
            if name not in theirs.outputs or name not in mine.outputs:
                self.missing_outputs[name] += 1
                largest = math.inf
                continue
            diff = abs(mine.outputs[name] - theirs.outputs[name])
            largest = max(largest, diff)
            self.diffs.setdefault(name, []).append(diff)
            points = self.points.setdefault(name, [])
            if len(points) < SCATTER_POINTS:
                points.append((theirs.outputs[name], mine.outputs[name]))
        flipped = self.classifier and mine.label != theirs.label
        if self.classifier:
            self.pairs[(theirs.label, mine.label)] += 1
            self.agreed += not flipped
        else:
            self.agreed += largest <= self.max_diff
        if flipped or largest > 0:
            self._remember(index, float(flipped), largest, mine, theirs)

    def _remember(self, index: int, flipped: float, largest: float, mine: Answer, theirs: Answer) -> None:
        """Keep the WORST_ROWS rows that disagree most: a flipped label first, then the largest diff."""
        row = {
            "index": index,
            "flipped": bool(flipped),
            "max_abs_diff": largest if math.isfinite(largest) else None,
            "champion": {"label": theirs.label, "outputs": theirs.outputs},
            "candidate": {"label": mine.label, "outputs": mine.outputs},
        }
        item = (flipped, largest, -index, row)
        if len(self.worst) < WORST_ROWS:
            heapq.heappush(self.worst, item)
        elif item[:3] > self.worst[0][:3]:
            heapq.heapreplace(self.worst, item)


@dataclass
class Comparison:
    """Everything measured: the two sides, the tally, and how long it took."""

    candidate: Side
    champion: Side
    tally: Tally
    seconds: float


def run(
    candidate: Side,
    champion: Side,
    chunks: Iterable[list[Any]],
    classifier: bool,
    limits: Limits,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Send every chunk to both sides, `concurrency` chunks in flight, and tally the answers in order."""
    tally = Tally(classifier, limits.max_diff)
    started = time.monotonic()

    def both(index: int, rows: list[Any]) -> tuple[list[Answer | str], list[Answer | str]]:
        first, second = (candidate, champion) if index % 2 else (champion, candidate)  # neither always first
        answers = {first.role: first.answers(rows, classifier), second.role: second.answers(rows, classifier)}
        return answers["candidate"], answers["champion"]

    with ThreadPoolExecutor(concurrency, thread_name_prefix="compare") as pool:
        pending: deque[Pending] = deque()
        first_row = 0
        for index, rows in enumerate(chunks):
            pending.append((first_row, pool.submit(both, index, rows)))
            first_row += len(rows)
            if len(pending) >= 2 * concurrency:  # bounded: a file is never read far ahead
                _settle(pending.popleft(), tally, candidate, champion, progress)
        while pending:
            _settle(pending.popleft(), tally, candidate, champion, progress)
    return Comparison(candidate, champion, tally, time.monotonic() - started)


Pending = tuple[int, "Future[tuple[list[Answer | str], list[Answer | str]]]"]


def _settle(
    item: Pending, tally: Tally, candidate: Side, champion: Side, progress: Callable[[int], None] | None
) -> None:
    """Fold one chunk's answers in (in the calling thread: the tally is not shared)."""
    first, future = item
    mine, theirs = future.result()
    tally.add(first, mine, theirs)
    candidate.errors.update(a for a in mine if isinstance(a, str))
    champion.errors.update(a for a in theirs if isinstance(a, str))
    if progress is not None:
        progress(len(mine))


def check_health(side: Side, pinned_version: str | None = None) -> None:
    """/health must answer 200 (else the side is unreachable or broken); for a candidate URL it
    must name the version the artifact pins: otherwise another model would be compared."""
    try:
        status, body, _ = side.client.call("GET", "/health")
    except NO_ANSWER as exc:
        raise unreachable(side, exc) from None
    if status != 200 or not isinstance(body, dict):
        raise EndpointUnreachable(
            f"The {side.role} at {side.where} answers /health with HTTP {status}: {str(body)[:200]}",
            "Compare against a healthy service of the deployctl contract.",
        )
    side.health = {"model_name": body.get("model_name"), "model_version": body.get("model_version")}
    version = body.get("model_version")
    if pinned_version is not None and str(version) != pinned_version:
        # a usage mistake (exit 2), not a failed gate: exit 1 would read as "the candidate is worse"
        raise UsageError(
            f"The candidate at {side.where} serves model version {version}, but the artifact pins "
            f"version {pinned_version}.",
            "Point --candidate-url at the deployment of this artifact (a canary, say), or leave it "
            "out to start the artifact here.",
        )


@contextmanager
def sides(request: Request) -> Iterator[tuple[Side, Side]]:
    """Both sides, ready: a URL is checked with /health, an artifact is started here (and stopped)."""
    from deployctl.checks.smoke import started

    with ExitStack() as stack:

        def side(role: str, where: str | Artifact) -> Side:
            if isinstance(where, Artifact):
                url = stack.enter_context(started(where, max(request.timeout, 120.0)))
                return Side(role, str(where.path), Client(url, {}, 60.0, KeepAliveTransport(url)))
            transport = KeepAliveTransport(where)
            return Side(role, where, Client(where, request.headers, request.timeout, transport))

        candidate = request.candidate
        mine = side("candidate", request.candidate_url or candidate)
        theirs = side("champion", request.champion)
        check_health(mine, str(candidate.model["version"]) if request.candidate_url else None)
        check_health(theirs)
        yield mine, theirs


# -- the report ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def gates(comparison: Comparison, limits: Limits) -> list[Gate]:
    tally = comparison.tally
    agreement = tally.agreed / tally.compared if tally.compared else None
    largest = max((max(d) for d in tally.diffs.values() if d), default=0.0 if tally.compared else None)
    if tally.missing_outputs:
        largest = math.inf  # an output one side gives and the other does not: no difference holds
    mine = percentile(comparison.candidate.latencies_ms, 99)
    theirs = percentile(comparison.champion.latencies_ms, 99)
    ratio = mine / theirs if mine is not None and theirs else None
    return [
        Gate("agreement", ">=", limits.min_agreement, agreement),
        Gate("max_abs_diff", "<=", limits.max_diff, largest),
        Gate("latency_p99_ratio", "<=", limits.max_latency_ratio, ratio),
        Gate("candidate_errors", "<=", limits.max_errors, tally.candidate_only_errors),
    ]


def document(comparison: Comparison, limits: Limits, candidate: Artifact) -> dict[str, Any]:
    """The JSON report (`--json`, `promote --report`), with a checksum of its own content."""
    tally = comparison.tally
    gate_list = gates(comparison, limits)
    model = candidate.model
    report: dict[str, Any] = {
        "tool": "deployctl compare",
        "passed": all(g.passed for g in gate_list),
        "model": model["name"],
        "version": str(model["version"]),
        "model_uri": model["uri"],
        "digest": candidate.digest,
        "target": candidate.target,
        "candidate": {"where": comparison.candidate.where, **comparison.candidate.health},
        "champion": {"where": comparison.champion.where, **comparison.champion.health},
        "rows": tally.rows,
        "compared": tally.compared,
        "agreement": tally.agreed / tally.compared if tally.compared else None,
        "flips": [
            {"champion": a, "candidate": b, "count": n} for (a, b), n in tally.pairs.most_common() if a != b
        ],
        "per_class": per_class(tally),
        "outputs": {name: output_figures(diffs) for name, diffs in sorted(tally.diffs.items())},
        "missing_outputs": dict(tally.missing_outputs),
        "errors": errors(comparison),
        "latency": latency(comparison),
        "gates": [g.as_dict() for g in gate_list],
        "disagreements": [item[3] for item in sorted(tally.worst, reverse=True)],
        "seconds": round(comparison.seconds, 3),
        "rows_per_second": round(tally.rows / comparison.seconds, 1) if comparison.seconds else None,
    }
    report["checksum"] = checksum(report)
    return report


def checksum(report: dict[str, Any]) -> str:
    """sha256 of the report without its checksum: an edit of the file shows (not a signature: whoever
    edits it can recompute it; promote also recomputes every gate from its limit and value)."""
    body = {k: v for k, v in report.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def per_class(tally: Tally) -> list[dict[str, Any]]:
    """Agreement per champion label."""
    rows: Counter[Any] = Counter()
    agreed: Counter[Any] = Counter()
    for (theirs, mine), n in tally.pairs.items():
        rows[theirs] += n
        agreed[theirs] += n if theirs == mine else 0
    return [{"label": label, "rows": n, "agreement": agreed[label] / n} for label, n in rows.most_common()]


def output_figures(diffs: list[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(diffs, dtype=float)
    return {
        "max_abs_diff": float(values.max()),
        "p99_abs_diff": float(np.percentile(values, 99)),
        "mean_abs_diff": float(values.mean()),
    }


def errors(comparison: Comparison) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for side in (comparison.candidate, comparison.champion):
        result[side.role] = sum(side.errors.values())
    result["candidate_only"] = comparison.tally.candidate_only_errors
    result["messages"] = {
        side.role: [{"error": e, "rows": n} for e, n in side.errors.most_common(10)]
        for side in (comparison.candidate, comparison.champion)
    }
    return result


def latency(comparison: Comparison) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for side in (comparison.candidate, comparison.champion):
        p50, p99 = percentile(side.latencies_ms, 50), percentile(side.latencies_ms, 99)
        result[side.role] = {"p50_ms": p50, "p99_ms": p99, "requests": len(side.latencies_ms)}
    mine, theirs = result["candidate"]["p99_ms"], result["champion"]["p99_ms"]
    result["p99_ratio"] = mine / theirs if mine is not None and theirs else None
    return result


# -- the HTML page ------------------------------------------------------------------------------


def html_page(comparison: Comparison, report: dict[str, Any]) -> str:
    """The self-contained page: verdict, gates, figures, and the plots a person looks at first."""
    from deployctl.checks.html import HtmlReport

    tally = comparison.tally
    page = HtmlReport(
        f"compare {report['model']} version {report['version']}",
        f"candidate {comparison.candidate.where} against champion {comparison.champion.where} "
        f"(model {comparison.champion.health.get('model_name')} version "
        f"{comparison.champion.health.get('model_version')}); {tally.rows} rows, {tally.compared} compared",
    )
    gate_list = gates(comparison, _limits_of(report))
    failed = [g.name for g in gate_list if not g.passed]
    page.verdict(not failed, f"failed: {', '.join(failed)}" if failed else "every gate passed")
    page.gates(gate_list)
    outputs = report["outputs"]
    page.table(
        "Numeric outputs: |candidate - champion|",
        ["output", "max", "p99", "mean"],
        [(n, f["max_abs_diff"], f["p99_abs_diff"], f["mean_abs_diff"]) for n, f in outputs.items()],
    )
    lat = report["latency"]
    page.table(
        "Latency per /predict_batch request (ms)",
        ["side", "requests", "p50", "p99"],
        [(s, lat[s]["requests"], _ms(lat[s]["p50_ms"]), _ms(lat[s]["p99_ms"])) for s in SIDES],
    )
    errs = report["errors"]
    page.table("Rows refused", ["side", "rows"], [(s, errs[s]) for s in SIDES])
    main = _main_output(tally)
    if main is not None:
        page.figure(f"{main}: candidate against champion", scatter(tally, main))
        page.figure("Differences |candidate - champion|", histogram(tally))
    if tally.pairs:
        page.figure("Labels: champion -> candidate (counts)", flip_matrix(tally))
    if comparison.candidate.latencies_ms and comparison.champion.latencies_ms:
        page.figure("Latency distributions", latency_plot(comparison))
    page.table(
        "Rows that disagree most (index in the input)",
        ["row", "champion", "candidate", "max |diff|"],
        [
            (d["index"], _said(d["champion"]), _said(d["candidate"]), d["max_abs_diff"])
            for d in report["disagreements"]
        ],
    )
    return page.render()


def _limits_of(report: dict[str, Any]) -> Limits:
    limit = {g["name"]: g["limit"] for g in report["gates"]}
    return Limits(
        limit["agreement"], limit["max_abs_diff"], limit["latency_p99_ratio"], int(limit["candidate_errors"])
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _said(side: dict[str, Any]) -> str:
    outputs = ", ".join(f"{k} {v:.4g}" for k, v in list(side["outputs"].items())[:3])
    label = "" if side["label"] is None else f"{side['label']}"
    return "; ".join(p for p in (label, outputs) if p)


def _main_output(tally: Tally) -> str | None:
    names = sorted(tally.points)
    for preferred in ("probability", "prediction"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def scatter(tally: Tally, name: str) -> Any:
    from deployctl.checks.html import new_figure

    figure, axes = new_figure(6.0, 5.0)
    champion, candidate = zip(*tally.points[name])
    low, high = min(*champion, *candidate), max(*champion, *candidate)
    axes.plot([low, high], [low, high], color="#999999", linewidth=1, label="same answer")
    axes.scatter(champion, candidate, s=8, alpha=0.6, color="#1f5fa8", label=f"{len(champion)} rows")
    axes.set_xlabel(f"champion {name}")
    axes.set_ylabel(f"candidate {name}")
    axes.legend(loc="upper left")
    return figure


def histogram(tally: Tally) -> Any:
    from deployctl.checks.html import new_figure

    figure, axes = new_figure()
    for name in sorted(tally.diffs)[:6]:
        axes.hist(tally.diffs[name], bins=50, alpha=0.6, label=name)
    axes.set_xlabel("|candidate - champion|")
    axes.set_ylabel("rows")
    axes.set_yscale("symlog")
    axes.legend()
    return figure


def flip_matrix(tally: Tally) -> Any:
    from deployctl.checks.html import new_figure

    labels = sorted({label for pair in tally.pairs for label in pair}, key=str)
    where = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for (theirs, mine), n in tally.pairs.items():
        counts[where[theirs]][where[mine]] = n
    size = min(3.0 + 0.6 * len(labels), 10.0)
    figure, axes = new_figure(size + 1.5, size)
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="rows")
    axes.set_xticks(range(len(labels)), [str(label) for label in labels], rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), [str(label) for label in labels])
    axes.set_xlabel("candidate label")
    axes.set_ylabel("champion label")
    high = max(max(row) for row in counts) or 1
    if len(labels) <= 12:
        for i, row in enumerate(counts):
            for j, n in enumerate(row):
                axes.text(j, i, str(n), ha="center", va="center", color="white" if n > high / 2 else "black")
    return figure


def latency_plot(comparison: Comparison) -> Any:
    from deployctl.checks.html import new_figure

    figure, axes = new_figure()
    for side, color in ((comparison.champion, "#777777"), (comparison.candidate, "#1f5fa8")):
        axes.hist(side.latencies_ms, bins=40, alpha=0.6, color=color, label=f"{side.role}")
    axes.set_xlabel("ms per /predict_batch request")
    axes.set_ylabel("requests")
    axes.legend()
    return figure


# -- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What `deployctl compare` was asked, parsed."""

    candidate: Artifact
    champion: str | Artifact  # a URL, or an artifact started here
    candidate_url: str | None
    data: list[Path]
    traffic: list[Path]
    headers: dict[str, str]
    limits: Limits
    batch_size: int = 500
    concurrency: int = 4
    timeout: float = 30.0


def request_of(
    candidate: Path,
    against: str,
    candidate_url: str | None,
    data: list[Path],
    traffic: list[Path],
    raw_headers: list[str],
    limits: Limits,
    batch_size: int,
    concurrency: int,
    timeout: float,
) -> Request:
    """Check every option before anything starts: a usage mistake is exit 2, not a half-run."""
    from deployctl.checks import rows
    from deployctl.checks.smoke import check_url, parse_headers

    if not 0 <= limits.min_agreement <= 1:
        raise UsageError(f"--min-agreement is a fraction from 0 to 1, got {limits.min_agreement:g}.")
    for name, value in (("--max-diff", limits.max_diff), ("--max-latency-ratio", limits.max_latency_ratio)):
        if not value >= 0 or math.isinf(value):
            raise UsageError(f"{name} must be a number >= 0, got {value:g}.")
    if batch_size < 1 or concurrency < 1 or timeout <= 0 or limits.max_errors < 0:
        raise UsageError("--batch-size, --concurrency, --timeout and --max-errors must be positive.")
    for path in data:
        if not path.is_file():
            raise UsageError(f"{path} does not exist or is not a file.", "Give the path of a data file.")
    for path in traffic:
        rows.traffic_files(path)
    for path in data:
        rows.check_format(path)
    headers = parse_headers(raw_headers)
    urls = [u for u in (candidate_url, against) if u and u.startswith(("http://", "https://"))]
    if headers and not urls:
        raise UsageError("--header applies to a URL side only.", "Give --against URL or --candidate-url URL.")
    champion: str | Artifact = check_url(against) if against in urls else Artifact.open(Path(against))
    return Request(
        Artifact.open(candidate),
        champion,
        check_url(candidate_url) if candidate_url else None,
        data,
        traffic,
        headers,
        limits,
        batch_size,
        concurrency,
        timeout,
    )


def known_rows(request: Request) -> int | None:
    """How many rows will be compared, when it is known without reading the files."""
    return None if request.data or request.traffic else len(request.candidate.smoke_cases)


def chunks_of(request: Request) -> Iterator[list[Any]]:
    """The rows to compare, in chunks: every --data and --traffic file in turn, else the rows the
    candidate recorded at generate."""
    from deployctl.checks.rows import read_rows, read_traffic

    columns = list(request.candidate.model["columns"])
    size = request.batch_size
    if not request.data and not request.traffic:
        rows = [case["row"] for case in request.candidate.smoke_cases]
        yield from (rows[i : i + size] for i in range(0, len(rows), size))
        return
    for path in request.data:
        yield from read_rows(path, columns, size)
    for path in request.traffic:
        yield from read_traffic(path, size)


def execute(
    request: Request, progress: Callable[[int], None] | None = None
) -> tuple[Comparison, dict[str, Any]]:
    """Start or reach both sides, compare every row, and make the report."""
    classifier = request.candidate.model["task"] != "regression"
    with sides(request) as (mine, theirs):
        comparison = run(
            mine, theirs, chunks_of(request), classifier, request.limits, request.concurrency, progress
        )
    return comparison, document(comparison, request.limits, request.candidate)


def write_reports(
    comparison: Comparison,
    report: dict[str, Any],
    request: Request,
    junit: Path | None,
    html: Path | None,
) -> dict[str, str]:
    """The JSON text (for stdout), and the JUnit and HTML files when asked; header values redacted
    everywhere (an endpoint's error may echo them)."""
    from datetime import datetime, timezone

    from deployctl.checks.report import Redactor, junit_xml, write

    redact = Redactor(request.headers.values())
    texts = {"json": redact(json.dumps(report, indent=2, default=str))}
    if junit is not None:
        checks = [redact.check(g.as_check()) for g in gates(comparison, request.limits)]
        properties = {
            "target": report["target"],
            "model": report["model"],
            "version": report["version"],
            "digest": report["digest"],
            "champion": redact(comparison.champion.where),
            "rows": report["rows"],
        }
        suite = f"compare {report['model']} version {report['version']}"
        began = datetime.now(timezone.utc)
        xml = junit_xml(checks, properties, suite, comparison.seconds, started=began, tool="compare")
        texts["junit"] = xml
        write(junit, texts["junit"])
    if html is not None:
        texts["html"] = redact(html_page(comparison, report))
        write(html, texts["html"])
    return texts
