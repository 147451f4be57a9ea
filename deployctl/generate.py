"""generate: resolve the model, record its in-process answers, render the target, write the manifest."""

from __future__ import annotations

import platform
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployctl import __version__, requirements
from deployctl.expect import Expectations, record_expectations
from deployctl.manifest import Artifact, Manifest, ModelRecord
from deployctl.model import ResolvedModel, copy_model_tree, resolve, strip_host_paths
from deployctl.outdir import check_out_dir, install, plan_install
from deployctl.redact import public_uri
from deployctl.redact import redact as redact  # re-exported: the one redaction function lives there
from deployctl.render import check_templates_dir, render_layers
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
    """Resolve, record, render into a staging folder, plan against `out`, then install (see outdir.py)."""
    target = get_target(target_name)
    options = target.parse_options(raw_options or {})
    if options.get("engine") == "onnx":  # before the model is resolved (seconds, a download)
        from deployctl.onnx_export import require_converter

        require_converter()
    check_templates_dir(templates)
    previous = check_out_dir(out, force)
    with tempfile.TemporaryDirectory(prefix="deployctl-") as tmp:
        model = resolve(uri, tracking_uri, Path(tmp) / "model")
        service_name = dns_name(name or model.name)
        expectations = record_expectations(model)
        stage = Path(tmp) / "stage"
        copy_model_tree(model.local_path, stage / "model")
        strip_host_paths(stage / "model")
        if options.get("engine") == "onnx":  # converted and checked on the recorded rows, or refused
            from deployctl import onnx_export

            model.loader = onnx_export.convert(model, expectations, stage / "model")
        model.local_path = out / "model"
        context = template_context(target, model, expectations, service_name, options)
        render_layers(target.layers_for(options), context, stage, templates, target.templates)
        plan = plan_install(out, stage, previous)
        manifest = Manifest(
            tool_version=__version__,
            generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            target=target.name,
            name=service_name,
            options=options,
            python_version=platform.python_version(),
            model=manifest_model(model, expectations),
            smoke_cases=expectations.cases,
            files=plan.hashes,
        )
        install(plan, manifest)
    return Artifact(out, manifest.to_dict(), notes=plan.notes())


def manifest_model(model: ResolvedModel, expectations: Expectations) -> ModelRecord:
    """The model block of the manifest (and of the template context): no credential, no host path.

    URIs go through `public_uri`: a local model is recorded by its directory's base name, a sqlite
    registry as `sqlite:///<db file name>`, a server as scheme://host:port without userinfo.
    """
    return ModelRecord(
        uri=public_uri(model.uri),
        name=model.name,
        version=model.version,
        run_id=model.run_id,
        source=public_uri(model.source),
        tracking_uri=public_uri(model.tracking_uri),
        flavor=model.flavor,
        loader=model.loader,
        mlflow_version=model.mlflow_version,
        python_version=model.python_version,
        columns=[asdict(c) for c in model.columns],
        task=expectations.task,
        classes=expectations.classes,
        requirements=model.requirements,
        params=model.params,
        tensor=model.tensor,
    )


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
        "model": manifest_model(model, expectations).to_dict(),
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
