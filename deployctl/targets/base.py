"""The one small interface every target offers the CLI: options, context, build, start, serve, checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.console import Console

from deployctl.checks.contract import Check
from deployctl.errors import BuildInterrupted, Interrupted, UsageError
from deployctl.manifest import Artifact
from deployctl.process import RunningService, check_port, run_until_signalled


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


class Builder(Protocol):
    """Makes a generated artifact runnable (a venv, an image, a zip); returns facts to report."""

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]: ...


class Runner(Protocol):
    """Starts a built artifact: in the background for the smoke test, in the foreground for serve."""

    def start(self, artifact: Artifact, port: int) -> RunningService: ...
    def serve(self, artifact: Artifact, port: int, console: Console) -> None: ...


class Target:
    """A deployment target, as the CLI and the registry (`deployctl.targets`) see it.

    A target is composed: its template `layers` (folders searched in the built-in templates, then
    in the target's own `templates` folder, then in the user's --templates), a `builder` and a
    `runner` (shared ones from `deployctl.targets.builders` / `.runners`, used by reference), and
    its checks (`extra_checks` before the service starts, `service_checks` after the HTTP contract).
    A target may also override `build`, `start` or `serve` directly.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    produces: ClassVar[str]
    layers: ClassVar[tuple[str, ...]]  # template folders, rendered in order
    templates: ClassVar[Path | None] = None  # a folder holding this target's own layers
    options: ClassVar[tuple[Option, ...]] = ()
    server_requirements: ClassVar[tuple[str, ...]] = ()
    serves_http: ClassVar[bool] = True  # False: smoke-test runs only extra_checks (a package, no server)
    serves_grpc: ClassVar[bool] = False  # also the Open Inference Protocol over gRPC (app/oip_grpc/)
    builder: ClassVar[Builder | None] = None
    runner: ClassVar[Runner | None] = None

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
        """Per-option checks; a target adds its cross-option checks after calling this."""
        for option in self.options:
            problem = option.check(values[option.name]) if option.check else None
            if problem:
                raise UsageError(f"{option.flag}: {problem}", option.help)

    def context(self, base: dict[str, Any]) -> dict[str, Any]:
        """Template variables beyond the common ones (model, name, options, requirements)."""
        return base

    def warnings(self, options: dict[str, Any]) -> list[str]:
        """What `generate` warns about these options (e.g. a service left open to the internet)."""
        return []

    def layers_for(self, options: dict[str, Any]) -> tuple[str, ...]:
        """The template layers rendered with these options (an option may add files)."""
        return self.layers

    # -- after generate: read only the artifact dir ---------------------------------------------

    def build(self, artifact: Artifact, console: Console) -> dict[str, Any]:
        """Make the artifact runnable; return facts to report (sizes, tags, wall time).

        Ctrl-C stops it with an Interrupted error that says what was left: a built-in builder
        removes what it had half made (a half-filled .venv must not pass for a built one) and
        says so (BuildInterrupted); of another builder nothing is known."""
        again = f"Run `deployctl build {artifact.path}` again to build it."
        try:
            return self._part("builder", self.builder).build(artifact, console)
        except BuildInterrupted as stop:
            raise Interrupted(f"Build of {artifact.path} interrupted: {stop.outcome}.", again) from None
        except KeyboardInterrupt:
            raise Interrupted(
                f"Build of {artifact.path} interrupted: what its builder was writing may be incomplete.",
                again,
            ) from None

    def start(self, artifact: Artifact, port: int) -> RunningService:
        """Start the built artifact in the background, answering on `port` on loopback."""
        return self._part("runner", self.runner).start(artifact, port)

    def serve(self, artifact: Artifact, port: int, console: Console) -> None:
        """Run in the foreground until Ctrl-C or SIGTERM, on a port checked before anything loads."""
        check_port(port)
        if self.runner is not None:
            self.runner.serve(artifact, port, console)
        else:  # a target that only overrides start()
            run_until_signalled(lambda: self.start(artifact, port), console)

    def smoke(self, artifact: Artifact, timeout: float) -> list[Check] | None:
        """A target whose service is not HTTP (a stream consumer) runs its own smoke test here;
        None: the HTTP one (`deployctl.checks.smoke.run`: start, the contract, `service_checks`)."""
        return None

    def extra_checks(self, artifact: Artifact) -> list[Check]:
        """Checks that need no running service (schema validation, package size...)."""
        return []

    def service_checks(self, artifact: Artifact, base_url: str) -> list[Check]:
        """Checks against the started service beyond the HTTP contract (k8s probe paths...)."""
        return []

    def next_steps(self, artifact: Artifact) -> list[str]:
        """Commands printed after `generate` and `build`."""
        return [f"deployctl build {artifact.path}", f"deployctl smoke-test {artifact.path}"]

    def _part(self, role: str, part: Any) -> Any:
        if part is None:
            raise NotImplementedError(f"Target '{self.name}' has no {role}: set one or override this method.")
        return part


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
