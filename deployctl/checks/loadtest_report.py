"""loadtest's reports: the JSON document, the JUnit test cases (one per SLO gate) and the HTML page
with its plots (latency over time, the latency distribution, and with --find-max the percentiles
against the offered rate)."""

from __future__ import annotations

from typing import Any

from deployctl.checks.contract import Check
from deployctl.checks.html import HtmlReport, new_figure
from deployctl.checks.loadtest import LATENCY_OF, LoadTest, Step

PERCENTILES = ("p50", "p90", "p99", "p999", "max")


def json_report(result: LoadTest, properties: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What `loadtest --json` prints: the figures of the step reported, the gates, the verdict."""
    step = result.step
    document: dict[str, Any] = {
        **properties,
        "route": result.options.route,
        "passed": result.passed,
        "generator_limited": result.generator_limited,
        **(step.as_dict() if step else {}),
        "cold_start_s": None if result.cold_start_s is None else round(result.cold_start_s, 3),
        "slo": [
            {
                "term": g.name,
                "op": g.op,
                "limit": g.limit,
                "value": g.value,
                "unit": g.unit.strip(),
                "passed": g.passed,
            }
            for g in result.gates
        ],
        "seconds": round(seconds, 3),
    }
    if step and step.first_wrong:
        document["first_wrong_answer"] = step.first_wrong
    if result.search is not None:
        document["max_rate"] = result.search.max_rate
        document["stopped"] = result.search.stopped
        document["steps"] = [{**s.as_dict(), "passed": _passed(result, s)} for s in result.search.steps]
    return document


def _passed(result: LoadTest, step: Step) -> bool:
    from deployctl.checks.loadtest import step_passes

    return step_passes(result.options.terms, step)


def checks(result: LoadTest) -> list[Check]:
    """The gates as test cases, and the generator's own schedule as one that never fails the run
    (a lagging generator is reported, not blamed on the service)."""
    found = [g.as_check() for g in result.gates]
    steps = result.search.steps if result.search else [result.step] if result.step else []
    late = max((s.generator["late_share"] for s in steps), default=0.0)
    found.append(
        Check(
            "generator kept its schedule",
            True,
            f"generator_limited {str(result.generator_limited).lower()}: at most {late:.2%} of the "
            f"requests sent over {steps[0].generator['late_ms'] if steps else 0:g} ms late",
        )
    )
    return found


def html_report(result: LoadTest, properties: dict[str, Any]) -> str:
    step = result.step
    title = f"loadtest: {properties.get('url') or properties.get('artifact')}"
    page = HtmlReport(
        title,
        f"{properties.get('model')} version {properties.get('version')} ({properties.get('target')}), "
        f"route {result.options.route}",
    )
    failed = [g for g in result.gates if not g.passed]
    page.verdict(result.passed, "SLO met" if result.passed else f"SLO not met: {len(failed)} term(s) failed")
    if result.generator_limited:
        page.verdict(False, "The load generator fell behind its schedule: the service may not be at fault.")
    page.gates(result.gates, "SLO")
    if step is not None:
        page.table("Figures", ["figure", "value"], _figures(result, step))
        page.figure("Latency over time", _over_time(step))
        page.figure("Latency distribution", _distribution(step))
    if result.search is not None:
        page.table(
            "Find-max steps",
            ["offered req/s", "achieved req/s", *[f"{p} ms" for p in PERCENTILES], "error rate", "passed"],
            [
                (
                    s.offered_rate,
                    round(s.achieved_rate, 1),
                    *[s.latency_ms[p] or "" for p in PERCENTILES],
                    f"{s.error_rate:.2%}",
                    "yes" if _passed(result, s) else "no",
                )
                for s in result.search.steps
            ],
        )
        page.figure("Latency percentiles against the offered rate", _against_rate(result))
    return page.render()


def _figures(result: LoadTest, step: Step) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("offered rate (req/s)", step.offered_rate),
        ("achieved rate (req/s)", round(step.achieved_rate, 1)),
        ("requests", step.requests),
        *[(f"latency {p} (ms, {LATENCY_OF})", step.latency_ms[p]) for p in PERCENTILES],
        ("errors", ", ".join(f"{k}: {v}" for k, v in step.errors.items()) or "none"),
        ("timeouts", step.timeouts),
        ("wrong answers / checked", f"{step.wrong_answers} / {step.answers_checked}"),
        (
            "generator: share sent late, CPU share",
            f"{step.generator['late_share']:.2%}, {step.generator['cpu_share']}",
        ),
    ]
    if result.cold_start_s is not None:
        rows.insert(0, ("cold start (s)", round(result.cold_start_s, 3)))
    if result.search is not None:
        rows.insert(0, ("max rate meeting the SLO (req/s)", result.search.max_rate or "none"))
    return rows


def _over_time(step: Step) -> Any:
    figure, axes = new_figure()
    t = [w[0] for w in step.timeline]
    for index, label, style in ((3, "max", ":"), (2, "p99", "-"), (1, "p50", "-")):
        axes.plot(t, [w[index] for w in step.timeline], style, label=label, linewidth=1.5)
    axes.set_xlabel("seconds into the run (by the time each request was due)")
    axes.set_ylabel(f"latency of {LATENCY_OF} (ms)")
    axes.set_yscale("log")
    axes.legend()
    axes.grid(True, alpha=0.3)
    return figure


def _distribution(step: Step) -> Any:
    """The share of answers slower than each latency (a complementary CDF, log-log): the tail
    shows as it is, which a histogram hides."""
    figure, axes = new_figure()
    values = step.latencies
    n = len(values)
    if n:
        stride = max(1, n // 2000)  # enough points for the curve, not an SVG of 100,000 paths
        xs = [*values[::stride], values[-1]]
        ys = [*((n - i) / n for i in range(0, n, stride)), 1 / n]
        axes.step(xs, ys, where="post", linewidth=1.5)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"latency of {LATENCY_OF} (ms)")
    axes.set_ylabel(f"share of {LATENCY_OF} slower")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def _against_rate(result: LoadTest) -> Any:
    assert result.search is not None
    figure, axes = new_figure()
    steps = sorted(result.search.steps, key=lambda s: s.offered_rate)
    rates = [s.offered_rate for s in steps]
    for p in ("p50", "p99", "max"):
        axes.plot(rates, [s.latency_ms[p] for s in steps], "o-", label=p)
    for term in result.options.terms:
        if term.unit == "ms":
            axes.axhline(term.limit, linestyle="--", color="gray", linewidth=1)
            axes.annotate(term.text, (rates[0], term.limit), fontsize=8)
    if result.search.max_rate:
        axes.axvline(result.search.max_rate, linestyle=":", color="green", label="max rate meeting the SLO")
    axes.set_xlabel("offered rate (req/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.legend()
    axes.grid(True, alpha=0.3)
    return figure
