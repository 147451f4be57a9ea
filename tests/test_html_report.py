"""The report writers shared by compare and loadtest: gates and the self-contained HTML page,
opened in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

from browser import drawn_fraction, screenshot

from deployctl.checks.gates import Gate, failed
from deployctl.checks.html import HtmlReport, new_figure
from deployctl.checks.report import junit_xml


def test_a_gate_fails_when_its_value_is_over_the_limit_or_not_measured() -> None:
    gates = [
        Gate("agreement", ">=", 0.99, 0.995),
        Gate("p99_ms", "<=", 50, 61.2, "ms"),
        Gate("max_diff", "<=", 1e-6, None),
        Gate("rate", ">=", 100, float("nan")),
    ]
    assert [g.passed for g in gates] == [True, False, False, False]
    assert failed(gates) == gates[1:]
    assert gates[1].describe() == "p99_ms 61.2ms <= 50ms: failed"
    assert gates[1].as_dict() == {
        "name": "p99_ms",
        "op": "<=",
        "limit": 50,
        "value": 61.2,
        "unit": "ms",
        "passed": False,
    }


def test_gates_become_junit_test_cases_of_the_command_that_checked() -> None:
    from junitparser import Failure, JUnitXml

    checks = [Gate("agreement", ">=", 0.99, 0.9).as_check(), Gate("errors", "<=", 0, 0).as_check()]
    xml = junit_xml(checks, {"target": "fastapi"}, "compare model", 1.0, tool="compare")
    suite = next(iter(JUnitXml.fromstring(xml)))
    cases = list(suite)
    assert [c.classname for c in cases] == ["deployctl.compare.fastapi"] * 2
    assert isinstance(cases[0].result[0], Failure) and not cases[1].result


def test_the_html_page_is_self_contained_and_its_plots_render_in_chromium(tmp_path: Path) -> None:
    report = HtmlReport("compare <candidate> vs champion", "model v2 against v1")
    report.verdict(False, "1 gate failed")
    report.gates([Gate("agreement", ">=", 0.99, 0.9)])
    report.table("rows", ["side", "rows"], [("candidate", 10), ("champion", 10.5)])
    figure, axes = new_figure()
    axes.plot([0, 1, 2, 3], [3, 1, 2, 0], color="black", linewidth=8)
    axes.set_title("latency")
    report.figure("a plot", figure)
    page = tmp_path / "report.html"
    page.write_text(report.render(), encoding="utf-8")
    text = page.read_text()
    assert "&lt;candidate&gt;" in text  # escaped, never markup
    assert text.count("<svg") == 1
    assert not re.search(r"""(src|href)=["']?https?:""", text), "the page must fetch nothing"
    png = screenshot(page, tmp_path / "report.png", size="1200,1400")
    assert drawn_fraction(png) > 0.01
