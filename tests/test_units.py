"""Small pure functions of the core, without MLflow or processes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from deployctl.cli import parse_extra_options
from deployctl.columns import COLUMN_TYPES, PLACEHOLDERS
from deployctl.errors import NotAnArtifact, UsageError
from deployctl.generate import redact
from deployctl.manifest import (
    MANIFEST,
    OLDEST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Artifact,
    Manifest,
    ModelRecord,
    read_manifest,
    write_manifest,
)
from deployctl.requirements import merge, package_name
from deployctl.targets.base import dns_name


def test_tracking_uri_credentials_are_redacted() -> None:
    assert redact("https://alice:s3cret@mlflow.example.com/") == "https://***@mlflow.example.com/"
    assert redact("https://token@mlflow.example.com") == "https://***@mlflow.example.com"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert redact(None) is None


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("fraud_detector", "fraud-detector"),
        ("My Model v2", "my-model-v2"),
        ("__x__", "x"),
        ("a" * 80, "a" * 63),
    ],
)
def test_service_names_are_dns_labels(name: str, label: str) -> None:
    assert dns_name(name) == label


def test_a_name_with_nothing_dns_safe_is_refused() -> None:
    with pytest.raises(UsageError, match="DNS-safe"):
        dns_name("___")


def test_target_options_parse_both_spellings() -> None:
    assert parse_extra_options(["--min-replicas", "2", "--memory=1Gi"]) == {
        "min_replicas": "2",
        "memory": "1Gi",
    }
    with pytest.raises(UsageError, match="needs a value"):
        parse_extra_options(["--memory"])
    with pytest.raises(UsageError, match="Unexpected argument 'stray'"):
        parse_extra_options(["stray"])


def test_requirements_keep_model_pins_and_add_the_server() -> None:
    loader = {"kind": "sklearn", "format": "skops"}
    lines = merge(["mlflow==3.17.2", "numpy==2.0.0", "skops==0.16.0"], loader, ("fastapi==1", "numpy==9"))
    assert lines[:2] == ["numpy==2.0.0", "skops==0.16.0"]  # mlflow dropped, model's numpy wins
    assert "fastapi==1" in lines and "numpy==9" not in lines
    assert any(line.startswith("pandas") for line in lines)
    pyfunc = merge(["mlflow==3.17.2"], {"kind": "pyfunc"}, ())
    assert pyfunc[0] == "mlflow==3.17.2"
    assert package_name("scikit_learn[alldeps]>=1.0; python_version>'3'") == "scikit-learn"


# -- the manifest and the column types -------------------------------------------------------------


def sample_manifest() -> Manifest:
    model = ModelRecord(
        uri="models:/fraud/3",
        name="fraud",
        version="3",
        run_id="0123abcd",
        source="models:/m-1",
        tracking_uri="sqlite:///mlflow.db",
        flavor="sklearn",
        loader={"kind": "sklearn", "file": "model.skops", "format": "skops", "trusted_types": []},
        mlflow_version="3.1.0",
        python_version="3.11.7",
        columns=[{"name": "amount", "type": "double", "required": True}],
        task="binary",
        classes=[0, 1],
        requirements=["scikit-learn==1.7.0"],
    )
    return Manifest(
        tool_version="0.1.0",
        generated_at="2026-01-01T00:00:00+00:00",
        target="fastapi",
        name="fraud",
        options={},
        python_version="3.11.7",
        model=model,
        smoke_cases=[{"row": {"amount": 1.0}, "prediction": 0}],
        files={"app/runtime.py": "0" * 64},
    )


def test_the_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    manifest = sample_manifest()
    write_manifest(tmp_path, manifest)
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert list(data)[:2] == ["schema_version", "tool_version"] and data["schema_version"] == SCHEMA_VERSION
    assert read_manifest(tmp_path / MANIFEST) == manifest
    artifact = Artifact.open(tmp_path)
    assert artifact.manifest == data and artifact.record == manifest
    assert (artifact.target, artifact.name, artifact.model["version"]) == ("fastapi", "fraud", "3")
    assert artifact.smoke_cases == manifest.smoke_cases and artifact.modified_files() == ["app/runtime.py"]


@pytest.mark.parametrize(
    ("version", "phrases"),
    [
        (SCHEMA_VERSION + 1, ("a newer deployctl", "Upgrade deployctl to >= 9.0.0")),
        (OLDEST_SCHEMA_VERSION - 1, ("manifest schema 0", "Regenerate the artifact with deployctl >=")),
    ],
)
def test_a_manifest_of_another_schema_is_refused_saying_which_deployctl(
    tmp_path: Path, version: int, phrases: tuple[str, ...]
) -> None:
    data = {**sample_manifest().to_dict(), "schema_version": version, "tool_version": "9.0.0"}
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(NotAnArtifact) as refused:
        Artifact.open(tmp_path)
    assert refused.value.exit_code == 2
    text = f"{refused.value} {refused.value.hint}"
    assert all(phrase in text for phrase in phrases), text


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("schema_version"),
        lambda m: m["model"].pop("version"),
        lambda m: m["model"].__setitem__("columns", "amount"),
        lambda m: m.__setitem__("files", {"a": 1}),
    ],
)
def test_a_manifest_missing_what_its_schema_says_is_not_valid(tmp_path: Path, change: Any) -> None:
    data = sample_manifest().to_dict()
    change(data)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(NotAnArtifact, match="is not a valid deployctl manifest"):
        Artifact.open(tmp_path)


def test_the_runtime_serves_the_column_types_deployctl_accepts() -> None:
    """The runtime keeps its own copy of the table (it never imports deployctl): the two agree."""
    path = Path(__file__).resolve().parent.parent / "templates" / "runtime" / "app" / "schema.py"
    spec = importlib.util.spec_from_file_location("artifact_schema", path)
    assert spec is not None and spec.loader is not None
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    assert schema.COLUMN_TYPES == COLUMN_TYPES
    assert set(schema.CHECKS) == set(COLUMN_TYPES)
    assert all(type(PLACEHOLDERS[t]) is pytype for t, (_, pytype) in COLUMN_TYPES.items())


COLUMNS = [
    {"name": "amount", "type": "double"},
    {"name": "foreign", "type": "boolean"},
    {"name": "note", "type": "string", "required": False},
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rows.csv", "amount,foreign\n1.5, yes\n2,0\n"),
        (
            "rows.jsonl",
            '{"amount": 1.5, "foreign": true}\n\n{"features": {"amount": 2.0, "foreign": false}}\n',
        ),
        ("rows.json", '[{"amount": 1.5, "foreign": true}, [2.0, false, null]]'),
    ],
)
def test_one_row_reader_for_compare_and_loadtest(tmp_path: Path, name: str, text: str) -> None:
    """CSV typed by the signature (an optional column may be absent), JSON lines with /predict
    bodies, a .json array with a row in signature order: the same rows either way."""
    from deployctl.checks.rows import all_rows

    (tmp_path / name).write_text(text)
    rows = all_rows(tmp_path / name, {"columns": COLUMNS})
    assert [(r["amount"], r["foreign"], r.get("note")) for r in rows] == [
        (1.5, True, None),
        (2.0, False, None),
    ]


def test_rows_a_load_test_cannot_send_are_refused_with_their_place(tmp_path: Path) -> None:
    from deployctl.checks.rows import all_rows

    cases = {
        "missing.jsonl": (
            '{"amount": 1.0, "foreign": true}\n{"amount": 2.0}\n',
            "row 2 lacks column(s) foreign",
        ),
        "empty.jsonl": ("\n", "holds no rows"),
        "scalar.jsonl": ("3\n", "line 1: a int"),
        "header.csv": ("amount\n1\n", "no column 'foreign'"),
        "cell.csv": ("amount,foreign\n1,maybe\n", "line 2: 'maybe' is not a boolean"),
    }
    for name, (text, said) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UsageError) as refused:
            all_rows(tmp_path / name, {"columns": COLUMNS})
        assert said in str(refused.value), name
    tensor = tmp_path / "examples.jsonl"
    tensor.write_text("[[1, 2], [3, 4]]\n")
    assert all_rows(tensor, {"columns": [], "tensor": {"shape": [-1, 2]}}) == [[[1, 2], [3, 4]]]
    with pytest.raises(UsageError, match="not an example"):
        all_rows(tmp_path / "missing.jsonl", {"columns": [], "tensor": {"shape": [-1, 2]}})
