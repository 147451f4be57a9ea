"""embedded end to end: generate and build a wheel through the real CLI, smoke-test it (a fresh
venv, offline), then install it into a venv of our own and use it as an application would: its
API, its batch-scoring CLI on good and bad rows (CSV, JSON Lines, Parquet), and mypy on callers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FRAUD_ROW, Registry, run_cli

from deployctl.targets.embedded import import_name, package_version

pytestmark = pytest.mark.slow
FRAUD = "models:/fraud_detector@production"


@pytest.fixture(scope="module")
def artifact(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embedded") / "pkg"
    generated = run_cli("generate", "-m", FRAUD, "-t", "embedded", "-o", str(out), env=registry.env())
    assert generated.code == 0, generated.output
    built = run_cli("build", str(out))
    assert built.code == 0, built.output
    return out


@pytest.fixture(scope="module")
def python(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed offline from the artifact's wheelhouse, plus pyarrow and mypy
    (from the index) for the Parquet and typing tests."""
    venv = tmp_path_factory.mktemp("app") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    wheel = next((artifact / "dist").glob("*.whl"))
    uv = shutil.which("uv")
    assert uv, "the tests install with uv"
    wheelhouse = ["--no-index", "--find-links", str(artifact / ".wheelhouse")]
    subprocess.run([uv, "pip", "install", "-q", "--python", str(py), *wheelhouse, str(wheel)], check=True)
    import pyarrow  # the host's versions, so the index serves what we tested with

    extras = [f"pyarrow=={pyarrow.__version__}", "mypy"]
    subprocess.run([uv, "pip", "install", "-q", "--python", str(py), *extras], check=True)
    return py


def run_py(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def score(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "fraud_detector", "score", *args], capture_output=True, text=True, cwd=cwd
    )


def test_the_wheel_is_named_after_the_service_and_passes_twine_check(artifact: Path) -> None:
    wheels = [p.name for p in (artifact / "dist").glob("*.whl")]
    assert wheels == ["fraud_detector-1-py3-none-any.whl"]
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(artifact / "dist" / wheels[0])],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "PASSED" in check.stdout, check.stdout + check.stderr


def test_smoke_test_checks_api_cli_and_bad_inputs_offline(artifact: Path) -> None:
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert all(c["ok"] for c in checks.values())
    names = " | ".join(checks)
    for expected in (
        "install the wheel in a fresh venv, offline",
        "import fraud_detector: lazy",
        "model.predict row 0 (list)",
        "model.predict_batch 5 rows",
        "model.predict_frame",
        "score (CSV",
        "score (JSONL",
        "bad input raises ValidationError: predict: an unknown column",
        "single-row model.predict latency",
    ):
        assert expected in names
    assert "HTTP 400" in checks["bad input raises ValidationError: predict: an unknown column"]["detail"]


def test_api_answers_as_the_http_service_and_refuses_as_it(python: Path, tmp_path: Path) -> None:
    probe = run_py(
        python,
        f"""
        import json, sys
        import fraud_detector
        from fraud_detector import model, ValidationError
        assert "pandas" not in sys.modules and "sklearn" not in sys.modules  # lazy
        row = {FRAUD_ROW!r}
        http = model.service.handle("POST", "/predict", json.dumps({{"features": row}}).encode())
        assert model.predict(row) == json.loads(http[1]), (model.predict(row), http)
        assert issubclass(ValidationError, ValueError)
        try:
            model.predict({{**row, "amount": "a lot"}})
        except ValueError as exc:
            print(json.dumps([str(exc), exc.status]))
        import pandas as pd
        frame = pd.DataFrame([row, {{**row, "amount": 5.0}}], index=["a", "b"])
        out = model.predict_frame(frame)
        print(json.dumps([list(out.index), list(out.columns), out.loc["a", "probability"]]))
        try:
            model.predict_frame(pd.DataFrame([row, {{**row, "hour": None}}], index=["a", "b"]))
        except ValidationError as exc:
            print(json.dumps(str(exc)))
        print(json.dumps(model.signature))
        print(fraud_detector.__version__)
        """,
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    refused, frame, frame_error, signature, version = probe.stdout.splitlines()
    assert json.loads(refused) == ["features: 'amount' must be a number, got a string", 400]
    index, columns, probability = json.loads(frame)
    assert index == ["a", "b"] and columns == ["prediction", "probability"] and 0 <= probability <= 1
    assert json.loads(frame_error) == "row 'b': 'hour' is required and missing or null"
    assert [c["name"] for c in json.loads(signature)["columns"]] == list(FRAUD_ROW)
    assert json.loads(signature)["task"] == "binary" and version == "1"


def test_score_cli_writes_answers_and_bad_rows_with_their_line_numbers(python: Path, tmp_path: Path) -> None:
    header = ",".join(FRAUD_ROW)
    good = "950.0,3,gaming,true,12"
    (tmp_path / "rows.csv").write_text(
        "\n".join(
            [
                header,
                good,  # line 2
                "abc,3,gaming,true,12",  # 3: not a number
                "10.5,,gaming,false,400",  # 4: a required column empty
                "10.5,4,gaming,maybe,400",  # 5: not a boolean
                "10.5,4,gaming,false,400,surplus",  # 6: more fields than the header
                "12.0,4,grocery,false,900",  # 7
            ]
        )
        + "\n"
    )
    result = score(python, tmp_path, "rows.csv", "-o", "answers.csv")
    assert result.returncode == 1, result.stderr
    assert "2 of 6 rows scored" in result.stderr
    errors = [json.loads(line) for line in (tmp_path / "answers.csv.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [3, 4, 5, 6]
    assert errors[0]["error"] == "line 3: 'amount' must be a number, got a string"
    assert "required and missing" in errors[1]["error"] and "must be true or false" in errors[2]["error"]
    answers = (tmp_path / "answers.csv").read_text().splitlines()
    assert answers[0] == "line,prediction,probability"
    assert [a.split(",")[0] for a in answers[1:]] == ["2", "7"]

    (tmp_path / "rows.jsonl").write_text(json.dumps(FRAUD_ROW) + "\n\n{not json\n")
    result = score(python, tmp_path, "rows.jsonl", "-o", "answers.jsonl")
    assert result.returncode == 1
    assert json.loads((tmp_path / "answers.jsonl").read_text())["line"] == 1
    error = json.loads((tmp_path / "answers.jsonl.errors.jsonl").read_text())
    assert error["line"] == 3 and "not JSON" in error["error"]


def test_score_cli_all_good_exits_0_and_reads_parquet(python: Path, tmp_path: Path) -> None:
    rows = [FRAUD_ROW, {**FRAUD_ROW, "amount": 3.5, "is_foreign": False}] * 3
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score(python, tmp_path, "rows.jsonl", "-o", "answers.parquet").returncode == 0
    assert score(python, tmp_path, "answers.parquet", "-o", "again.csv").returncode == 1  # not features
    convert = run_py(
        python,
        """
        import json
        import pandas as pd
        pd.read_json("rows.jsonl", lines=True).to_parquet("rows.parquet")
        print(json.dumps(pd.read_parquet("answers.parquet").to_dict(orient="records")))
        """,
        tmp_path,
    )
    assert convert.returncode == 0, convert.stderr
    from_jsonl = json.loads(convert.stdout)
    assert [a["line"] for a in from_jsonl] == [1, 2, 3, 4, 5, 6]
    assert score(python, tmp_path, "rows.parquet", "-o", "answers.jsonl").returncode == 0
    from_parquet = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [(a["prediction"], a["probability"]) for a in from_parquet] == [
        (a["prediction"], a["probability"]) for a in from_jsonl
    ]
    assert not (tmp_path / "answers.jsonl.errors.jsonl").exists()
    unknown = score(python, tmp_path, "rows.jsonl", "-o", "answers.xlsx")
    assert unknown.returncode == 2 and "unknown format" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_mypy_checks_callers_against_the_features_typeddict(python: Path, tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        "from fraud_detector import Features, model\n"
        f"row: Features = {FRAUD_ROW!r}\n"
        "answer: dict[str, object] = model.predict(row)\n"
    )
    (tmp_path / "bad.py").write_text(
        "from fraud_detector import Features, model\n"
        "row: Features = {'amount': 'a lot', 'hour': 3, 'merchant_category': 'gaming', "
        "'is_foreign': True, 'acount_age_days': 12}\n"
        "model.predict({'amount': 'a lot'})\n"
    )
    mypy = [str(python), "-m", "mypy", "--strict", "--no-incremental"]
    good = subprocess.run([*mypy, "good.py"], capture_output=True, text=True, cwd=tmp_path)
    assert good.returncode == 0, good.stdout
    bad = subprocess.run([*mypy, "bad.py"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1
    assert 'TypedDict item "amount" has type "float"' in bad.stdout, bad.stdout
    assert '"acount_age_days"' in bad.stdout and 'Argument 1 to "predict"' in bad.stdout, bad.stdout


def test_an_embedded_package_is_not_served(artifact: Path) -> None:
    served = run_cli("serve", str(artifact))
    assert served.code == 2 and "not as a service" in served.output and "Traceback" not in served.output
    remote = run_cli("smoke-test", str(artifact), "--url", "http://127.0.0.1:9")
    assert remote.code == 2 and "not a service" in remote.output


HOSTILE = ['a"b', 'x"""; import os #', "line\nbreak", "class", "{{ name }}", "ünï"]


def test_hostile_column_and_model_names_render_to_valid_python_and_toml(tmp_path: Path) -> None:
    """Registry names reach __init__.py (the Features TypedDict) and pyproject.toml only escaped."""
    import ast

    from deployctl.expect import Expectations
    from deployctl.generate import template_context
    from deployctl.model import Column, ResolvedModel
    from deployctl.render import render_layers
    from deployctl.targets import get as get_target

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    columns = [Column(name, "double") for name in HOSTILE] + [Column("opt", "string", required=False)]
    model = ResolvedModel(
        uri="models:/m@p",
        name='evil"""\n',
        version="run-0123abcd",
        run_id="0123abcd",
        flavor="sklearn",
        columns=columns,
        example_rows=[],
        requirements=["numpy==2.4.6"],
        local_path=Path("model"),
        loader={"kind": "sklearn", "file": "model.skops", "format": "skops", "trusted_types": []},
    )
    target = get_target("embedded")
    context = template_context(
        target, model, Expectations("regression", None, "float"), "evil", {"engine": "native"}
    )
    render_layers(target.layers, context, tmp_path)
    tree = ast.parse((tmp_path / "package" / "__init__.py").read_text())
    typed = next(n for n in ast.walk(tree) if isinstance(n, ast.Dict))
    assert [ast.literal_eval(k) for k in typed.keys if k is not None] == [*HOSTILE, "opt"]
    pyproject = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == "0+run.0123abcd"
    assert pyproject["project"]["description"] == 'Model evil"""\n version run-0123abcd, embedded (deployctl)'
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["sources"]["package"] == "evil"


def test_versions_and_package_names() -> None:
    assert package_version("3") == "3"
    assert package_version("run-0123abcd") == "0+run.0123abcd"
    assert package_version("local") == "0+local"
    assert import_name("fraud-detector") == "fraud_detector"
    from packaging.version import Version

    assert str(Version(package_version("run-0123abcd"))) == "0+run.0123abcd"


def test_a_name_that_is_no_python_package_is_refused(registry: Registry, tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    result = run_cli("generate", "-m", FRAUD, "-t", "embedded", "-o", out, "--name", "3d", env=registry.env())
    assert result.code == 2 and "cannot be a Python package name" in result.output
    assert "Traceback" not in result.output


def test_the_readme_example_runs_as_written(artifact: Path, python: Path, tmp_path: Path) -> None:
    readme = (artifact / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    assert blocks, readme
    for block in blocks:  # each as written, then what it computed
        ran = run_py(python, block + "\nprint(repr(answer))\n", tmp_path)
        assert ran.returncode == 0, f"{block}\n{ran.stderr}"
        assert "'prediction'" in ran.stdout, ran.stdout
