"""promote: move a registered model's alias to the candidate's version, only on a passed compare report.

Plan, then execute (as Chalice plans a deployment): every check runs before the registry is
touched, so a refusal (a failed, tampered or foreign report, a model that is not in a registry,
an unreachable registry) changes nothing. The execution writes the gate figures as tags on the
model version first, then moves the alias: the registry records why the version was promoted.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployctl.checks.compare import checksum
from deployctl.checks.gates import Gate
from deployctl.errors import DeployctlError, UsageError
from deployctl.manifest import Artifact

TAG_PREFIX = "deployctl.compare."
ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
GATES = ("agreement", "max_abs_diff", "latency_p99_ratio", "candidate_errors")


class PromotionRefused(DeployctlError):
    """The report does not allow this promotion: nothing was changed in the registry."""


@dataclass(frozen=True)
class Plan:
    """What promote does (or, with --dry-run, would do)."""

    model: str
    version: str
    alias: str
    previous: str | None  # the version the alias names now
    tags: dict[str, str]
    tracking_uri: str

    def describe(self) -> str:
        before = f"from version {self.previous}" if self.previous else "(new alias)"
        return f"{self.model}@{self.alias} {before} -> version {self.version}, with {len(self.tags)} tags"


def read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"--report {path} does not exist.", "Write it with `deployctl compare ... --json > FILE`."
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--report {path} is not a JSON report ({exc}).") from None
    if not isinstance(report, dict) or report.get("tool") != "deployctl compare":
        raise PromotionRefused(f"{path} is not a report of `deployctl compare`.")
    return report


def verify(report: dict[str, Any], artifact: Artifact, where: Path) -> None:
    """The report passed, was made for this very artifact, and says what its gates say."""
    if report.get("checksum") != checksum(report):
        raise PromotionRefused(
            f"{where} was edited after compare wrote it (its checksum does not match its content).",
            "Run compare again and promote with the report it writes.",
        )
    if report.get("digest") != artifact.digest:
        raise PromotionRefused(
            f"{where} was made for another artifact (digest {report.get('digest')}), not for "
            f"{artifact.path} ({artifact.digest}).",
            "Promote the artifact that was compared, or compare this one.",
        )
    failed = [name for name, passed in gate_verdicts(report).items() if not passed]
    if failed or report.get("passed") is not True:
        raise PromotionRefused(
            f"{where} did not pass: failed gates {', '.join(failed) or '(none listed)'}.",
            "Only a candidate that passed every gate is promoted; see the report for the figures.",
        )


def gate_verdicts(report: dict[str, Any]) -> dict[str, bool]:
    """Every gate recomputed from its limit and value (a `passed` flag alone is not believed); a
    gate missing from the report counts as failed."""
    verdicts = dict.fromkeys(GATES, False)
    for item in report.get("gates") or []:
        try:
            gate = Gate(str(item["name"]), item["op"], float(item["limit"]), _number(item["value"]))
        except (KeyError, TypeError, ValueError):
            continue
        if gate.op in ("<=", ">="):
            verdicts[gate.name] = gate.passed and item.get("passed") is True
    return verdicts


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def registered(artifact: Artifact) -> tuple[str, str]:
    """(name, version) of the artifact's model in the registry; a runs:/ or local model has none."""
    model = artifact.model
    uri = str(model.get("uri") or "")
    if not uri.startswith("models:/"):
        raise UsageError(
            f"{artifact.path} was generated from '{uri}', not from a registered model: there is no "
            "model version for an alias to name.",
            "Register the model, generate from models:/NAME/VERSION, compare, then promote.",
        )
    return str(model["name"]), str(model["version"])


def tags_of(report: dict[str, Any]) -> dict[str, str]:
    tags = {f"{TAG_PREFIX}{g['name']}": _tag(g["value"]) for g in report["gates"]}
    tags[f"{TAG_PREFIX}rows"] = str(report.get("compared"))
    tags[f"{TAG_PREFIX}champion_version"] = str(report.get("champion", {}).get("model_version"))
    tags[f"{TAG_PREFIX}digest"] = str(report["digest"])
    tags[f"{TAG_PREFIX}report_checksum"] = str(report["checksum"])
    return tags


def _tag(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def plan(artifact_dir: Path, alias: str, report_path: Path, tracking_uri: str | None) -> Plan:
    """Every check, nothing changed: the plan, or the reason it is refused."""
    from deployctl.model import _quiet_mlflow, _registry_errors, check_sqlite_exists, tracking_uri_or_default

    if not ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise UsageError(
            f"--alias '{alias[:80]}' is not an MLflow alias: letters, digits, _ and -, neither 'latest' "
            "nor v<number> (those name versions).",
            "For example --alias champion.",
        )
    artifact = Artifact.open(artifact_dir)
    name, version = registered(artifact)
    edited = artifact.modified_files()
    if edited:
        raise PromotionRefused(
            f"{artifact.path} was edited since generate ({', '.join(edited[:5])}): it is not the artifact "
            "its manifest (and so the report) describes.",
            "Regenerate it (`deployctl generate ... --force`), compare, then promote.",
        )
    report = read_report(report_path)
    verify(report, artifact, report_path)
    uri = tracking_uri_or_default(tracking_uri)
    check_sqlite_exists(uri)  # else MLflow creates an empty database at a mistyped path
    _quiet_mlflow()  # else an unreachable server is retried for minutes before the refusal
    with _registry_errors(uri):
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        found = client.get_model_version(name, version)
        run_id = artifact.model.get("run_id")
        if run_id and found.run_id != run_id:
            raise PromotionRefused(
                f"{name} version {version} in this registry comes from run {found.run_id}, but the "
                f"artifact's from run {run_id}: another registry's model of the same name.",
                "Point --tracking-uri (or MLFLOW_TRACKING_URI) at the registry the artifact came from.",
            )
        aliases = client.get_registered_model(name).aliases
    previous = aliases.get(alias)  # MLflow gives the version as an int here
    return Plan(name, version, alias, None if previous is None else str(previous), tags_of(report), uri)


def execute(plan: Plan) -> None:
    """Tags first, then the alias: when the alias names the version, its reasons are already there."""
    from mlflow import MlflowClient

    from deployctl.model import _registry_errors

    with _registry_errors(plan.tracking_uri):
        client = MlflowClient(plan.tracking_uri)
        for key, value in plan.tags.items():
            client.set_model_version_tag(plan.model, plan.version, key, value)
        client.set_registered_model_alias(plan.model, plan.alias, plan.version)
