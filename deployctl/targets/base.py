"""The one small base class every target implements: render, build, start (and serve)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.console import Console

from deployctl.errors import UsageError
from deployctl.manifest import Artifact


@dataclass(frozen=True)
class Option:
    """A target-specific option, given on the command line as `--<name-with-dashes> VALUE`."""

    name: str
    default: Any
    help: str
    type: type = str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: str) -> Any:
        try:
            value = self.type(raw) if self.type is not bool else _parse_bool(raw)
        except ValueError:
            raise UsageError(f"{self.flag} expects {self.type.__name__}, got '{raw}'.", self.help) from None
        if self.choices and value not in self.choices:
            raise UsageError(f"{self.flag} must be one of {', '.join(self.choices)}, got '{raw}'.", self.help)
        return value


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


class RunningService(Protocol):
    """A started artifact that answers HTTP on `base_url` until `stop()`."""

    base_url: str

    def alive(self) -> bool: ...
    def logs(self, lines: int = 30) -> str: ...
    def stop(self) -> None: ...


@dataclass
class Check:
    """One smoke-test step's outcome, as shown in the report table (and the JSON and JUnit reports)."""

    name: str
    ok: bool
    detail: str = ""
    ms: float | None = None
    expected: str | None = None  # on a failure, when there is one thing it should have been
    got: str | None = None


class Target(ABC):
    """A deployment target. Subclasses are registered in `deployctl.targets`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    produces: ClassVar[str]
    layers: ClassVar[tuple[str, ...]]  # template folders, rendered in order
    options: ClassVar[tuple[Option, ...]] = ()
    server_requirements: ClassVar[tuple[str, ...]] = ()

    # -- generate -------------------------------------------------------------------------------

    def parse_options(self, raw: dict[str, str]) -> dict[str, Any]:
        """Defaults overlaid with the user's values, each parsed and checked."""
        by_flag = {o.name: o for o in self.options}
        unknown = [k for k in raw if k not in by_flag]
        if unknown:
            valid = ", ".join(o.flag for o in self.options) or "none"
            raise UsageError(
                f"Unknown option(s) for target '{self.name}': "
                f"{', '.join('--' + k.replace('_', '-') for k in unknown)}.",
                f"Options of '{self.name}': {valid}. See `deployctl targets`.",
            )
        values = {o.name: o.default for o in self.options}
        values.update({k: by_flag[k].parse(v) for k, v in raw.items()})
        self.check_options(values)
        return values

    def check_options(self, values: dict[str, Any]) -> None:
        """Per-option checks, then cross-option checks in subclasses."""
        for option in self.options:
            problem = option.check(values[option.name]) if option.check else None
            if problem:
                raise UsageError(f"{option.flag}: {problem}", option.help)

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        """Template variables beyond the common ones (model, name, options, requirements)."""
        return base

    # -- after generate: read only the artifact dir ---------------------------------------------

    @abstractmethod
    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        """Make the artifact runnable; return facts to report (sizes, tags, wall time)."""

    @abstractmethod
    def start(self, artifact: Artifact, port: int) -> RunningService:
        """Start the built artifact in the background, answering on `port` on loopback."""

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        """Run in the foreground until Ctrl-C or SIGTERM."""
        from deployctl.process import run_until_signalled

        run_until_signalled(lambda: self.start(artifact, port), console)

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        """Checks that need no running service (schema validation, package size...)."""
        return []

    def service_checks(self, artifact: Artifact, base_url: str) -> list[Check]:
        """Checks against the started service beyond the HTTP contract (k8s probe paths...)."""
        return []

    def next_steps(self, artifact: Artifact) -> list[str]:
        """Commands printed after `generate` and `build`."""
        return [f"deployctl build {artifact.path}", f"deployctl smoke-test {artifact.path}"]


def dns_name(name: str) -> str:
    """A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower().replace("_", "-")).strip("-")[:63].strip("-")
    if not label:
        raise UsageError(f"Cannot make a DNS-safe service name from '{name}'.", "Pass --name.")
    return label


def require_built(artifact: Artifact, marker: Path, what: str) -> None:
    if not marker.exists():
        raise UsageError(
            f"{artifact.path} is generated but not built ({what} is missing).",
            f"Run `deployctl build {artifact.path}` first.",
        )
