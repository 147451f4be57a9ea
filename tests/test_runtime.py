"""Unit tests of the serving runtime (the package templates/runtime/app, through its facade
app/runtime.py), imported as every artifact carries it, around real scikit-learn models fitted
here. Fast: no MLflow, no server.

Every answer is checked against what the model itself gives in this process on a DataFrame, bit for
bit: the runtime may call the model another way (an array, a Pipeline split), never differently.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

RUNTIME_FILE = Path(__file__).resolve().parent.parent / "templates" / "runtime" / "app" / "runtime.py"


def _import_runtime() -> ModuleType:
    """The runtime package (templates/runtime/app) under another name than `app`, and its facade."""
    init = RUNTIME_FILE.parent / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "artifact_app", init, submodule_search_locations=[str(RUNTIME_FILE.parent)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module("artifact_app.runtime")


runtime = _import_runtime()
# The runtime silences this once per process when it scores through an array (the names were
# checked); pytest restores the warning filters around each test, so it is silenced here again.
pytestmark = pytest.mark.filterwarnings(f"ignore:{runtime.FEATURE_NAMES_WARNING}")
RNG = np.random.default_rng(0)
NUMBERS = [f"x{i}" for i in range(4)]


def columns(types: dict[str, str], optional: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"name": n, "type": t, "required": n not in optional} for n, t in types.items()]


def make_service(model: Any, cols: list[dict[str, Any]], examples: pd.DataFrame) -> Any:
    """A ModelService as an artifact would build it: the manifest's smoke cases are real rows."""
    rows = json.loads(examples.head(5).to_json(orient="records"))
    manifest = {
        "model": {"name": "m", "version": "7", "columns": cols},
        "smoke_cases": [{"row": row} for row in rows],
    }
    return runtime.ModelService(manifest, model)


def call(service: Any, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, payload = service.handle(method, path, raw, "application/json")
    return status, json.loads(payload)


def numeric_frame(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame(RNG.normal(size=(n, len(NUMBERS))), columns=NUMBERS)


# -- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary() -> tuple[Any, pd.DataFrame]:
    X = numeric_frame()
    return make_service(
        LogisticRegression().fit(X, X.x0 + X.x1 > 0), columns(dict.fromkeys(NUMBERS, "double")), X
    ), X


@pytest.fixture(scope="module")
def multiclass() -> tuple[Any, pd.DataFrame]:
    X = numeric_frame(90)
    species = np.array(["setosa", "versicolor", "virginica"])[
        (X.x0 > 0).astype(int) + (X.x1 > 0.5).astype(int)
    ]
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(X, species)
    return make_service(forest, columns(dict.fromkeys(NUMBERS, "double")), X), X


@pytest.fixture(scope="module")
def regressor() -> tuple[Any, pd.DataFrame]:
    X = pd.DataFrame({"area": RNG.uniform(30, 200, 50), "rooms": RNG.integers(1, 7, 50)})
    model = Ridge().fit(X, 3000 * X.area + 10000 * X.rooms)
    return make_service(model, columns({"area": "double", "rooms": "long"}), X), X


@pytest.fixture(scope="module")
def pipeline() -> tuple[Any, pd.DataFrame]:
    """Scaling + one-hot by column name + logistic regression: needs a DataFrame."""
    n = 80
    X = pd.DataFrame(
        {
            "amount": RNG.lognormal(3, 1, n).round(2),
            "category": RNG.choice(["food", "travel", "games"], n),
            "foreign": RNG.random(n) < 0.3,
            "age_days": RNG.integers(1, 3000, n),
        }
    )
    features = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["amount", "age_days"]),
            ("flags", "passthrough", ["foreign"]),
            ("category", OneHotEncoder(), ["category"]),
        ]
    )
    model = Pipeline([("features", features), ("classifier", LogisticRegression())])
    model.fit(X, (X.amount > 30) & (X.category != "food"))
    types = {"amount": "double", "category": "string", "foreign": "boolean", "age_days": "long"}
    return make_service(model, columns(types), X), X


# -- predictions equal the model's own, in this process --------------------------------------------


def test_binary_classifier_answers_as_sklearn(binary: tuple[Any, pd.DataFrame]) -> None:
    service, X = binary
    rows = X.iloc[10:14]
    assert service.scorer.array, "a numeric model fitted on a DataFrame should be scored through an array"
    for i in range(len(rows)):
        one = rows.iloc[[i]]
        status, answer = call(service, "/predict", {"features": one.iloc[0].tolist()})
        assert status == 200
        assert answer == {
            "prediction": service.model.predict(one).tolist()[0],
            "probability": service.model.predict_proba(one)[0, 1],
            "model_version": "7",
        }
    status, answer = call(service, "/predict_batch", {"instances": rows.to_dict(orient="records")})
    assert status == 200
    assert answer["predictions"] == service.model.predict(rows).tolist()
    assert answer["probabilities"] == service.model.predict_proba(rows)[:, 1].tolist()


def test_multiclass_with_string_labels_answers_as_sklearn(multiclass: tuple[Any, pd.DataFrame]) -> None:
    service, X = multiclass
    rows = X.iloc[20:26]
    proba = service.model.predict_proba(rows)
    status, answer = call(service, "/predict_batch", rows.values.tolist())
    assert status == 200
    assert answer["predictions"] == service.model.predict(rows).tolist()
    assert answer["probabilities"] == [dict(zip(service.model.classes_, p)) for p in proba.tolist()]
    status, answer = call(service, "/predict", {"features": rows.iloc[0].to_dict()})
    assert answer["prediction"] in {"setosa", "versicolor", "virginica"}
    assert answer["probabilities"] == dict(zip(service.model.classes_, proba[0].tolist()))


def test_regressor_answers_as_sklearn_without_probabilities(regressor: tuple[Any, pd.DataFrame]) -> None:
    service, _ = regressor
    status, answer = call(service, "/predict", {"features": {"area": 80.5, "rooms": 3}})
    want = service.model.predict(pd.DataFrame({"area": [80.5], "rooms": [3]}))[0]
    assert (status, answer) == (200, {"prediction": want, "model_version": "7"})
    status, answer = call(service, "/predict_batch", {"instances": [[80.5, 3], [120.0, 5]]})
    assert set(answer) == {"predictions", "model_version"}


def test_pipeline_with_a_string_column_answers_as_sklearn(pipeline: tuple[Any, pd.DataFrame]) -> None:
    service, X = pipeline
    rows = X.iloc[30:36]
    assert not service.scorer.array, "a ColumnTransformer selecting by name needs a DataFrame"
    records = json.loads(rows.to_json(orient="records"))
    status, answer = call(service, "/predict_batch", {"instances": records})
    assert status == 200
    assert answer["predictions"] == service.model.predict(rows).tolist()
    assert answer["probabilities"] == service.model.predict_proba(rows)[:, 1].tolist()


def test_unseen_category_is_the_inputs_fault_not_a_crash(pipeline: tuple[Any, pd.DataFrame]) -> None:
    service, X = pipeline
    row = {**json.loads(X.iloc[[0]].to_json(orient="records"))[0], "category": "casino"}
    status, answer = call(service, "/predict", {"features": row})
    assert status == 422 and "could not score" in answer["error"]


def test_columns_in_another_order_than_fitted_are_never_fed_by_position() -> None:
    """An array would give the model the columns in the wrong order, and sklearn would only warn.
    On a DataFrame sklearn refuses the order, in this process as in the service: a 422."""
    X = numeric_frame()
    model = LogisticRegression().fit(X, X.x0 > 0)
    reordered = list(reversed(NUMBERS))
    service = make_service(model, columns(dict.fromkeys(reordered, "double")), X[reordered])
    assert not service.scorer.array
    with pytest.raises(ValueError, match="same order"):
        model.predict_proba(X[reordered])
    status, answer = call(service, "/predict", {"features": X.iloc[3].to_dict()})
    assert status == 422 and "same order" in answer["error"]


def test_threshold_classifier_labels_come_from_its_predict() -> None:
    """Its labels are not the most probable class: the runtime must not derive them from proba."""
    from sklearn.model_selection import FixedThresholdClassifier

    X = numeric_frame(200)
    model = FixedThresholdClassifier(LogisticRegression(), threshold=0.9).fit(X, X.x0 > 0)
    service = make_service(model, columns(dict.fromkeys(NUMBERS, "double")), X)
    status, answer = call(service, "/predict_batch", X.values.tolist())
    assert status == 200 and answer["predictions"] == model.predict(X).tolist()
    assert answer["predictions"] != (model.predict_proba(X)[:, 1] > 0.5).tolist()


def test_optional_column_left_out_is_nan_for_the_model() -> None:
    X = numeric_frame(200)
    X.loc[::7, "x2"] = np.nan
    model = Pipeline([("impute", SimpleImputer()), ("classify", LogisticRegression())]).fit(X, X.x0 > 0)
    service = make_service(model, columns(dict.fromkeys(NUMBERS, "double"), optional=("x2",)), X)
    assert service.scorer.array, "NaN fits in a float array"
    status, answer = call(service, "/predict", {"features": {"x0": 0.3, "x1": -1.0, "x3": 2.0}})
    frame = pd.DataFrame([{"x0": 0.3, "x1": -1.0, "x2": np.nan, "x3": 2.0}])
    assert status == 200 and answer["probability"] == model.predict_proba(frame)[0, 1]
    status, answer = call(service, "/predict", {"features": [0.3, -1.0, None, 2.0]})
    assert status == 200 and answer["probability"] == model.predict_proba(frame)[0, 1]
    # NaN, as MLflow writes a missing value in serving_input_example.json, is the value left out
    for body in (
        b'{"features": [0.3, -1.0, NaN, 2.0]}',
        b'{"features": {"x0": 0.3, "x1": -1.0, "x2": NaN, "x3": 2.0}}',
    ):
        status, answer = call(service, "/predict", body)
        assert status == 200 and answer["probability"] == model.predict_proba(frame)[0, 1]
    status, answer = call(service, "/predict_batch", b'{"instances": [[0.3, -1.0, NaN, 2.0]]}')
    assert status == 200 and answer["probabilities"] == model.predict_proba(frame)[:, 1].tolist()
    # only there: NaN in a required column, and Infinity anywhere, are refused
    status, answer = call(service, "/predict", b'{"features": [NaN, -1.0, 1.0, 2.0]}')
    assert status == 400 and "'x0' must be finite" in answer["error"]
    status, answer = call(service, "/predict", b'{"features": [0.3, -1.0, Infinity, 2.0]}')
    assert status == 400 and "'x2' must be finite" in answer["error"]


def test_scoring_leaves_sklearns_configuration_as_it_was(binary: tuple[Any, pd.DataFrame]) -> None:
    service, _ = binary
    before = sklearn.get_config()
    call(service, "/predict", {"features": [0.0, 1.0, 2.0, 3.0]})
    assert sklearn.get_config() == before


# -- /invocations: MLflow's scoring protocol -------------------------------------------------------


def test_invocations_accepts_every_mlflow_input_format(pipeline: tuple[Any, pd.DataFrame]) -> None:
    service, X = pipeline
    rows = X.iloc[:3]
    records = json.loads(rows.to_json(orient="records"))
    names = list(X.columns)
    want = {"predictions": service.model.predict(rows).tolist()}
    bodies = [
        {"dataframe_split": {"columns": names, "data": [[r[c] for c in names] for r in records]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {c: [r[c] for r in records] for c in names}},
    ]
    for body in bodies:
        assert call(service, "/invocations", body) == (200, want), body


@pytest.mark.parametrize(
    ("body", "phrase", "code"),
    [  # MLflow's answers to the same bodies (its error_code; messages are ours)
        ({"foo": 1}, "exactly one of the input fields", "BAD_REQUEST"),
        ({"instances": [], "inputs": []}, "exactly one of the input fields", "BAD_REQUEST"),
        ([1, 2], "JSON dictionary", "BAD_REQUEST"),
        ({"dataframe_split": {"columns": NUMBERS, "data": [[1.0]]}}, "'split' format", "BAD_REQUEST"),
        ({"dataframe_split": {"columns": [["x0"]], "data": [[1.0] * 4]}}, "'split' format", "BAD_REQUEST"),
        (
            {"dataframe_split": {"index": [0], "columns": NUMBERS, "data": [[1.0] * 6] * 2}},
            "split",
            "BAD_REQUEST",
        ),
        ({"dataframe_split": {"data": [[1.0] * 6]}}, "missing inputs", "INVALID_PARAMETER_VALUE"),
        ({"inputs": [[1.0] * 6]}, "not a list of lists", "INVALID_PARAMETER_VALUE"),
        ({"inputs": {"x0": [1.0, 2.0], "x1": [1.0]}}, "different lengths", "INVALID_PARAMETER_VALUE"),
    ],
)
def test_invocations_refuses_bad_bodies_as_mlflow_clients_expect(
    binary: tuple[Any, pd.DataFrame], body: Any, phrase: str, code: str
) -> None:
    status, answer = call(binary[0], "/invocations", body)
    assert status == 400 and phrase in answer["error"], answer
    assert answer["error_code"] == code and answer["message"] == answer["error"]


@pytest.mark.parametrize(
    ("first", "body", "code"),
    [  # MLflow makes the value one array of the first column's type (np.array(value, dtype)):
        # numpy refusing it is BAD_REQUEST; an array has no named columns: INVALID_PARAMETER_VALUE
        ("string", {"instances": [["a", 1.0, None]]}, "INVALID_PARAMETER_VALUE"),
        ("string", {"inputs": [["a", 1.0, 2], ["b", None, None]]}, "INVALID_PARAMETER_VALUE"),
        ("string", {"instances": [["a", 1.0, 2], ["b"]]}, "BAD_REQUEST"),  # ragged
        ("string", {"instances": [[["a", 1.0, 2]]]}, "INVALID_PARAMETER_VALUE"),
        ("double", {"instances": [[1.0, "a", 2]]}, "BAD_REQUEST"),
        ("double", {"instances": [[1.0, None, 2]]}, "INVALID_PARAMETER_VALUE"),
        ("double", {"inputs": [1.0, 2.0, 3]}, "INVALID_PARAMETER_VALUE"),
        ("double", {"instances": "a"}, "BAD_REQUEST"),
        ("double", {"instances": None}, "INVALID_PARAMETER_VALUE"),  # NaN
        ("long", {"instances": [[1, None, 2]]}, "BAD_REQUEST"),
        ("long", {"inputs": None}, "BAD_REQUEST"),
        ("long", {"inputs": [[1, 2.5, True]]}, "INVALID_PARAMETER_VALUE"),
        ("integer", {"instances": [[2**40, 1.0, 2]]}, "BAD_REQUEST"),  # out of int32
        ("boolean", {"instances": [["a", None, 2]]}, "INVALID_PARAMETER_VALUE"),
        # instances whose first item is a record: every item is read as one (MLflow: BAD_REQUEST);
        # as inputs, the whole list is made one array
        ("string", {"instances": [{"c0": "a"}, ["a", 1.0, 2]]}, "BAD_REQUEST"),
        ("string", {"inputs": [{"c0": "a"}, 3]}, "INVALID_PARAMETER_VALUE"),
        ("string", {"inputs": [{"c0": "a"}, ["a", 1.0, 2]]}, "BAD_REQUEST"),
    ],
)
def test_invocations_value_not_a_table_is_refused_by_mlflows_rule(first: str, body: Any, code: str) -> None:
    types = {"c0": first, "c1": "double", "c2": "long"}
    X = pd.DataFrame({"c1": RNG.normal(size=20), "c2": RNG.integers(0, 5, 20)})
    X.insert(0, "c0", {"string": "a", "double": 1.5, "long": 2, "integer": 3, "boolean": True}[first])
    model = Pipeline([("features", ColumnTransformer([("n", "passthrough", ["c1", "c2"])])),
                      ("classify", LogisticRegression())]).fit(X, X.c1 > 0)  # fmt: skip
    status, answer = call(make_service(model, columns(types), X), "/invocations", body)
    assert (status, answer["error_code"]) == (400, code), answer


def test_invocations_list_for_one_column_is_that_column() -> None:
    """A signature of one column: MLflow takes an `instances` / `inputs` list as its values, made
    an array of its type ("1" and 2 read as strings, null as "None", as numpy's str makes them)."""
    X = pd.DataFrame({"plan": RNG.choice(["basic", "pro"], 40)})
    model = Pipeline(
        [("encode", OneHotEncoder(handle_unknown="ignore")), ("classify", LogisticRegression())]
    ).fit(X, X.plan == "pro")
    service = make_service(model, columns({"plan": "string"}), X)
    values = ["pro", "basic", None, 2]
    want = model.predict(pd.DataFrame({"plan": ["pro", "basic", "None", "2"]})).tolist()
    for key in ("instances", "inputs"):
        assert call(service, "/invocations", {key: values}) == (200, {"predictions": want})
        status, answer = call(service, "/invocations", {key: [values]})  # lists as values: the model refuses
        assert (status, answer["error_code"]) == (400, "BAD_REQUEST"), answer
    X = numeric_frame()[["x0"]]
    model = LogisticRegression().fit(X, X.x0 > 0)
    service = make_service(model, columns({"x0": "double"}), X)
    want = model.predict(pd.DataFrame({"x0": [0.5, -1.0, 1.0]})).tolist()
    assert call(service, "/invocations", {"inputs": [0.5, -1, True]}) == (200, {"predictions": want})
    for body, code in [
        ({"inputs": ["a"]}, "BAD_REQUEST"),  # no float
        ({"instances": [[0.5], [1.0]]}, "INVALID_PARAMETER_VALUE"),  # lists in a double column
    ]:
        status, answer = call(service, "/invocations", body)
        assert (status, answer["error_code"]) == (400, code), (body, answer)


def test_invocations_reads_csv_and_nan_and_answers_version(binary: tuple[Any, pd.DataFrame]) -> None:
    service, X = binary
    rows = X.iloc[:2]
    want = {"predictions": service.model.predict(rows).tolist()}
    csv = rows.to_csv(index=False).encode()
    assert service.handle("POST", "/invocations", csv, "text/csv")[0] == 200
    assert json.loads(service.handle("POST", "/invocations", csv, "text/csv; charset=utf-8")[1]) == want
    status, body = service.handle("POST", "/invocations", csv, "text/csv; charset=latin-1")
    assert status == 415 and json.loads(body)["message"] == "The scoring server only supports UTF-8"
    nan = b'{"dataframe_records": [{"x0": NaN, "x1": 1.0, "x2": 2.0, "x3": 3.0}]}'
    status, body = service.handle("POST", "/invocations", nan, "application/json")
    assert status == 400 and json.loads(body)["error_code"] == "BAD_REQUEST"  # LogisticRegression: no NaN
    manifest = {**service.manifest, "model": {**service.manifest["model"], "mlflow_version": "3.1.0"}}
    versioned = runtime.ModelService(manifest, service.model)
    assert versioned.handle("GET", "/version", b"") == (200, b"3.1.0")
    # no content type: 415 (MLflow's server fails with a 500)
    assert versioned.handle("POST", "/invocations", b"", None)[0] == 415


def test_invocations_ignores_extra_columns_as_mlflow_does(binary: tuple[Any, pd.DataFrame]) -> None:
    service, X = binary
    record = {**X.iloc[0].to_dict(), "customer_id": 12}
    status, answer = call(service, "/invocations", {"dataframe_records": [record]})
    assert (status, answer) == (200, {"predictions": service.model.predict(X.iloc[[0]]).tolist()})


# -- validation: every bad input is a 4xx JSON error -----------------------------------------------

PIPELINE_ROW = {"amount": 12.5, "category": "food", "foreign": False, "age_days": 40}


@pytest.mark.parametrize(
    ("features", "phrase"),
    [
        ({**PIPELINE_ROW, "amount": "high"}, "'amount' must be a number, got a string"),
        ({**PIPELINE_ROW, "amount": True}, "'amount' must be a number, got a boolean"),
        ({**PIPELINE_ROW, "age_days": 3.5}, "'age_days' must be an integer"),
        ({**PIPELINE_ROW, "age_days": 2**70}, "out of range"),
        ({**PIPELINE_ROW, "foreign": "yes"}, "'foreign' must be true or false"),
        ({**PIPELINE_ROW, "category": 3}, "'category' must be a string, got an integer"),
        ({k: v for k, v in PIPELINE_ROW.items() if k != "amount"}, "'amount' is required"),
        ({**PIPELINE_ROW, "amount": None}, "'amount' is required"),
        ({**PIPELINE_ROW, "amout": 1.0}, "unknown field(s) ['amout']"),
        ([12.5, "food", False], "expected 4 values in signature order"),
        ("12.5,food", "expected a list or an object, got a string"),
    ],
)
def test_bad_features_get_a_400_that_says_what_was_wrong(
    pipeline: tuple[Any, pd.DataFrame], features: Any, phrase: str
) -> None:
    status, answer = call(pipeline[0], "/predict", {"features": features})
    assert status == 400 and phrase in answer["error"], answer


def test_integral_floats_are_accepted_for_integer_columns(pipeline: tuple[Any, pd.DataFrame]) -> None:
    service, _ = pipeline
    as_int = call(service, "/predict", {"features": PIPELINE_ROW})
    as_float = call(service, "/predict", {"features": {**PIPELINE_ROW, "age_days": 40.0}})
    assert as_int == as_float and as_int[0] == 200


def test_non_finite_numbers_are_refused(binary: tuple[Any, pd.DataFrame]) -> None:
    """NaN and Infinity literals are read, then refused in a required column."""
    service, _ = binary
    status, answer = call(service, "/predict", b'{"features": [NaN, 1.0, 2.0, 3.0]}')
    assert status == 400 and "must be finite" in answer["error"]
    with pytest.raises(runtime.BadRequest, match="must be finite"):
        service.schema.row([float("inf"), 1.0, 2.0, 3.0], "features")
    with pytest.raises(runtime.BadRequest, match="must be a number"):  # float() would overflow
        service.schema.row([10**400, 1.0, 2.0, 3.0], "features")


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        ({"instances": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]}, 400, "instances[1]: expected 4 values"),
        ({"instances": []}, 400, "non-empty"),
        ({"instances": "rows"}, 400, "non-empty list"),
        ({"rows": []}, 400, '{"instances"'),
    ],
)
def test_bad_batches_get_a_400(binary: tuple[Any, pd.DataFrame], body: Any, status: int, phrase: str) -> None:
    got, answer = call(binary[0], "/predict_batch", body)
    assert got == status and phrase in answer["error"]


def test_a_batch_over_the_row_limit_is_refused(binary: tuple[Any, pd.DataFrame]) -> None:
    rows = [[0.0] * 4] * (runtime.MAX_BATCH_ROWS + 1)
    status, answer = call(binary[0], "/predict_batch", {"instances": rows})
    assert status == 413 and "over the limit" in answer["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "phrase"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"[]", "application/json", 400, "features"),
        (b'{"features": [1, 2, 3, 4]}', "text/csv", 415, "application/json"),
        (b" " * (runtime.MAX_BODY_BYTES + 1), "application/json", 413, "over the limit"),
    ],
)
def test_bad_bodies_get_a_4xx_json_error(
    binary: tuple[Any, pd.DataFrame], body: bytes, content_type: str, status: int, phrase: str
) -> None:
    got, payload = binary[0].handle("POST", "/predict", body, content_type)
    assert got == status and phrase in json.loads(payload)["error"]


def test_a_missing_content_type_is_read_as_json(binary: tuple[Any, pd.DataFrame]) -> None:
    assert binary[0].handle("POST", "/predict", b'{"features": [1, 2, 3, 4]}', None)[0] == 200


# -- routing ---------------------------------------------------------------------------------------


def test_health_names_the_model(binary: tuple[Any, pd.DataFrame]) -> None:
    service, _ = binary
    want = {"status": "healthy", "model_name": "m", "model_version": "7"}
    for method, path in [("GET", "/health"), ("HEAD", "/health"), ("GET", "/health/"), ("GET", "/ping")]:
        assert call(service, path, b"", method) == (200, want)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/predict", 405),
        ("PUT", "/predict_batch", 405),
        ("DELETE", "/invocations", 405),
        ("POST", "/health", 405),
        ("GET", "/nope", 404),
        ("POST", "/", 404),
    ],
)
def test_unknown_routes_and_methods(
    binary: tuple[Any, pd.DataFrame], method: str, path: str, status: int
) -> None:
    got, answer = call(binary[0], path, b"{}", method)
    assert got == status and f"{method} {path}" in answer["error"]


def test_a_trailing_slash_is_the_same_route(binary: tuple[Any, pd.DataFrame]) -> None:
    body = {"features": [0.1, 0.2, 0.3, 0.4]}
    assert call(binary[0], "/predict/", body) == call(binary[0], "/predict", body)


# -- the ASGI front of the fastapi target (templates/fastapi/app/asgi.py) --------------------------


def _import_asgi() -> ModuleType:
    """asgi.py imports `app.runtime`, as in an artifact: lend it the runtime under test."""
    package = ModuleType("app")
    package.__path__ = []
    lent = {"app": package, "app.runtime": runtime}
    saved = {name: sys.modules.get(name) for name in lent}
    sys.modules.update(lent)
    try:
        path = RUNTIME_FILE.parent.parent.parent / "fastapi" / "app" / "asgi.py"
        spec = importlib.util.spec_from_file_location("app.asgi", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:  # leave no `app` package behind for other tests
        for name, previous in saved.items():
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous


asgi = _import_asgi()


def asgi_request(
    app: Any, method: str, path: str, chunks: list[bytes], headers: dict[str, str]
) -> tuple[int, Any]:
    """Drive an ASGI app with one HTTP request whose body arrives in `chunks`."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


class Fallback:
    """Stands in for the FastAPI app behind the front: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "fallback"}'})


def test_asgi_front_answers_model_routes_and_passes_on_the_rest(binary: tuple[Any, pd.DataFrame]) -> None:
    service, X = binary
    fallback = Fallback()
    app = asgi.ModelRoutes(service, fallback)
    body = json.dumps({"features": X.iloc[0].tolist()}).encode()
    json_type = {"content-type": "application/json"}
    status, answer = asgi_request(app, "POST", "/predict", [body[:7], body[7:]], json_type)
    assert (status, answer) == call(service, "/predict", body)
    assert asgi_request(app, "GET", "/health/", [b""], {})[0] == 200
    assert asgi_request(app, "GET", "/predict", [b""], {})[0] == 405
    assert asgi_request(app, "GET", "/docs", [b""], {}) == (404, {"error": "fallback"})
    assert fallback.paths == ["/docs"]


def test_asgi_front_refuses_an_oversized_body_before_reading_it(binary: tuple[Any, pd.DataFrame]) -> None:
    app = asgi.ModelRoutes(binary[0], Fallback())
    declared = {"content-type": "application/json", "content-length": str(runtime.MAX_BODY_BYTES + 1)}
    status, answer = asgi_request(app, "POST", "/predict", [b"{}"], declared)
    assert status == 413 and "over the limit" in answer["error"]
    chunk = b" " * (runtime.MAX_BODY_BYTES // 2 + 1)
    status, _ = asgi_request(app, "POST", "/invocations", [chunk, chunk, chunk], {})
    assert status == 413


class CountingScorer:
    """The service's scorer, counting the model calls."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.calls = scorer, 0

    def score(self, rows: list[list[Any]], probabilities: bool = True, params: Any = None) -> Any:
        self.calls += 1
        return self.scorer.score(rows, probabilities, params)


def score_together(service: Any, bodies: list[Any]) -> tuple[list[Any], int]:
    """Score requests that arrive together through a MicroBatcher: (answers or errors, model calls)."""
    scorer = CountingScorer(service.scorer)
    batcher = asgi.MicroBatcher(scorer, enabled=True, metrics=service.metrics)
    calls = [service.prepare("POST", "/predict", json.dumps(b).encode(), None) for b in bodies]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(batcher.score(c) for c in calls), return_exceptions=True)

    results = asyncio.run(all_at_once())
    answers = [
        r if isinstance(r, Exception) else json.loads(service.respond(c, r)) for c, r in zip(calls, results)
    ]
    return answers, scorer.calls


def batch_rows(service: Any) -> tuple[float, float]:
    """(count, sum) of the deployctl_batch_rows histogram in the service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {
        s.name: s.value
        for family in text_string_to_metric_families(service.metrics.exposition().decode())
        for s in family.samples
    }
    return found["deployctl_batch_rows_count"], found["deployctl_batch_rows_sum"]


def test_not_ready_is_503_json_on_every_readiness_path(binary: tuple[Any, pd.DataFrame]) -> None:
    service, _ = binary
    paths = ["/health/ready", "/v2/health/ready", "/v2/models/m/ready", "/v2/models/m/versions/7/ready"]
    assert [call(service, path, None, "GET")[0] for path in paths] == [200] * 4
    service.ready = False
    try:
        for path in paths:
            status, body = call(service, path, None, "GET")
            assert status == 503 and "still loading" in body["error"], path
        assert call(service, "/health/live", None, "GET") == (200, {"status": "live"})
        assert call(service, "/v2/health/live", None, "GET") == (200, {"live": True})
    finally:
        service.ready = True


def test_a_draining_service_is_not_ready_and_says_why(binary: tuple[Any, pd.DataFrame]) -> None:
    """SIGTERM (app/server.py calls `drain`): readiness 503 on every readiness path, saying the server
    is shutting down rather than loading; liveness unchanged."""
    service, _ = binary
    service.drain()
    try:
        for path in ["/health/ready", "/v2/health/ready", "/v2/models/m/ready"]:
            status, body = call(service, path, None, "GET")
            assert status == 503 and body["error"] == "not ready: the server is shutting down", path
        assert call(service, "/health/live", None, "GET") == (200, {"status": "live"})
    finally:
        service.ready, service.draining = True, False


def test_requests_arriving_together_are_scored_in_one_call(binary: tuple[Any, pd.DataFrame]) -> None:
    service, X = binary
    assert service.scorer.agrees_in_batches(service.probe)
    bodies = [{"features": X.iloc[i].tolist()} for i in range(12)]
    before = batch_rows(service)
    answers, model_calls = score_together(service, bodies)
    assert model_calls == 1
    # deployctl_batch_rows shows it: one model call of 12 rows
    assert batch_rows(service) == (before[0] + 1, before[1] + 12)
    for body, answer in zip(bodies, answers):
        alone = call(service, "/predict", body)[1]
        assert answer["prediction"] == alone["prediction"]
        assert answer["probability"] == pytest.approx(alone["probability"], rel=1e-12, abs=1e-15)


def test_one_bad_request_in_a_batch_fails_alone(pipeline: tuple[Any, pd.DataFrame]) -> None:
    service, X = pipeline
    good = json.loads(X.iloc[:3].to_json(orient="records"))
    bodies = [{"features": good[0]}, {"features": {**good[1], "category": "casino"}}, {"features": good[2]}]
    answers, _ = score_together(service, bodies)
    assert isinstance(answers[1], runtime.BadRequest) and answers[1].status == 422
    for i in (0, 2):
        assert answers[i] == call(service, "/predict", bodies[i])[1]


# -- embedding: the README's snippet, run as written -----------------------------------------------


def readme_snippet() -> str:
    """The Python block of the README's "Embedding the model in your application" that uses the
    runtime itself (the section's first blocks use the embedded target's wheel)."""
    readme = (RUNTIME_FILE.parents[3] / "README.md").read_text()
    section = readme.split("### Embedding the model in your application", 1)[1]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    return next(block for block in blocks if "from app.runtime import ModelService" in block)


def test_the_readme_embedding_snippet_returns_the_answer(tmp_path: Path) -> None:
    """An artifact laid out as generate writes it (app/, model/, deployctl.json) around a model with
    the snippet's columns; the snippet runs in its own interpreter from the artifact's folder."""
    import pickle
    import subprocess

    frame = pd.DataFrame({"amount": RNG.uniform(0, 2000, 80), "hour": RNG.integers(0, 24, 80)})
    model = LogisticRegression().fit(frame, (frame["amount"] > 900).astype(int))
    shutil.copytree(RUNTIME_FILE.parent, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(pickle.dumps(model))
    manifest = {
        "model": {
            "name": "fraud",
            "version": "3",
            "columns": columns({"amount": "double", "hour": "long"}),
            "loader": {"kind": "sklearn", "file": "model.pkl", "format": "pickle"},
        },
        "smoke_cases": [{"row": row} for row in json.loads(frame.head(5).to_json(orient="records"))],
    }
    (tmp_path / "deployctl.json").write_text(json.dumps(manifest))

    snippet = readme_snippet()
    assert "service.answer(" in snippet
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ACCESS_LOG": "0"}
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answer = ast.literal_eval(done.stdout.strip())
    expected = model.predict_proba(pd.DataFrame({"amount": [950.0], "hour": [3]}))[0, 1]
    assert answer == {
        "prediction": int(model.predict(pd.DataFrame({"amount": [950.0], "hour": [3]}))[0]),
        "probability": float(expected),
        "model_version": "3",
    }


def test_answer_is_what_the_http_contract_answers(binary: tuple[Any, pd.DataFrame]) -> None:
    service = binary[0]
    body = {"features": [0.1, 0.2, 0.3, 0.4]}
    assert service.answer("/predict", body) == call(service, "/predict", body)[1]
    batch = {"instances": [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]]}
    assert service.answer("/predict_batch/", batch) == call(service, "/predict_batch", batch)[1]
    with pytest.raises(runtime.BadRequest, match="is not served") as refused:
        service.answer("/nowhere", body)
    assert refused.value.status == 404
    with pytest.raises(runtime.BadRequest, match="expected 4 values"):
        service.answer("/predict", {"features": [1.0]})


def test_a_bug_while_scoring_a_micro_batch_fails_its_requests_instead_of_hanging_them(
    binary: tuple[Any, pd.DataFrame],
) -> None:
    service, X = binary

    class Broken:
        def score(self, *args: Any) -> Any:
            raise RuntimeError("a bug")

    batcher = asgi.MicroBatcher(Broken(), enabled=True, metrics=service.metrics)  # type: ignore[arg-type]
    calls = [
        service.prepare("POST", "/predict", json.dumps({"features": X.iloc[i].tolist()}).encode(), None)
        for i in range(3)
    ]

    async def all_at_once() -> list[Any]:
        together = asyncio.gather(*(batcher.score(c) for c in calls), return_exceptions=True)
        return await asyncio.wait_for(together, 10)

    assert [type(r) for r in asyncio.run(all_at_once())] == [RuntimeError] * 3


def test_invocations_join_the_micro_batch_and_answer_as_alone(binary: tuple[Any, pd.DataFrame]) -> None:
    """/invocations requests that conform to the signature are scored in /predict's micro-batch
    (one model call), each answered what it is answered alone."""
    service, X = binary
    names = list(X.columns)
    split = [{"dataframe_split": {"columns": names, "data": [X.iloc[i].tolist()]}} for i in range(4)]
    records = [{"dataframe_records": json.loads(X.iloc[i : i + 2].to_json(orient="records"))} for i in (4, 6)]
    bodies = [
        *[("/predict", json.dumps({"features": X.iloc[i].tolist()}).encode()) for i in range(8, 12)],
        *[("/invocations", json.dumps(body).encode()) for body in [*split, *records]],
    ]
    alone = [service.handle("POST", path, body, "application/json") for path, body in bodies]
    calls = [service.prepare("POST", path, body, "application/json") for path, body in bodies]
    batcher = asgi.MicroBatcher(service.scorer, enabled=True, metrics=service.metrics)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(batcher.score(c) for c in calls))

    before = batch_rows(service)
    results = asyncio.run(all_at_once())
    assert batch_rows(service) == (before[0] + 1, before[1] + 4 + 4 + 4)  # one model call of 12 rows
    batched = [(200, service.respond(c, r)) for c, r in zip(calls, results)]
    assert batched[4:] == alone[4:]  # /invocations: labels, byte for byte
    # /predict: the same labels; a probability may differ in its last bit in a batch (MicroBatcher)
    assert [json.loads(b)["prediction"] for _, b in batched[:4]] == [
        json.loads(b)["prediction"] for _, b in alone[:4]
    ]


def test_invocations_refused_in_a_micro_batch_is_mlflows_400(pipeline: tuple[Any, pd.DataFrame]) -> None:
    """The model refusing a conforming /invocations row in the batch (a category its encoder never
    saw): that request alone gets MLflow's 400 BAD_REQUEST, the others their answers."""
    service, X = pipeline
    good = json.loads(X.iloc[:1].to_json(orient="records"))
    bad = [{**good[0], "category": "unseen"}]
    bodies = [json.dumps({"dataframe_records": rows}).encode() for rows in (good, bad, good)]
    calls = [service.prepare("POST", "/invocations", body, "application/json") for body in bodies]
    assert all(call.scorer is None for call in calls)  # scored by the service's scorer, batched
    batcher = asgi.MicroBatcher(service.scorer, enabled=True, metrics=service.metrics)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(batcher.score(c) for c in calls), return_exceptions=True)

    first, refused, last = asyncio.run(all_at_once())
    assert isinstance(refused, runtime.BadRequest)
    assert (refused.status, refused.error_code) == (400, "BAD_REQUEST")
    assert "evaluating the model" in refused.message
    want = json.dumps({"predictions": service.model.predict(X.iloc[:1]).tolist()}).encode()
    assert service.respond(calls[0], first) == service.respond(calls[2], last) == want


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["f", "d", "i", "l", "b", "s"], "data": [[1.5, 2, 3, 4, True, "a"]]}},
        {
            "dataframe_split": {
                "columns": ["s", "b", "l", "i", "d", "f"],
                "data": [["a", False, 4, 3, 2.5, 1]] * 3,
            }
        },
        {"dataframe_records": [{"f": 0.1, "d": 1e300, "i": -(2**31), "l": 2**62, "b": True, "s": ""}]},
        {"instances": [{"f": 3.4e38, "d": -0.0, "i": 2**31 - 1, "l": -(2**63), "b": False, "s": "é"}] * 2},
        {
            "inputs": {
                "f": [1.1, 2],
                "d": [2**53, 0.5],
                "i": [1, 2],
                "l": [1, 2],
                "b": [True, False],
                "s": ["a", "b"],
            }
        },
        {"inputs": {"f": 1.1, "d": 2, "i": 1, "l": 2, "b": True, "s": "x"}, "params": {"k": 1}},
    ],
)
def test_conforming_invocations_are_read_as_mlflows_parse_reads_them(body: dict[str, Any]) -> None:
    """The rows read without a DataFrame are, value for value and type for type, those MLflow's
    parse (pandas' inference, then astype to the signature's types) gives."""
    from artifact_app import mlflow_protocol

    types = {"f": "float", "d": "double", "i": "integer", "l": "long", "b": "boolean", "s": "string"}
    schema = runtime.Schema(columns(types))
    raw = json.dumps(body).encode()
    fast = mlflow_protocol.conforming_rows(raw, "application/json", schema)
    frame, params = mlflow_protocol.frame_of(raw, "application/json", schema)
    slow = mlflow_protocol.rows_of(frame, schema)
    assert fast is not None
    assert fast == (slow, params)
    assert [[type(v) for v in row] for row in fast[0]] == [[type(v) for v in row] for row in slow]


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_records": [{"d": NaN, "l": 1}]}',  # NaN: MLflow's parse, the model decides
        b'{"dataframe_records": [{"d": 1.0}]}',  # a missing column
        b'{"dataframe_records": [{"d": 1.0, "l": 1, "extra": 2}]}',  # an extra column
        b'{"dataframe_records": [{"d": "1.5", "l": 1}]}',  # a string for a double: pandas converts
        b'{"dataframe_records": [{"d": 1.0, "l": 1.0}]}',  # a float for a long
        b'{"dataframe_records": [{"d": true, "l": 1}]}',  # a boolean for a double
        b'{"dataframe_records": [{"d": 9007199254740993, "l": 1}]}',  # an int a double cannot hold
        b'{"dataframe_records": [{"d": 1.0, "l": 9223372036854775808}]}',  # over int64
        b'{"dataframe_records": [{"d": null, "l": 1}]}',
        b'{"dataframe_split": {"columns": ["d", "l"], "data": [[1.0, 1]], "index": [3]}}',
        b'{"dataframe_split": {"columns": [["d"], ["l"]], "data": [[1.0, 1]]}}',
        b'{"dataframe_split": {"columns": ["d", "d"], "data": [[1.0, 1]]}}',
        b'{"dataframe_split": {"columns": ["d", "l"], "data": [[1.0]]}}',
        b'{"dataframe_records": {"d": 1.0, "l": 1}}',
        b'{"instances": [[1.0, 1]]}',
        b'{"inputs": {"d": [1.0, 2.0], "l": [1]}}',
        b'{"dataframe_records": [], "instances": []}',
        b"[]",
    ],
)
def test_other_invocations_keep_mlflows_parse(body: bytes) -> None:
    from artifact_app import mlflow_protocol

    schema = runtime.Schema(columns({"d": "double", "l": "long"}))
    assert mlflow_protocol.conforming_rows(body, "application/json", schema) is None


def test_a_worker_of_several_hands_its_counts_over_as_it_falls_idle(tmp_path: Path) -> None:
    """With several workers, /metrics is answered by one and reads the others' counts from their
    files: a worker's deferred counts must be there once it has nothing in progress, not only
    when it next answers /metrics or FLUSH_SECONDS after its last request."""
    script = f"""
import sys
sys.path.insert(0, {str(RUNTIME_FILE.parent.parent)!r})
from prometheus_client import CollectorRegistry, multiprocess
from app.metrics import Deferred, Metrics

def requests_counted():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return sum(s.value for m in registry.collect() for s in m.samples if s.name == "deployctl_requests_total")

model = {{"name": "m", "version": "1"}}
worker = Deferred(Metrics(model, "fastapi", {{"/predict"}}, lambda path: "other"))
first, second = worker.started(), worker.started()
worker.finished("/predict", 200, first)
busy = requests_counted()  # one still in progress: counted in process memory only
worker.finished("/predict", 200, second)
print(float(busy), float(requests_counted()))
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0.0", "2.0"], proc.stdout
