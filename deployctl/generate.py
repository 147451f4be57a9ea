"""generate: resolve the model, record its in-process answers, render the target, write the manifest."""

from __future__ import annotations

import platform
import re
import shutil
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployctl import __version__, requirements
from deployctl.errors import DeployctlError, UsageError
from deployctl.expect import Expectations, record_expectations
from deployctl.manifest import MANIFEST, SCHEMA_VERSION, Artifact, file_hashes, write_manifest
from deployctl.model import ResolvedModel, resolve
from deployctl.render import render_layers
from deployctl.targets import get as get_target
from deployctl.targets.base import Target, dns_name


def generate(
    uri: str,
    target_name: str,
    out: Path,
    *,
    name: str | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    raw_options: dict[str, str] | None = None,
    templates: Path | None = None,
) -> Artifact:
    target = get_target(target_name)
    options = target.parse_options(raw_options or {})
    check_out_dir(out, force)
    with tempfile.TemporaryDirectory(prefix="deployctl-") as tmp:
        model = resolve(uri, tracking_uri, Path(tmp) / "model")
        service_name = dns_name(name or model.name)
        expectations = record_expectations(model)
        clear_previous(out)
        shutil.copytree(model.local_path, out / "model", dirs_exist_ok=True)
        model.local_path = out / "model"
    context = template_context(target, model, expectations, service_name, options)
    written = render_layers(target.layers, context, out, templates)
    files = [*written, *(p for p in (out / "model").rglob("*") if p.is_file())]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": target.name,
        "name": service_name,
        "options": options,
        "python_version": platform.python_version(),
        "model": context["model"],
        "smoke_cases": expectations.cases,
        "files": file_hashes(out, files),
    }
    write_manifest(out, manifest)
    return Artifact(out, manifest)


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file.", "Choose a directory path for --out.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--out {out} is not empty; deployctl never overwrites files without --force.",
            "Choose an empty or new directory, or pass --force to regenerate into it.",
        )


def clear_previous(out: Path) -> None:
    """With --force, remove what an earlier generate wrote (and only that); keep the user's files."""
    try:
        previous = Artifact.open(out)
    except DeployctlError:
        return
    for rel in previous.manifest.get("files", {}):
        (out / rel).unlink(missing_ok=True)
    shutil.rmtree(out / "model", ignore_errors=True)
    (out / MANIFEST).unlink()


def manifest_model(model: ResolvedModel, expectations: Expectations) -> dict[str, Any]:
    return {
        "uri": model.uri,
        "name": model.name,
        "version": model.version,
        "run_id": model.run_id,
        "source": model.source,
        "tracking_uri": redact(model.tracking_uri),
        "flavor": model.flavor,
        "loader": model.loader,
        "mlflow_version": model.mlflow_version,
        "python_version": model.python_version,
        "columns": [asdict(c) for c in model.columns],
        "task": expectations.task,
        "classes": expectations.classes,
        "requirements": model.requirements,
    }


def template_context(
    target: Target,
    model: ResolvedModel,
    expectations: Expectations,
    service_name: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    columns = [asdict(c) for c in model.columns]
    first = expectations.cases[0]["row"] if expectations.cases else {}
    base = {
        "name": service_name,
        "target": target.name,
        "tool_version": __version__,
        "model": manifest_model(model, expectations),
        "columns": columns,
        "task": expectations.task,
        "classes": expectations.classes,
        "prediction_type": expectations.prediction_type,
        "example_features": first,
        "options": options,
        "python_version": platform.python_version(),
        "requirements": requirements.merge(model.requirements, model.loader, target.server_requirements),
    }
    return target.context(base)


def redact(uri: str | None) -> str | None:
    """Credentials in a tracking URI must not end up in an artifact (or an image built from it)."""
    if uri is None:
        return None
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)
