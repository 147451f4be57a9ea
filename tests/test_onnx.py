"""--engine onnx: conversion and parity at generate (the registry's models and a pipeline with
imputers), refusal of what skl2onnx cannot convert, and ONNX artifacts built and smoke-tested
(fastapi and lambda) with neither scikit-learn nor scipy in them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FRAUD_ROW, Registry, build_registry, run_cli

from deployctl.onnx_export import TOLERANCE
from deployctl.requirements import package_name
from deployctl.targets.embedded import import_name

FRAUD = "models:/fraud_detector@production"
NOT_SHIPPED = {"scikit-learn", "scipy", "skops", "mlflow", "torch"}


@pytest.fixture(scope="module")
def onnx_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_onnx_registry.py", tmp_path_factory.mktemp("onnx-registry"))


@pytest.fixture(scope="module")
def generate(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, str, int]]:
    def make(reg: Registry, uri: str, target: str, *options: str) -> tuple[Path, str, int]:
        out = tmp_path_factory.mktemp("onnx") / "artifact"
        result = run_cli("generate", "-m", uri, "-t", target, "-o", str(out), *options, env=reg.env())
        return out, result.output, result.code

    return make


@pytest.mark.parametrize(
    "uri",
    [FRAUD, "models:/iris_species/1", "models:/house_price/1", "models:/churn_logreg/1"],
)
def test_registry_models_convert_and_agree_on_the_recorded_rows(
    registry: Registry, generate: Callable[..., tuple[Path, str, int]], uri: str
) -> None:
    out, output, code = generate(registry, uri, "fastapi", "--engine", "onnx")
    assert code == 0, output
    manifest = json.loads((out / "deployctl.json").read_text())
    assert manifest["options"]["engine"] == "onnx"
    loader = manifest["model"]["loader"]
    assert loader["kind"] == "onnx" and (out / "model" / "model.onnx").is_file()
    assert 0 <= loader["max_abs_diff"] <= TOLERANCE
    shipped = {
        package_name(line)
        for line in (out / "requirements.txt").read_text().splitlines()
        if line[:1].isalpha()
    }
    assert "onnxruntime" in shipped and not shipped & NOT_SHIPPED, shipped


def test_a_pipeline_with_imputers_converts(
    onnx_registry: Registry, generate: Callable[..., tuple[Path, str, int]]
) -> None:
    out, output, code = generate(onnx_registry, "models:/imputed_pipeline/1", "flask", "--engine", "onnx")
    assert code == 0, output
    assert json.loads((out / "deployctl.json").read_text())["model"]["loader"]["max_abs_diff"] <= TOLERANCE


def test_what_skl2onnx_cannot_convert_is_refused_with_its_reason(
    onnx_registry: Registry, generate: Callable[..., tuple[Path, str, int]]
) -> None:
    out, output, code = generate(onnx_registry, "models:/kernel_ridge/1", "fastapi", "--engine", "onnx")
    assert code == 1, output
    assert "skl2onnx cannot convert this model (KernelRidge)" in output
    assert "shape calculator" in output and "--engine native" in output and "Traceback" not in output
    assert not (out / "deployctl.json").exists()
    _, output, code = generate(onnx_registry, "models:/kernel_ridge/1", "fastapi")
    assert code == 0, output  # the native engine serves it


def test_an_unknown_engine_is_a_usage_error(
    registry: Registry, generate: Callable[..., tuple[Path, str, int]]
) -> None:
    _, output, code = generate(registry, FRAUD, "gcf", "--engine", "tensorrt")
    assert code == 2 and "--engine must be one of native, onnx" in output


@pytest.mark.slow
def test_fastapi_onnx_artifact_smoke_tests_without_scikit_learn(
    registry: Registry, generate: Callable[..., tuple[Path, str, int]]
) -> None:
    out, output, code = generate(registry, FRAUD, "fastapi", "--engine", "onnx")
    assert code == 0, output
    built = run_cli("build", str(out))
    assert built.code == 0, built.output
    smoke = run_cli("smoke-test", str(out))
    assert smoke.code == 0, smoke.output
    python = str(out / ".venv" / "bin" / "python")
    for module in ("sklearn", "scipy"):
        missing = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
        assert missing.returncode == 1 and "ModuleNotFoundError" in missing.stderr
    code = (
        "import sys; from app.runtime import ModelService; service = ModelService.from_artifact(); "
        f"print(service.answer('/predict', {{'features': {FRAUD_ROW!r}}}), 'pandas' in sys.modules)"
    )
    answer = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=out)
    assert answer.returncode == 0 and "'prediction': 1" in answer.stdout, answer.stderr
    assert answer.stdout.split()[-1] == "False"  # /predict never imports pandas on the ONNX engine


@pytest.mark.slow
def test_lambda_onnx_zip_is_under_the_direct_upload_limit_and_smoke_tests(
    registry: Registry, generate: Callable[..., tuple[Path, str, int]]
) -> None:
    out, output, code = generate(registry, FRAUD, "lambda", "--engine", "onnx")
    assert code == 0, output
    built = run_cli("build", str(out), "--json")
    assert built.code == 0, built.output
    zip_path = out / "dist" / "function.zip"
    assert zip_path.stat().st_size < 50 * 1024 * 1024
    names = zipfile.ZipFile(zip_path).namelist()
    assert any(n.startswith("onnxruntime/") for n in names)
    assert not any(n.startswith(("sklearn/", "scipy/")) for n in names)
    smoke = run_cli("smoke-test", str(out))
    assert smoke.code == 0, smoke.output


@pytest.mark.slow
def test_embedded_onnx_wheel_scores_without_pandas(
    registry: Registry, generate: Callable[..., tuple[Path, str, int]], tmp_path: Path
) -> None:
    out, output, code = generate(registry, FRAUD, "embedded", "--engine", "onnx")
    assert code == 0, output
    built = run_cli("build", str(out))
    assert built.code == 0, built.output
    (wheel,) = (out / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: pandas")]
    assert requires and all(re.search("extra == .pandas.$", line) for line in requires), requires
    # an edge install: a fresh venv, the wheel alone, offline from the artifact's wheelhouse
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    offline = ["uv", "pip", "install", "--offline", "--no-index", "--python", python]
    offline += ["--find-links", str(out / ".wheelhouse")]
    installed = subprocess.run([*offline, str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    name = json.loads((out / "deployctl.json").read_text())["name"]
    package = import_name(name)
    score = (
        f"import importlib.util, sys; from {package} import model; "
        f"print(model.predict({FRAUD_ROW!r})['prediction'], importlib.util.find_spec('pandas'))\n"
        "try:\n    model.predict_frame(None)\nexcept ImportError as exc:\n    print(exc)"
    )
    scored = subprocess.run([python, "-c", score], capture_output=True, text=True, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    first, error = scored.stdout.splitlines()
    assert first == "1 None", scored.stdout  # scored, and pandas is not installed at all
    assert f"predict_frame needs pandas: pip install '{name}[pandas]'" in error, error
    # the smoke test checks the same: without pandas, then predict_frame with the [pandas] extra
    smoke = run_cli("smoke-test", str(out), "--json")
    assert smoke.code == 0, smoke.output
    names = [check["name"] for check in json.loads(smoke.stdout)["checks"]]
    assert "model.predict_frame without pandas: an ImportError naming the [pandas] extra" in names, names
    assert "model.predict_frame" in names, names
