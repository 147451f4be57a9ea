"""Rendering without MLflow: golden files, strict variables, user overrides, the packaged wheel.

Refresh the golden files after an intended template change with `pytest tests/test_render.py
--update-golden`, then review the diff.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import pytest

from deployctl.expect import Expectations
from deployctl.generate import template_context
from deployctl.model import Column, ResolvedModel
from deployctl.render import render_layers, templates_root
from deployctl.targets import get as get_target

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parent.parent


def fixed_context(target_name: str) -> dict:
    """A fraud model as resolution would describe it, frozen so the output is reproducible."""
    model = ResolvedModel(
        uri="models:/fraud_detector@production",
        name="fraud_detector",
        version="3",
        run_id="0123abcd",
        flavor="sklearn",
        columns=[
            Column("amount", "double"),
            Column("merchant category", "string"),
            Column("is_foreign", "boolean"),
            Column("hour", "long", required=False),
        ],
        example_rows=[{"amount": 12.5, "merchant category": "travel", "is_foreign": False, "hour": 3}],
        requirements=[
            "mlflow==3.17.2",
            "numpy==2.4.6",
            "pandas==3.1.1",
            "scikit-learn==1.9.1",
            "skops==0.16.0",
        ],
        local_path=Path("model"),
        loader={"kind": "sklearn", "file": "model.skops", "format": "skops", "trusted_types": []},
        python_version="3.11.7",
        mlflow_version="3.17.2",
        tracking_uri="sqlite:///mlflow.db",
        source="models:/m-1",
    )
    expectations = Expectations("binary", [0, 1], "int", [{"row": model.example_rows[0], "prediction": 0}])
    target = get_target(target_name)
    context = template_context(target, model, expectations, "fraud-detector", target.parse_options({}))
    context["tool_version"] = "0.0.0"  # golden files must not change with every release
    context["python_version"] = "3.11.7"
    return context


def rendered_from_templates(layers: tuple[str, ...]) -> set[Path]:
    """Outputs of .j2 templates; other files are verbatim copies and need no golden file."""
    root = templates_root()
    return {
        p.relative_to(root / layer).with_suffix("") for layer in layers for p in (root / layer).rglob("*.j2")
    }


@pytest.mark.parametrize("target", ["fastapi", "flask", "kafka"])
def test_rendered_files_match_the_golden_files(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    layers = get_target(target).layers
    render_layers(layers, fixed_context(target), tmp_path)
    rendered = rendered_from_templates(layers)
    golden = GOLDEN / target
    if request.config.getoption("--update-golden"):
        import shutil

        shutil.rmtree(golden, ignore_errors=True)
        for rel in rendered:
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / rel, golden / rel)
    for rel in rendered:
        assert (golden / rel).is_file(), f"{rel} has no golden file; run with --update-golden"
        assert (tmp_path / rel).read_text() == (golden / rel).read_text(), (
            f"{rel} differs from its golden file"
        )
    assert {p.relative_to(golden) for p in golden.rglob("*") if p.is_file()} == rendered


@pytest.mark.parametrize(
    "target", ["flask", "fastapi", "docker", "k8s", "lambda", "gcf", "kafka", "embedded"]
)
def test_verbatim_files_are_copied_unchanged(target: str, tmp_path: Path) -> None:
    """Every target carries the one runtime: each file of the runtime package, byte for byte."""
    assert get_target(target).layers[0] == "runtime"
    render_layers(get_target(target).layers, fixed_context(target), tmp_path)
    package = templates_root() / "runtime" / "app"
    sources = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    assert {"runtime.py", "schema.py", "scoring.py", "service.py", "logs.py"} <= {p.name for p in sources}
    for source in sources:
        copy = tmp_path / "app" / source.relative_to(package)
        assert copy.read_bytes() == source.read_bytes(), copy


@pytest.mark.parametrize("target", ["fastapi", "flask", "kafka"])
def test_generated_python_is_lint_clean(target: str, tmp_path: Path) -> None:
    render_layers(get_target(target).layers, fixed_context(target), tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "E9,F", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_drop_mlflow_for_a_native_model_and_pin_the_server(tmp_path: Path) -> None:
    render_layers(get_target("fastapi").layers, fixed_context("fastapi"), tmp_path)
    lines = [
        line for line in (tmp_path / "requirements.txt").read_text().splitlines() if line and line[0] != "#"
    ]
    assert all("==" in line for line in lines), lines
    names = [line.split("==")[0] for line in lines]
    assert "mlflow" not in names and {"scikit-learn", "skops", "fastapi", "uvicorn"} <= set(names)


def test_a_missing_variable_is_an_error_never_an_empty_string(tmp_path: Path) -> None:
    context = fixed_context("fastapi")
    del context["columns"]
    with pytest.raises(jinja2.UndefinedError, match="columns"):
        render_layers(get_target("fastapi").layers, context, tmp_path)


def test_a_user_override_wins_and_can_extend_the_builtin(tmp_path: Path) -> None:
    override = tmp_path / "overrides"
    (override / "fastapi").mkdir(parents=True)
    (override / "fastapi" / "README.md.j2").write_text(
        '{% extends "_base/README.md.j2" %}{% block run %}Run it our way: {{ name | token }}{% endblock %}'
    )
    out = tmp_path / "out"
    render_layers(get_target("fastapi").layers, fixed_context("fastapi"), out, override)
    readme = (out / "README.md").read_text()
    assert "Run it our way: fraud-detector" in readme and "| merchant category | string |" in readme


def test_the_wheel_ships_the_templates(tmp_path: Path) -> None:
    """A plain (non-editable) install must find its templates inside the package."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("deployctl-*.whl"))).namelist()
    assert "deployctl/templates/runtime/app/runtime.py" in names
    assert "deployctl/templates/runtime/app/service.py" in names
    assert "deployctl/templates/fastapi/app/server.py" in names
    assert not any("/golden/" in n or n.startswith("tests/") for n in names)


ROUTES = ("/health/live", "/health/ready", "/metrics", "/version", "/v2")


@pytest.mark.parametrize("target", ["flask", "fastapi", "docker", "k8s", "lambda", "gcf", "embedded"])
def test_artifact_readme_names_the_python_it_needs_and_every_route(target: str, tmp_path: Path) -> None:
    render_layers(get_target(target).layers, fixed_context(target), tmp_path)
    readme = (tmp_path / "README.md").read_text()
    image, runtime = "**Python**: the image's, from `python:3.11-slim`", "**Python**: the `{}` runtime"
    python = {"docker": image, "k8s": image, "lambda": runtime.format("python3.12")}
    python["gcf"] = runtime.format(get_target("gcf").parse_options({})["runtime"])
    assert python.get(target, "**Python 3.11**") in readme, readme[:800]
    if target == "embedded":  # no HTTP: its API is model.predict
        return
    missing = [route for route in ROUTES if f"`{route}" not in readme]
    assert not missing, missing
    assert ("`/docs`" in readme) == (target in ("fastapi", "docker", "k8s")), readme
