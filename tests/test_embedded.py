"""embedded end to end: generate and build a wheel through the real CLI, smoke-test it (a fresh
venv, offline), then install it into a venv of our own and use it as an application would: its
API, its batch-scoring CLI on good and bad rows (CSV, JSON Lines, Parquet), on hostile files and
paths (its input as its output, BOMs, bytes that are not UTF-8, fields over the csv limit, deep
JSON; and fuzzed files), and mypy on callers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FRAUD_ROW, Registry, readme_python_block, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        import gc
        assert gc.get_freeze_count() == 0  # the user's process: its collector left as it was
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


# -- the score CLI on hostile files and paths ----------------------------------------------------

GOOD_CSV_ROW = "950.0,3,gaming,true,12"


def csv_file(path: Path, lines: list[str], prefix: bytes = b"") -> bytes:
    content = prefix + ("\n".join([",".join(FRAUD_ROW), *lines]) + "\n").encode()
    path.write_bytes(content)
    return content


def one_paragraph_usage_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n\n") == 0, result.stderr


def test_score_never_destroys_its_input_nor_overwrites_without_force(python: Path, tmp_path: Path) -> None:
    """`score X.csv -o X.csv` emptied X.csv on main (exit 0); an existing output or errors file was
    overwritten; --chunk-rows 0 was accepted; a missing folder or a folder as output were tracebacks
    with exit 1 (the status of "rows failed")."""
    source = tmp_path / "rows.csv"
    content = csv_file(source, [GOOD_CSV_ROW] * 3)
    (tmp_path / "sub").mkdir()
    for same in ("rows.csv", "./sub/../rows.csv", str(source)):
        for extra in ([], ["--force"]):
            one_paragraph_usage_error(score(python, tmp_path, "rows.csv", "-o", same, *extra), "is the input")
    assert source.read_bytes() == content

    answers = tmp_path / "answers.csv"
    answers.write_text("mine\n")
    one_paragraph_usage_error(score(python, tmp_path, "rows.csv", "-o", "answers.csv"), "pass --force")
    assert answers.read_text() == "mine\n"
    assert score(python, tmp_path, "rows.csv", "-o", "answers.csv", "--force").returncode == 0
    assert answers.read_text().splitlines()[0] == "line,prediction,probability"
    errors = tmp_path / "other.csv.errors.jsonl"
    errors.write_text("mine\n")
    one_paragraph_usage_error(score(python, tmp_path, "rows.csv", "-o", "other.csv"), "pass --force")
    assert errors.read_text() == "mine\n" and not (tmp_path / "other.csv").exists()
    assert score(python, tmp_path, "rows.csv", "-o", "other.csv", "--force").returncode == 0
    assert not errors.exists()  # --force, no bad row: no stale errors file left either

    for rows in ("0", "-1", "many"):
        one_paragraph_usage_error(
            score(python, tmp_path, "rows.csv", "-o", "x.csv", "--chunk-rows", rows), rows
        )
    one_paragraph_usage_error(score(python, tmp_path, "rows.csv", "-o", "missing/x.csv"), "does not exist")
    (tmp_path / "folder.csv").mkdir()
    one_paragraph_usage_error(score(python, tmp_path, "rows.csv", "-o", "folder.csv"), "is a folder")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers and source.read_bytes() == content, leftovers


def test_score_reads_hostile_files_row_by_row(python: Path, tmp_path: Path) -> None:
    """A BOM is read; a byte that is not UTF-8, a field over the csv module's limit, a malformed or
    unterminated quote, a JSON line nested 100,000 deep, each fail their own row with its line
    number (on main: tracebacks, exit 1, the chunk in flight lost, or the rest of the file silently
    swallowed); every other row is scored."""
    csv_file(tmp_path / "bom.csv", [GOOD_CSV_ROW] * 3, prefix=b"\xef\xbb\xbf")
    result = score(python, tmp_path, "bom.csv", "-o", "bom-answers.csv")
    assert result.returncode == 0 and "3 of 3 rows scored" in result.stderr, result.stderr

    lines = [GOOD_CSV_ROW] * 10_001
    lines[5000] = "950.0,3,gam\xffing,true,12"  # line 5002
    lines[7000] = "950.0,3," + "g" * 140_000 + ",true,12"  # line 7002: over the 131,072 limit
    lines[8000] = '950.0,3,"gaming"x,true,12'  # line 8002: text after a closing quote
    lines[10_000] = '950.0,3,"gaming,true,12'  # line 10002: a quote that never closes
    (tmp_path / "big.csv").write_bytes(("\n".join([",".join(FRAUD_ROW), *lines]) + "\n").encode("latin-1"))
    result = score(python, tmp_path, "big.csv", "-o", "big-answers.csv")
    assert result.returncode == 1 and "9997 of 10001 rows scored" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    errors = [json.loads(e) for e in (tmp_path / "big-answers.csv.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [5002, 7002, 8002, 10002], errors
    assert "not UTF-8: byte 0xff" in errors[0]["error"]
    assert "field larger than field limit" in errors[1]["error"]
    assert "unexpected end of data" in errors[3]["error"]
    answered = [int(a.split(",")[0]) for a in (tmp_path / "big-answers.csv").read_text().splitlines()[1:]]
    assert len(answered) == 9997 and answered[-1] == 10001 and 5002 not in answered

    good = json.dumps(FRAUD_ROW)
    (tmp_path / "rows.jsonl").write_bytes(
        b"\xef\xbb\xbf" + "\n".join([good, "[" * 100_000, good, '{"amount": "\xff"}', good]).encode("latin-1")
    )
    result = score(python, tmp_path, "rows.jsonl", "-o", "answers.jsonl")
    assert result.returncode == 1 and "3 of 5 rows scored" in result.stderr, result.stderr
    errors = [json.loads(e) for e in (tmp_path / "answers.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 4] and "not UTF-8" in errors[1]["error"], errors
    answered = [json.loads(a)["line"] for a in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert answered == [1, 3, 5]


CSV_PIECES = st.sampled_from(
    [GOOD_CSV_ROW, "abc,3,gaming,true,12", '"', '""', '"a"b', ",", "\r", "\x00", "\xff", "\ufeff", "\ud800",
     "\u2028", "x" * 140_000, "[" * 1000, "1e999", "nan", ";", "\t"]
)  # fmt: skip
JSONL_PIECES = st.sampled_from(
    [json.dumps(FRAUD_ROW), "[" * 100_000, "{" * 5000, '{"amount": "\ud800"}', "\ufeff", "\xff", "{}", "null",
     "[]", '"', json.dumps({**FRAUD_ROW, "amount": 1e308}), "NaN", "\x00", "\r"]
)  # fmt: skip


@st.composite
def hostile_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, file content): lines glued from hostile pieces, encoded as a broken exporter would."""
    kind = draw(st.sampled_from(["csv", "jsonl"]))
    pieces = CSV_PIECES if kind == "csv" else JSONL_PIECES
    lines = draw(st.lists(st.lists(pieces | st.text(max_size=30), max_size=4).map("".join), max_size=12))
    if kind == "csv" and draw(st.booleans()):
        lines.insert(0, ",".join(FRAUD_ROW))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]))
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))  # latin-1: a byte that is not UTF-8
    return kind, prefix + text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")


def test_fuzzed_input_files_end_in_0_1_or_2_without_a_traceback_and_stay_intact(
    python: Path, tmp_path: Path
) -> None:
    """Hypothesis (bounded: a few examples, no deadline): whatever the file holds, the installed CLI
    exits 0, 1 or 2 without a traceback, writes its errors with line numbers, and the input and
    a path given as both input and output keep their bytes."""
    runs = iter(range(1_000_000))

    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=hostile_inputs(), same_output=st.booleans())
    def ends_cleanly(case: tuple[str, bytes], same_output: bool) -> None:
        kind, content = case
        work = tmp_path / str(next(runs))
        work.mkdir()
        (work / f"in.{kind}").write_bytes(content)
        output = f"in.{kind}" if same_output else f"out.{kind}"
        result = score(python, work, f"in.{kind}", "-o", output)
        assert result.returncode in (0, 1, 2) and "Traceback" not in result.stderr, result.stderr
        assert (work / f"in.{kind}").read_bytes() == content
        if same_output:
            assert result.returncode == 2
        errors = work / f"{output}.errors.jsonl"
        assert errors.exists() == (result.returncode == 1), result.stderr
        if errors.exists():
            assert all(isinstance(json.loads(e)["line"], int) for e in errors.read_text().splitlines())

    ends_cleanly()


def test_the_readme_example_runs_as_written(artifact: Path, python: Path, tmp_path: Path) -> None:
    readme = (artifact / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    assert blocks, readme
    for block in blocks:  # each as written, then what it computed
        ran = run_py(python, block + "\nprint(repr(answer))\n", tmp_path)
        assert ran.returncode == 0, f"{block}\n{ran.stderr}"
        assert "'prediction'" in ran.stdout, ran.stdout


def test_the_project_readme_embedding_example_runs_as_written(python: Path, tmp_path: Path) -> None:
    """README.md's "Embedding the model in your application" example, as written, where the wheel
    is installed; then what its comments say it answers."""
    block = readme_python_block("from fraud_detector import Features, ValidationError, model")
    comments_say = """
assert model.predict(row)["prediction"] == 1 and model.predict(row)["model_version"] == "1"
assert set(model.predict_batch([row])) == {"predictions", "probabilities", "model_version"}
frame = model.predict_frame(df)
assert list(frame.index) == list(df.index) and list(frame.columns) == ["prediction", "probability"]
assert [c["name"] for c in model.signature["columns"]] == list(Features.__annotations__)
"""
    ran = run_py(python, block + comments_say, tmp_path)
    assert ran.returncode == 0, f"{block}\n{ran.stderr}"
    assert ran.stdout == "features: 'amount' must be a number, got a string\n", ran.stdout
