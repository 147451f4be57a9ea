"""Params, multi-output models and tensor signatures, served.

The registry (tests/make_tensor_registry.py: a params pyfunc, multi-output pyfuncs, a tensor pyfunc
and a PyTorch model) is built once per session in a subprocess. Each model is generated, built and
smoke-tested through the CLI on fastapi and flask; answers are compared with
mlflow.pyfunc.load_model(...).predict in this process, and /invocations with a real
`mlflow models serve` of the same model.

The PyTorch model is logged, recorded at generate, loaded and served by MLflow through another
interpreter, one that has torch (conftest.torch_python): with torch importable here, MLflow would
write torch into the requirements of every other model the tests log.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from conftest import ROOT, Registry, build_registry, run_cli, torch_python
from test_invocations import assert_same
from test_rest import serve

from deployctl.process import free_port

pytestmark = pytest.mark.slow
ROW = {"a": 1.0, "b": 3}
ROWS = [ROW, {"a": 2.5, "b": 4}, {"a": -3.0, "b": 5}]
PARAMS = {"factor": 2.0, "offset": 0, "mode": "sum", "clip": False, "weights": [1.0, 1.0]}
COLUMN_MODELS = ["scaler_params", "multi_output", "dict_output"]
TARGETS = ["fastapi", "flask"]


@pytest.fixture(scope="session")
def tensor_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry("make_tensor_registry.py", tmp_path_factory.mktemp("tensor-registry"))


TORCH_MODEL = "torch_linear"


@pytest.fixture(scope="session")
def torch_registry(tensor_registry: Registry) -> Registry:
    """The tensor registry with the PyTorch model logged into it (by the interpreter with torch)."""
    python = torch_python()
    added = build_registry("make_tensor_registry.py", tensor_registry.root, "--torch", python=python)
    tensor_registry.run_ids.update(added.run_ids)
    return tensor_registry


def python_for(name: str) -> str:
    """The interpreter that can load the model: the one with torch for the PyTorch model."""
    import sys

    return torch_python() if name == TORCH_MODEL else sys.executable


@pytest.fixture(scope="session")
def built(
    tensor_registry: Registry, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    """generate + build through the CLI, once per (model, target)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(name: str, target: str) -> Path:
        if (name, target) not in cache:
            registry = request.getfixturevalue("torch_registry") if name == TORCH_MODEL else tensor_registry
            out = tmp_path_factory.mktemp(f"{name}-{target}") / "artifact"
            uri = f"models:/{name}/1"
            cmd = ("generate", "-m", uri, "-t", target, "-o", str(out))
            result = run_cli(*cmd, env=registry.env(), python=python_for(name))
            assert result.code == 0, result.output
            result = run_cli("build", str(out))
            assert result.code == 0, result.output
            cache[(name, target)] = out
        return cache[(name, target)]

    return make


@pytest.fixture(scope="session")
def service(built: Callable[[str, str], Path]) -> Iterator[Callable[[str, str], str]]:
    """A running service (`deployctl serve`) per (model, target), started once."""
    started: dict[tuple[str, str], tuple[subprocess.Popen[bytes], str]] = {}

    def get(name: str, target: str) -> str:
        if (name, target) not in started:
            started[name, target] = serve(built(name, target))
        return started[name, target][1]

    yield get
    for proc, _ in started.values():
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@pytest.fixture(scope="session")
def mlflow_server(
    tensor_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """`mlflow models serve --env-manager local` per model, started once (its output in a log)."""
    logs = tmp_path_factory.mktemp("mlflow-serve")
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def get(name: str) -> str:
        if name not in started:
            port = free_port()
            cmd = [python_for(name), "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/1"]
            cmd += ["--env-manager", "local"]
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [*cmd, "-p", str(port), "-h", "127.0.0.1"],
                    env=serve_env(tensor_registry, python_for(name), logs),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            url = f"http://127.0.0.1:{port}"
            started[name] = (proc, url)
            wait_ready(f"{url}/ping", proc, log)
        return started[name][1]

    yield get
    for proc, _ in started.values():
        proc.terminate()
        proc.wait(30)


def serve_env(registry: Registry, python: str, shims: Path) -> dict[str, str]:
    """`mlflow models serve` runs `uvicorn` from PATH: for the PyTorch model, one that runs in the
    interpreter with torch (a shim first on PATH)."""
    import sys

    env = registry.env()
    if python != sys.executable:
        shim = shims / "bin" / "uvicorn"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec "{python}" -m uvicorn "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    for _ in range(600):
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
        output = log.read_text(errors="replace")[-3000:] if log else ""
        assert proc.poll() is None, f"the server exited:\n{output}"
    raise AssertionError(f"{url} never answered")


@pytest.fixture(scope="session")
def pyfunc(built: Callable[[str, str], Path]) -> Callable[[str], Any]:
    """mlflow.pyfunc.load_model of the model files an artifact holds, in this process, once per
    model. (Not through the registry: MLflow's set_tracking_uri/set_registry_uri would leak into
    os.environ, hence into the other tests' subprocesses.) Not for the PyTorch model: see
    `reference_predict`."""
    import mlflow.pyfunc

    cache: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in cache:
            cache[name] = mlflow.pyfunc.load_model(str(built(name, "fastapi") / "model"))
        return cache[name]

    return load


def per_row(values: Any) -> list[Any]:
    """The documented /predict_batch shape of a model's output (README: one value, or an object of
    outputs, per row), written here independently of the runtime's code."""
    import numpy as np
    import pandas as pd

    if isinstance(values, pd.DataFrame):
        return values.to_dict(orient="records") if values.shape[1] > 1 else values.iloc[:, 0].tolist()
    if isinstance(values, dict):
        return [dict(zip(values, row)) for row in zip(*(np.asarray(v).tolist() for v in values.values()))]
    return np.asarray(values).tolist()


# -- params -----------------------------------------------------------------------------------------


def test_manifest_records_the_param_schema(built: Callable[[str, str], Path]) -> None:
    manifest = json.loads((built("scaler_params", "fastapi") / "deployctl.json").read_text())
    assert manifest["model"]["params"] == [
        {"name": "factor", "type": "double", "shape": None, "default": 2.0},
        {"name": "offset", "type": "long", "shape": None, "default": 0},
        {"name": "mode", "type": "string", "shape": None, "default": "sum"},
        {"name": "clip", "type": "boolean", "shape": None, "default": False},
        {"name": "weights", "type": "double", "shape": [-1], "default": [1.0, 1.0]},
    ]


GOOD_PARAMS = [
    {},
    {"factor": 3},
    {"factor": 0.5, "offset": 7},
    {"mode": "max", "weights": [2, 0.5]},
    {"clip": True, "factor": -1.0},
    {"weights": [1.0, 1.0], "offset": -2},
]


@pytest.mark.parametrize("target", TARGETS)
def test_params_reach_the_model_on_predict(
    service: Callable[[str, str], str], pyfunc: Callable[[str], Any], target: str
) -> None:
    import pandas as pd

    url = service("scaler_params", target)
    model = pyfunc("scaler_params")
    for params in GOOD_PARAMS:
        expected = model.predict(pd.DataFrame(ROWS), params=params).tolist()
        batch = httpx.post(f"{url}/predict_batch", json={"instances": ROWS, "params": params}).json()
        assert batch["predictions"] == expected, params
        one = httpx.post(f"{url}/predict", json={"features": ROWS[1], "params": params}).json()
        assert one["prediction"] == expected[1], params
    # params change the answer: a test that would pass with params ignored is no test
    plain = httpx.post(f"{url}/predict", json={"features": ROW}).json()["prediction"]
    assert (
        plain
        != httpx.post(f"{url}/predict", json={"features": ROW, "params": {"factor": 5}}).json()["prediction"]
    )


BAD_PARAMS = [
    ({"factor": "2"}, "factor"),
    ({"factor": True}, "factor"),
    ({"offset": 1.5}, "offset"),
    ({"mode": 3}, "mode"),
    ({"clip": 1}, "clip"),
    ({"clip": None}, "clip"),
    ({"weights": 2.0}, "weights"),
    ({"weights": [[1.0, 2.0]]}, "weights"),
    ({"weights": [1.0, "x"]}, "weights"),
    ({"nope": 1}, "nope"),
    ([1, 2], "params"),
    ("factor", "params"),
]


@pytest.mark.parametrize("target", TARGETS)
def test_bad_params_are_a_400_naming_the_param(service: Callable[[str, str], str], target: str) -> None:
    url = service("scaler_params", target)
    for params, name in BAD_PARAMS:
        for path, body in (("/predict", {"features": ROW}), ("/predict_batch", {"instances": [ROW]})):
            answer = httpx.post(f"{url}{path}", json={**body, "params": params})
            assert answer.status_code == 400, (path, params, answer.text)
            assert name in answer.json()["error"], (path, params, answer.text)
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_model_without_params_refuses_params_on_predict(service: Callable[[str, str], str]) -> None:
    url = service("multi_output", "fastapi")
    answer = httpx.post(f"{url}/predict", json={"features": ROW, "params": {"factor": 2}})
    assert answer.status_code == 400 and "factor" in answer.json()["error"]
    assert httpx.post(f"{url}/predict", json={"features": ROW, "params": {}}).status_code == 200


def params_corpus() -> list[tuple[str, bytes]]:
    def body(params: Any = ..., rows: Any = None) -> bytes:
        data: dict[str, Any] = {"dataframe_records": rows or [ROW, ROWS[2]]}
        if params is not ...:
            data["params"] = params
        return json.dumps(data).encode()

    cases = [("none", body()), ("null", body(None))]
    cases += [(f"good-{i}", body(p)) for i, p in enumerate(GOOD_PARAMS)]
    cases += [(f"bad-{i}", body(p)) for i, (p, _) in enumerate(BAD_PARAMS)]
    cases += [
        ("unknown_ignored", body({"nope": 1, "factor": 4})),
        ("big_long", body({"offset": 2**40})),
        ("nan_factor", body().replace(b"]}", b'], "params": {"factor": NaN}}')),
        ("null_factor_model_fails", body({"factor": None})),
        ("bad_input_and_bad_params", body({"factor": "x"}, rows=[{"a": 1.0}])),
        (
            "inputs_with_params",
            json.dumps({"inputs": {"a": [1.0], "b": [2]}, "params": {"mode": "max"}}).encode(),
        ),
        (
            "split_with_params",
            json.dumps(
                {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2]]}, "params": {"offset": 3}}
            ).encode(),
        ),
    ]
    return cases


@pytest.mark.parametrize("target", TARGETS)
def test_params_on_invocations_as_mlflow_models_serve(
    service: Callable[[str, str], str], mlflow_server: Callable[[str], str], target: str
) -> None:
    ours, theirs = service("scaler_params", target), mlflow_server("scaler_params")
    headers = {"content-type": "application/json"}
    for case, body in params_corpus():
        mine = httpx.post(f"{ours}/invocations", content=body, headers=headers)
        reference = httpx.post(f"{theirs}/invocations", content=body, headers=headers)
        assert_same(mine, reference, case)


def test_params_are_documented_in_the_openapi(service: Callable[[str, str], str]) -> None:
    spec = httpx.get(f"{service('scaler_params', 'fastapi')}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    params = schemas["Params"]["properties"]
    assert {name: p["default"] for name, p in params.items()} == PARAMS
    assert params["weights"]["type"] == "array" and params["offset"]["type"] == "integer"
    for request in ("PredictRequest", "BatchRequest"):
        assert "params" in schemas[request]["properties"]


# -- multi-output -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", COLUMN_MODELS)
def test_generated_built_smoke_tested_and_answering_as_in_process(
    built: Callable[[str, str], Path],
    service: Callable[[str, str], str],
    pyfunc: Callable[[str], Any],
    name: str,
    target: str,
) -> None:
    import pandas as pd

    artifact = built(name, target)
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ok"]
    url = service(name, target)
    expected = per_row(pyfunc(name).predict(pd.DataFrame(ROWS)))
    got = httpx.post(f"{url}/predict_batch", json={"instances": ROWS}).json()
    assert got["predictions"] == expected
    one = httpx.post(f"{url}/predict", json={"features": ROWS[2]}).json()
    assert one["prediction"] == expected[2]


@pytest.mark.parametrize("name", ["multi_output", "dict_output"])
def test_multi_output_on_invocations_as_mlflow_models_serve(
    service: Callable[[str, str], str], mlflow_server: Callable[[str], str], name: str
) -> None:
    ours, theirs = service(name, "fastapi"), mlflow_server(name)
    for data in (
        {"dataframe_records": ROWS},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2]]}},
    ):
        mine = httpx.post(f"{ours}/invocations", json=data)
        reference = httpx.post(f"{theirs}/invocations", json=data)
        assert_same(mine, reference, name)
        assert mine.status_code == 200


def test_the_recorder_uses_the_runtimes_output_code() -> None:
    """One function turns predictions into JSON: expect.py loads the runtime's own file."""
    from deployctl.expect import runtime_module

    assert Path(runtime_module("outputs").__file__) == ROOT / "templates" / "runtime" / "app" / "outputs.py"


# -- tensors ------------------------------------------------------------------------------------------

TENSOR_MODELS = ["tensor_sum", "torch_linear"]
EXAMPLES = [[0.1, 0.2, 0.3], [1, 2, 3], [-1.5, 0.0, 2.25]]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_tensor_model_generated_built_smoke_tested_and_answering_as_in_process(
    built: Callable[[str, str], Path],
    service: Callable[[str, str], str],
    pyfunc: Callable[[str], Any],
    name: str,
    target: str,
) -> None:
    import numpy as np

    artifact = built(name, target)
    manifest = json.loads((artifact / "deployctl.json").read_text())
    assert manifest["model"]["tensor"]["shape"] == [-1, 3] and manifest["model"]["columns"] == []
    result = run_cli("smoke-test", str(artifact), "--json")
    assert result.code == 0, result.output
    url = service(name, target)
    dtype = manifest["model"]["tensor"]["dtype"]
    expected = per_row(reference_predict(name, pyfunc, built, np.asarray(EXAMPLES, dtype=dtype)))
    got = httpx.post(f"{url}/predict_batch", json={"instances": EXAMPLES}).json()
    assert got["predictions"] == expected
    one = httpx.post(f"{url}/predict", json={"features": EXAMPLES[2]}).json()
    assert one["prediction"] == expected[2]


def reference_predict(
    name: str, pyfunc: Callable[[str], Any], built: Callable[[str, str], Path], x: Any
) -> Any:
    """mlflow.pyfunc.load_model(...).predict(x): in this process, or for the PyTorch model in the
    interpreter with torch (a subprocess that prints the answer as JSON)."""
    import numpy as np

    if name != TORCH_MODEL:
        return pyfunc(name).predict(x)
    code = (
        "import json, sys, numpy as np, mlflow.pyfunc\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "x = np.asarray(json.loads(sys.argv[2]), dtype=sys.argv[3])\n"
        "print(json.dumps(np.asarray(model.predict(x)).tolist()))\n"
    )
    model_dir = str(built(name, "fastapi") / "model")
    args = [torch_python(), "-c", code, model_dir, json.dumps(x.tolist()), str(x.dtype)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return np.asarray(json.loads(out.strip().splitlines()[-1]), dtype=x.dtype)


BAD_TENSORS = [
    ([0.1, "x", 0.3], "features[1]"),
    ([0.1, True, 0.3], "features[1]"),
    ([0.1, None, 0.3], "features[1]"),
    ([0.1, 0.2], "features"),
    ([[0.1, 0.2, 0.3]], "features"),
    (0.5, "features"),
    ([0.1, [0.2], 0.3], "features[1]"),
]


@pytest.mark.parametrize("target", TARGETS)
def test_bad_tensors_are_a_400_with_the_offending_index(
    service: Callable[[str, str], str], target: str
) -> None:
    url = service("torch_linear", target)
    for features, where in BAD_TENSORS:
        answer = httpx.post(f"{url}/predict", json={"features": features})
        assert answer.status_code == 400, (features, answer.text)
        assert answer.json()["error"].startswith(f"{where}:"), (features, answer.text)
    answer = httpx.post(f"{url}/predict_batch", json={"instances": [EXAMPLES[0], [1.0, 2.0]]})
    assert answer.status_code == 400 and answer.json()["error"].startswith("instances[1]:"), answer.text
    answer = httpx.post(f"{url}/predict", json={"features": [1.0, 1e300, 0.0]})  # beyond float32
    assert answer.status_code == 400 and answer.json()["error"].startswith("features[1]:"), answer.text
    assert httpx.get(f"{url}/health").status_code == 200


def test_named_tensors_are_refused_at_generate_saying_what_to_log(
    tensor_registry: Registry, tmp_path: Path
) -> None:
    out = tmp_path / "named"
    result = run_cli(
        "generate",
        "-m",
        "models:/named_tensors/1",
        "-t",
        "fastapi",
        "-o",
        str(out),
        env=tensor_registry.env(),
    )
    assert result.code != 0 and "Traceback" not in result.output, result.output
    assert "2 named tensors" in result.output and "one unnamed tensor" in result.output, result.output
    assert not (out / "deployctl.json").exists()


def tensor_corpus() -> list[tuple[str, str, bytes]]:
    def j(obj: object) -> bytes:
        return json.dumps(obj).encode()

    r = EXAMPLES[0]
    cases = [
        ("instances", {"instances": [r, r]}),
        ("inputs", {"inputs": [r, r]}),
        ("inputs_ints", {"inputs": [[1, 2, 3]]}),
        ("inputs_str_number", {"inputs": [["1.5", 2, 3]]}),
        ("inputs_bool", {"inputs": [[True, 2, 3]]}),
        ("inputs_null", {"inputs": [[None, 2, 3]]}),
        ("inputs_short", {"inputs": [[1.0, 2.0]]}),
        ("inputs_long", {"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
        ("inputs_ragged", {"inputs": [r, [1.0]]}),
        ("inputs_flat", {"inputs": r}),
        ("inputs_3d", {"inputs": [[r]]}),
        ("inputs_named", {"inputs": {"x": [r]}}),
        ("inputs_scalar", {"inputs": 3}),
        ("inputs_empty", {"inputs": []}),
        ("inputs_word", {"inputs": [["abc", 2, 3]]}),
        ("instances_records", {"instances": [{"a": 1}]}),
        ("records", {"dataframe_records": [{"0": 1.0, "1": 2.0, "2": 3.0}]}),
        ("split", {"dataframe_split": {"data": [r, r]}}),
        ("split_columns", {"dataframe_split": {"columns": ["a", "b", "c"], "data": [r]}}),
        ("split_two_columns", {"dataframe_split": {"data": [[1.0, 2.0]]}}),
        ("with_params", {"inputs": [r], "params": {"x": 1}}),
        ("no_key", {}),
    ]
    out = [(case, "application/json", j(body)) for case, body in cases]
    out.append(("nan", "application/json", b'{"inputs": [[NaN, 1.0, 2.0]]}'))
    out.append(("csv", "text/csv", b"a,b,c\n1,2,3\n"))
    return out


@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_tensors_on_invocations_as_mlflow_models_serve(
    service: Callable[[str, str], str], mlflow_server: Callable[[str], str], name: str
) -> None:
    ours, theirs = service(name, "fastapi"), mlflow_server(name)
    for case, content_type, body in tensor_corpus():
        headers = {"content-type": content_type}
        mine = httpx.post(f"{ours}/invocations", content=body, headers=headers)
        reference = httpx.post(f"{theirs}/invocations", content=body, headers=headers)
        assert_same(mine, reference, case)


def test_pytorch_artifact_runs_a_cpu_torch(built: Callable[[str, str], Path]) -> None:
    """The artifact's venv has the CPU build of torch (no CUDA libraries pulled in)."""
    artifact = built("torch_linear", "fastapi")
    python = artifact / ".venv" / "bin" / "python"
    code = "import torch; print(torch.__version__, torch.version.cuda)"
    version, cuda = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert version.startswith("2.13.0") and cuda == "None", version


# -- in-process: the runtime's checks against MLflow's own code ----------------------------------------


def runtime_module(name: str) -> ModuleType:
    from test_runtime import runtime  # the runtime package, imported under another name

    return importlib.import_module(f"{runtime.__name__.rsplit('.', 1)[0]}.{name}")


def test_params_are_checked_as_mlflow_checks_them() -> None:
    """Every value of a corpus, for every param type: accepted (with the same value and type) or
    refused by the runtime exactly when MLflow's _enforce_params_schema accepts or refuses it."""
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_params_schema
    from mlflow.types.schema import ParamSchema, ParamSpec

    schema = ParamSchema(
        [
            ParamSpec("factor", "double", 2.0),
            ParamSpec("f32", "float", 1.0),
            ParamSpec("offset", "long", 0),
            ParamSpec("n", "integer", 1),
            ParamSpec("mode", "string", "sum"),
            ParamSpec("clip", "boolean", False),
            ParamSpec("weights", "double", [1.0, 1.0], (-1,)),
            ParamSpec("names", "string", ["a"], (-1,)),
        ]
    )
    specs = [{**s, "shape": None if s["shape"] is None else [-1]} for s in schema.to_dict()]
    params = runtime_module("params").Params(specs)
    bad_request = runtime_module("schema").BadRequest
    values = [3, -7, 3.5, 0.0, True, False, "2", "x", "", None, [1], [1, 2.5], [], ["a", "b"]]
    values += [[1, "a"], [[1.0]], {"a": 1}, 2**40, 1e308, [None], [True]]
    for spec in schema.params:
        for value in values:
            try:
                expected = repr(_enforce_params_schema({spec.name: value}, schema)[spec.name])
            except MlflowException:
                expected = "refused"
            try:
                got = repr(params.mlflow({spec.name: value})[spec.name])
            except bad_request as exc:
                assert exc.error_code == "INVALID_PARAMETER_VALUE"
                got = "refused"
            assert got == expected, (spec.name, value)
    assert params.mlflow({"unknown": 1}) == params.defaults  # MLflow ignores unknown names
    assert params.mlflow(None) == params.defaults


@pytest.mark.parametrize(
    "output",
    [
        "series",
        "frame1",
        "frame2",
        "dict2",
        "dict1",
        "array1",
        "array2",
        "array_col",
        "list",
        "strings",
    ],
)
def test_invocations_predictions_are_written_as_mlflow_writes_them(output: str) -> None:
    import io

    import numpy as np
    import pandas as pd
    from mlflow.pyfunc.scoring_server import predictions_to_json

    a = np.array([1.5, -2.0, np.nan])
    values = {
        "series": pd.Series(a, name="y"),
        "frame1": pd.DataFrame({"y": a}),
        "frame2": pd.DataFrame({"y": a, "n": [1, 2, 3]}),
        "dict2": {"y": a, "n": np.array([1, 2, 3])},
        "dict1": {"y": a},
        "array1": a,
        "array2": np.stack([a, a], axis=1).astype(np.float32),
        "array_col": a[:, None],
        "list": [1, 2.5, "x"],
        "strings": np.array(["a", "b", "c"], dtype=object),
    }[output]
    theirs = io.StringIO()
    predictions_to_json(values, theirs)
    outputs = runtime_module("outputs")
    assert json.dumps({"predictions": outputs.as_mlflow(values)}) == theirs.getvalue()
    per_row_values = outputs.per_row(values)
    assert len(per_row_values) == 3
    # the smoke test reads /invocations' shape back per row as the runtime answers /predict_batch
    assert json.dumps(outputs.from_mlflow(json.loads(theirs.getvalue())["predictions"])) == json.dumps(
        per_row_values
    )


def test_torch_becomes_the_cpu_build_on_linux() -> None:
    from deployctl.requirements import cpu_only

    assert cpu_only(["torch==2.13.0", "numpy==2.1.0"]) == [
        'torch==2.13.0+cpu; sys_platform == "linux"',
        'torch==2.13.0; sys_platform != "linux"',
        "numpy==2.1.0",
    ]
    assert cpu_only(["torch>=2.1"]) == ["torch>=2.1"]  # not a pin: left alone
    assert cpu_only(["torch==2.13.0+cpu"]) == ["torch==2.13.0+cpu"]


# -- Open Inference Protocol v2 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TENSOR_MODELS, "multi_output"])
def test_tritonclient_infers_tensor_and_multi_output_models_as_predict_batch(
    service: Callable[[str, str], str], built: Callable[[str, str], Path], name: str
) -> None:
    """A tensor model takes one input, input-0, of its signature's shape; a model of several
    outputs answers a tensor per output. Both equal /predict_batch's answers."""
    import numpy as np
    import tritonclient.http as oip

    url = service(name, "fastapi")
    model = json.loads((built(name, "fastapi") / "deployctl.json").read_text())
    client = oip.InferenceServerClient(url=url.removeprefix("http://"))
    metadata = client.get_model_metadata(model["name"])
    if name in TENSOR_MODELS:
        assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [("input-0", [-1, 3])]
        x = np.asarray(EXAMPLES, dtype=model["model"]["tensor"]["dtype"])
        inputs = [oip.InferInput("input-0", list(x.shape), metadata["inputs"][0]["datatype"])]
        inputs[0].set_data_from_numpy(x, binary_data=False)
        instances: list[Any] = EXAMPLES
    else:
        inputs = []
        for column in ("a", "b"):
            values = np.asarray([row[column] for row in ROWS], dtype="float64" if column == "a" else "int64")
            tensor = oip.InferInput(column, [len(ROWS)], "FP64" if column == "a" else "INT64")
            tensor.set_data_from_numpy(values, binary_data=False)
            inputs.append(tensor)
        instances = ROWS
    batch = httpx.post(f"{url}/predict_batch", json={"instances": instances}).json()["predictions"]
    result = client.infer(model["name"], inputs)
    outputs = [o["name"] for o in metadata["outputs"]]
    if name == "multi_output":
        assert outputs == list(batch[0])
        for output in outputs:
            assert result.as_numpy(output).tolist() == [row[output] for row in batch]
    else:
        assert outputs == ["predict"]
        assert result.as_numpy("predict").tolist() == batch
    # a tensor of the wrong shape: a 400 naming the input, and the service stays up
    bad = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    answer = httpx.post(f"{url}/v2/models/{model['name']}/infer", json=bad)
    assert answer.status_code == 400 and "inputs" in answer.json()["error"], answer.text
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_micro_batches_keep_each_requests_params(built: Callable[[str, str], Path]) -> None:
    """score_together (the fastapi micro-batcher's and the kafka consumer's) scores the Calls
    without params in one model call and a Call with params alone, with its own params."""
    from test_runtime import runtime

    service = runtime.ModelService.from_artifact(built("scaler_params", "fastapi"))
    bodies = [
        {"features": ROW},
        {"features": ROW, "params": {"factor": 3.0, "offset": 1}},
        {"features": ROWS[1]},
        {"features": ROWS[2], "params": {"mode": "max"}},
    ]
    calls = [service.predict(body) for body in bodies]
    together = [
        call.answer(*scored) for call, scored in zip(calls, runtime.score_together(service.scorer, calls))
    ]
    assert together == [service.answer("/predict", body) for body in bodies]
    assert together[0]["prediction"] != together[1]["prediction"]
