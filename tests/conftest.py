"""Shared fixtures: a real sqlite MLflow registry with several models, and the real CLI.

The registry is built once per session in a temp dir:
  fraud_detector   binary classifier, a pipeline with a string and a boolean column.
                   v1 @production and stage Production; v2 @challenger (retrained, other seed)
  iris_species     multi-class random forest with string labels (skops trusted types)
  house_price      regressor (ridge), numeric columns, one of them an integer
  churn_logreg     plain binary logistic regression on numbers
  unsigned_model   logged without a signature or example
  doubler          a custom mlflow.pyfunc.PythonModel (no native flavor)
  imputed_churn    a pipeline whose optional column (required=False) is imputed in a
                   ColumnTransformer; a string column first
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_DOCKER = os.environ.get("DEPLOYCTL_REQUIRE_DOCKER") == "1"
# fastapi services started by tests serve HTTP only unless a test asks for gRPC with a free
# GRPC_PORT (tests/test_grpc.py): the default port would be one port for every test file in parallel
os.environ.setdefault("GRPC", "0")
# A shell that starts the tests in the background (`pytest ... &`, a CI runner's job) leaves SIGINT
# ignored, and every process we start would inherit that: the tests that press Ctrl-C (SIGINT to a
# `deployctl build` or `serve`) would see it ignored. Our handler is reset to the default on exec.
signal.signal(signal.SIGINT, signal.default_int_handler)
# A transaction the fraud model of make_registry.py scores as likely fraud.
FRAUD_ROW = {
    "amount": 950.0,
    "hour": 3,
    "merchant_category": "gaming",
    "is_foreign": True,
    "account_age_days": 12,
}


@dataclass
class Registry:
    root: Path
    tracking_uri: str
    run_ids: dict[str, str]

    def env(self) -> dict[str, str]:
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    python: str = sys.executable,
) -> Result:
    """Run the real `deployctl` CLI in a subprocess, as a user or CI would.

    Always this checkout's code, whatever the cwd: an installed copy must not answer for it."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [python, "-m", "deployctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def readme_python_block(marker: str) -> str:
    """The one ```python block of README.md that contains `marker`, as written: tests run the
    README's examples, so an example that stops working fails a test."""
    import re

    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"{len(found)} of the README's python blocks contain {marker!r}"
    return found[0]


# What the README's tritonclient examples print, checked after them: `result` holds the answers for
# its two rows, the first a fraud (prediction 1, probability ~1), the second not.
README_OIP_ANSWERS = """
assert result.as_numpy("predict").tolist() == [1, 0]
assert [round(p) for p in result.as_numpy("predict_proba")[:, 1].tolist()] == [1, 0]
"""


def run_readme_oip_example(marker: str, address: str, served_at: str) -> str:
    """The README's tritonclient example containing `marker`, run as written but for the server's
    address (`address` replaced by `served_at`, a free port's); its output."""
    block = readme_python_block(marker)
    assert f'url="{address}"' in block, block
    code = block.replace(address, served_at) + README_OIP_ANSWERS
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, f"{code}\n{ran.stderr}"
    return ran.stdout


def loadtest_every_route(artifact: Path, rate: int = 20, seconds: int = 2) -> None:
    """`deployctl loadtest DIR` on each route of the contract, the built artifact started by loadtest
    itself (as a CI step would): each run meets a loose SLO with every sampled answer right."""
    import json

    for route in ("predict", "predict_batch", "invocations", "infer"):
        result = run_cli(
            "loadtest", str(artifact), "--json", "--route", route, "--batch-size", "5",
            "--rate", str(rate), "--duration", str(seconds), "--slo", "p99<=5000ms", timeout=300,
        )  # fmt: skip
        assert result.code == 0, f"--route {route}: {result.output}"
        report = json.loads(result.stdout)
        assert report["errors"] == {} and report["timeouts"] == 0, (route, report)
        assert report["wrong_answers"] == 0 and report["answers_checked"] > 0, (route, report)
        assert report["cold_start_s"] > 0 and report["requests"] >= rate * seconds * 0.9, (route, report)


def build_registry(script: str, root: Path, *args: str, python: str = sys.executable) -> Registry:
    """Run one of the tests' registry scripts (real models, real MLflow) into a sqlite db in `root`."""
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    proc = subprocess.run(
        [python, str(ROOT / "tests" / script), tracking_uri, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_ids = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
    return Registry(root, tracking_uri, run_ids)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_registry.py", tmp_path_factory.mktemp("registry"))


@pytest.fixture
def cli(registry: Registry):  # type: ignore[no-untyped-def]
    """The CLI with MLFLOW_TRACKING_URI pointing at the test registry."""

    def call(*args: str, **kwargs: object) -> Result:
        return run_cli(*args, env=registry.env(), **kwargs)  # type: ignore[arg-type]

    return call


def infer_inputs(metadata: dict[str, Any], rows: list[dict[str, Any]], binary: bool = False) -> list[Any]:
    """tritonclient InferInputs for `rows`: one per column, typed as the model's OIP metadata says;
    the data as JSON, or with `binary` as raw bytes after the JSON (tritonclient's default)."""
    import numpy as np
    import tritonclient.http as oip

    dtypes = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
    inputs = []
    for tensor in metadata["inputs"]:
        values = [row[tensor["name"]] for row in rows]
        array = np.array(values, dtype=dtypes.get(tensor["datatype"], object))  # BYTES: str objects
        infer_input = oip.InferInput(tensor["name"], [len(rows)], tensor["datatype"])
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    return inputs


def torch_python() -> str:
    """An interpreter that can import torch (a venv with the system's site-packages plus torch),
    kept apart from the one running the tests: with torch importable, MLflow writes `torch==X` into
    the requirements of every model it logs, scikit-learn's too, and every artifact would ship it."""
    return venv_python("DEPLOYCTL_TORCH_PYTHON", "torch")


def kserve_python() -> str:
    """KServe's clients pin protobuf < 7, the tests' interpreter has 7 (grpcio-tools >= 1.85)."""
    return venv_python("DEPLOYCTL_KSERVE_PYTHON", "kserve")


def venv_python(variable: str, package: str) -> str:
    """The interpreter of a venv that has `package`, named by `variable` (.ci/run makes it); the
    test skips without one, and fails in CI (DEPLOYCTL_REQUIRE_DOCKER=1)."""
    python = os.environ.get(variable)
    if python:
        return python
    reason = f"no interpreter with {package}: set {variable} (see .ci/run)"
    if REQUIRE_DOCKER:
        pytest.fail(reason)
    pytest.skip(reason)


def docker_available() -> str | None:
    """None when an engine answers, else the reason it does not."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return None
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}); start one, e.g. `dockerd &`"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None:
        return
    reason = docker_available()
    if reason is None:
        return
    if REQUIRE_DOCKER:  # CI sets this, so CI can never go green by skipping engine tests
        pytest.fail(f"DEPLOYCTL_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden from the templates.")
