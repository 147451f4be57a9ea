"""Small pure functions of the core, without MLflow or processes."""

from __future__ import annotations

import pytest

from deployctl.cli import parse_extra_options
from deployctl.errors import UsageError
from deployctl.generate import redact
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
