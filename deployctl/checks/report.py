"""Smoke-test reports for pipelines: the JSON document and JUnit XML, and the redaction both go through.

JUnit XML has no formal standard; this writes the subset that Jenkins, GitLab, GitHub test
reporters, Azure DevOps and junitparser all read: `<testsuites>` holding ONE `<testsuite>` (tests,
failures, errors, skipped, time, timestamp) with `<properties>`, then one `<testcase>` per check
(name, classname, time in seconds) with a `<failure message=... type=...>` whose text holds the
expected and the received value, or an `<error>` when the endpoint could not be reached at all.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployctl.checks.contract import Check

REDACTED = "***"
MIN_SECRET = 4  # shorter strings are not secrets, and replacing them would garble every message
# XML 1.0 cannot carry most control characters, even escaped; a response body may hold any.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Redactor:
    """Replaces every header value given on the command line (and each word of it, such as the
    token after `Bearer`) wherever it could be printed or written: an endpoint may echo it back."""

    def __init__(self, values: Iterable[str]) -> None:
        secrets: set[str] = set()
        for value in values:
            secrets.add(value.strip())
            secrets.update(value.split())
        # longest first, so a token inside a longer value never leaves the rest of it behind
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def check(self, check: Check) -> Check:
        def clean(text: str | None) -> str | None:
            return None if text is None else self(text)

        return replace(
            check,
            name=self(check.name),
            detail=self(check.detail),
            expected=clean(check.expected),
            got=clean(check.got),
        )


def json_report(
    checks: list[Check], properties: dict[str, Any], seconds: float, outcome: str
) -> dict[str, Any]:
    """What `smoke-test --json` prints: the properties, the outcome and every check."""
    return {
        "ok": outcome == "passed",
        "outcome": outcome,  # passed | failed | unreachable
        **properties,
        "seconds": round(seconds, 3),
        "checks": [asdict(c) for c in checks],
    }


def junit_xml(
    checks: list[Check],
    properties: dict[str, Any],
    suite: str,
    seconds: float,
    unreachable: bool = False,
    started: datetime | None = None,
    tool: str = "smoke-test",
) -> str:
    """One testsuite, one testcase per check. `unreachable`: the failed checks are errors (the
    endpoint never answered), not failures (it answered wrongly). `tool`: the command that checked
    (smoke-test, compare, loadtest), in the suite's and the test cases' class names."""
    failed = sum(not c.ok for c in checks)
    counts = {
        "tests": str(len(checks)),
        "failures": "0" if unreachable else str(failed),
        "errors": str(failed) if unreachable else "0",
        "skipped": "0",
        "time": f"{seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": f"deployctl {tool}", **counts})
    stamp = (started or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    testsuite = ET.SubElement(root, "testsuite", {"name": suite, **counts, "timestamp": stamp})
    props = ET.SubElement(testsuite, "properties")
    for key, value in properties.items():
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": _xml(str(value))})
    classname = f"deployctl.{tool}.{properties.get('target', 'artifact')}"
    for check in checks:
        ms = check.ms or 0.0
        case = ET.SubElement(
            testsuite,
            "testcase",
            {"name": _xml(check.name), "classname": classname, "time": f"{ms / 1000:.3f}"},
        )
        if check.ok:
            if check.detail:
                ET.SubElement(case, "system-out").text = _xml(check.detail)
            continue
        tag, kind = ("error", "EndpointUnreachable") if unreachable else ("failure", "CheckFailed")
        message = check.detail.splitlines()[0] if check.detail else "failed"
        if check.expected is not None or check.got is not None:
            message = f"{message} (expected {check.expected}, got {check.got})"
        element = ET.SubElement(case, tag, {"message": _xml(message[:1000]), "type": kind})
        body = [f"expected: {check.expected}", f"got: {check.got}"] if check.expected or check.got else []
        element.text = _xml("\n".join([*body, check.detail]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: Path, text: str) -> None:
    """Write a report whole or not at all (a pipeline reading a half-written file sees garbage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
