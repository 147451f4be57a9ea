"""Gates: a limit on one figure of a report. Every gate is reported with its limit and its value,
passed or not, so that no gate is silently off."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from deployctl.checks.contract import Check

Comparison = Literal["<=", ">="]


@dataclass(frozen=True)
class Gate:
    """`value op limit` must hold. A value that could not be measured (None, NaN) fails."""

    name: str
    op: Comparison
    limit: float
    value: float | None
    unit: str = ""  # shown after the figures: "ms", "req/s", ""

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def describe(self) -> str:
        """One line: `p99_ms 61.2ms <= 50ms: failed`."""
        value = "not measured" if self.value is None else f"{self.value:g}{self.unit}"
        verdict = "passed" if self.passed else "failed"
        return f"{self.name} {value} {self.op} {self.limit:g}{self.unit}: {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "limit": self.limit,
            "value": self.value,
            "unit": self.unit,
            "passed": self.passed,
        }

    def as_check(self) -> Check:
        """The gate as a report line (table, JUnit testcase)."""
        value = "not measured" if self.value is None else f"{self.value:g}{self.unit}"
        return Check(
            f"gate {self.name} {self.op} {self.limit:g}{self.unit}",
            self.passed,
            self.describe(),
            expected=None if self.passed else f"{self.op} {self.limit:g}{self.unit}",
            got=None if self.passed else value,
        )


def failed(gates: list[Gate]) -> list[Gate]:
    return [gate for gate in gates if not gate.passed]
