"""The CLI as a user drives it: resolution of every URI form, and a clean error for every mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Registry, Result, run_cli


def assert_user_error(result: Result, *phrases: str) -> None:
    """A user mistake: non-zero exit, a short message naming the problem, never a traceback."""
    assert result.code != 0, result.output
    assert "Traceback" not in result.output, result.output
    assert "Error:" in result.stderr, result.output
    text = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{result.stderr}"


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.code == 0
    for command in ("targets", "inspect", "generate", "build", "smoke-test", "serve", "demo"):
        assert command in result.stdout


def test_targets_lists_all_six_with_their_options() -> None:
    result = run_cli("targets")
    assert result.code == 0, result.output
    for target in ("flask", "fastapi", "docker", "k8s", "lambda", "gcf"):
        assert target in result.stdout
    assert "--workers" in result.stdout


@pytest.mark.parametrize(
    ("uri", "name", "version"),
    [
        ("models:/fraud_detector@production", "fraud_detector", "1"),
        ("models:/fraud_detector@challenger", "fraud_detector", "2"),
        ("models:/fraud_detector/2", "fraud_detector", "2"),
        ("models:/fraud_detector/Production", "fraud_detector", "1"),
        ("models:/fraud_detector/latest", "fraud_detector", "2"),
        ("models:/iris_species/1", "iris_species", "1"),
    ],
)
def test_inspect_pins_every_uri_form(cli, uri: str, name: str, version: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("inspect", "--model", uri, "--json")
    assert result.code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["name"], info["version"], info["flavor"]) == (name, version, "sklearn")
    assert info["run_id"]
    assert info["columns"] and info["example_rows"]


def test_inspect_run_uri_and_local_dir(cli, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    run_id = registry.run_ids["house_price"]
    result = cli("inspect", "-m", f"runs:/{run_id}/model", "--json")
    assert result.code == 0, result.output
    info = json.loads(result.stdout)
    assert info["run_id"] == run_id and info["version"] == f"run-{run_id[:8]}"
    assert [c["name"] for c in info["columns"]] == ["area", "rooms", "age"]

    # a local MLflow model dir: the copy inside a generated artifact is one
    out = registry.root / "house_api"
    assert cli("generate", "-m", f"runs:/{run_id}/model", "-t", "fastapi", "-o", str(out)).code == 0
    result = cli("inspect", "-m", str(out / "model"), "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["version"] == "local"


def test_inspect_human_output_shows_signature(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("inspect", "-m", "models:/fraud_detector@production")
    assert result.code == 0, result.output
    for text in ("fraud_detector", "merchant_category: string", "is_foreign: boolean"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("uri", "phrases"),
    [
        ("models:/no_such_model/1", ["No registered model named 'no_such_model'", "fraud_detector"]),
        ("models:/fraud_detector@staging", ["no alias 'staging'", "@challenger", "@production"]),
        ("models:/fraud_detector/9", ["no version '9'", "[1, 2]"]),
        ("models:/fraud_detector/Archived", ["no version in stage 'Archived'", "Production"]),
        ("models:/unsigned_model/1", ["has no signature", "infer_signature"]),
        ("models:/fraud_detector", ["Cannot parse the model URI"]),
        ("s3://bucket/model", ["neither a model URI nor an MLflow model directory"]),
    ],
)
def test_resolution_errors_name_the_problem_and_the_fix(cli, uri: str, phrases: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert_user_error(cli("inspect", "--model", uri), *phrases)


def test_unreachable_tracking_server_fails_fast() -> None:
    result = run_cli("inspect", "-m", "models:/x/1", "--tracking-uri", "http://127.0.0.1:9", timeout=60)
    assert_user_error(result, "Cannot reach the tracking server at http://127.0.0.1:9")


def test_empty_default_registry_hints_at_tracking_uri(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = run_cli("inspect", "-m", "models:/fraud_detector/1", env=env, cwd=tmp_path)
    # the default sqlite:///mlflow.db does not exist here: said so, and not created (issue 22)
    assert_user_error(result, "No MLflow database at mlflow.db", "--tracking-uri")
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_target_lists_the_valid_ones(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("generate", "-m", "models:/fraud_detector/1", "-t", "heroku", "-o", str(tmp_path / "o"))
    assert_user_error(result, "Unknown target 'heroku'", "flask, fastapi, docker, k8s, lambda, gcf")
    assert not (tmp_path / "o").exists()


def test_unknown_target_option_lists_the_valid_ones(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "o"
    result = cli(
        "generate", "-m", "models:/fraud_detector/1", "-t", "fastapi", "-o", str(out), "--replicas", "3"
    )
    assert_user_error(result, "Unknown option(s) for target 'fastapi': --replicas", "--workers")
    result = cli(
        "generate", "-m", "models:/fraud_detector/1", "-t", "fastapi", "-o", str(out), "--workers", "two"
    )
    assert_user_error(result, "--workers expects int, got 'two'")


def test_never_overwrites_without_force(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "api"
    out.mkdir()
    mine = out / "notes.txt"
    mine.write_text("my notes")
    args = ("generate", "-m", "models:/fraud_detector@production", "-t", "flask", "-o", str(out))
    assert_user_error(cli(*args), "is not empty", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    assert cli(*args, "--force").code == 0
    manifest = json.loads((out / "deployctl.json").read_text())
    assert manifest["model"]["version"] == "1" and manifest["target"] == "flask"
    assert mine.read_text() == "my notes"

    # regenerating with --force replaces what deployctl wrote and keeps the user's file
    result = cli(
        "generate", "-m", "models:/fraud_detector@challenger", "-t", "fastapi", "-o", str(out), "--force"
    )
    assert result.code == 0, result.output
    assert not (out / "gunicorn.conf.py").exists()
    assert json.loads((out / "deployctl.json").read_text())["model"]["version"] == "2"
    assert mine.read_text() == "my notes"


@pytest.mark.parametrize("command", [["build"], ["smoke-test"], ["serve", "--port", "1"]])
def test_commands_refuse_a_dir_that_is_no_artifact(command: list[str], tmp_path: Path) -> None:
    assert_user_error(run_cli(*command, str(tmp_path)), "has no deployctl.json", "deployctl generate")
    assert_user_error(run_cli(*command, str(tmp_path / "missing")), "does not exist")


def test_smoke_test_before_build_says_to_build(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "api"
    assert cli("generate", "-m", "models:/house_price/1", "-t", "fastapi", "-o", str(out)).code == 0
    assert_user_error(cli("smoke-test", str(out)), "not built", f"deployctl build {out}")


def test_corrupt_manifest_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "deployctl.json").write_text("{not json")
    assert_user_error(run_cli("build", str(tmp_path)), "not a valid deployctl manifest")


def test_a_manifest_from_a_newer_deployctl_is_a_clean_error(tmp_path: Path) -> None:
    manifest = {"schema_version": 99, "tool_version": "7.0.0", "target": "fastapi", "model": {"name": "m"}}
    (tmp_path / "deployctl.json").write_text(json.dumps(manifest))
    for command in ("build", "serve", "smoke-test"):
        result = run_cli(command, str(tmp_path))
        assert result.code == 2, result.output
        assert_user_error(result, "by deployctl 7.0.0, a newer deployctl", "Upgrade deployctl to >= 7.0.0")


def test_manifest_records_pins_hashes_and_smoke_cases(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "api"
    result = cli(
        "generate",
        "-m",
        "models:/iris_species@latest".replace("@latest", "/latest"),
        "-t",
        "fastapi",
        "-o",
        str(out),
        "--name",
        "Iris_Classifier",
    )
    assert result.code == 0, result.output
    manifest = json.loads((out / "deployctl.json").read_text())
    assert manifest["name"] == "iris-classifier"
    assert manifest["model"]["uri"] == "models:/iris_species/latest"
    assert manifest["model"]["version"] == "1" and manifest["model"]["task"] == "multiclass"
    assert manifest["model"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert manifest["model"]["loader"]["trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert "app/runtime.py" in manifest["files"] and "model/MLmodel" in manifest["files"]
    case = manifest["smoke_cases"][0]
    assert case["prediction"] in manifest["model"]["classes"]
    assert abs(sum(case["probabilities"].values()) - 1) < 1e-9
    requirements = (out / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "fastapi==" in requirements
    assert "\nmlflow==" not in requirements  # loaded natively: MLflow is not needed to serve
