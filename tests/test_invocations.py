"""`/invocations` is a drop-in for `mlflow models serve`: a corpus of the requests MLflow's own
scoring-server tests send (its four JSON formats, text/csv, NaN and Infinity literals, content types
and charsets, coercions, malformed bodies) goes to a built deployctl service and to a real
`mlflow models serve --env-manager local` of the same model, side by side.

Compared: the status and, on success, the body byte for byte. On an error: MLflow's error_code,
error_class and sqlstate, but not the message, which in MLflow holds the request's DataFrame
printed by pandas and a Python stack trace (ours says what was wrong, in words); a 415, which MLflow
answers in plain text, is JSON here whose message is the start of MLflow's text.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FRAUD_ROW
from test_rest import build_artifact, mlflow_serve, serve  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
JSON = "application/json"
HOUSE_ROW = {"area": 100.0, "rooms": 3, "age": 10.0}
DOUBLER_ROW = {"a": 1.0, "b": 3}
IMPUTED_ROW = {"plan": "basic", "monthly_charges": 50.0, "tenure_months": 12, "support_calls": 3.0}
OPTIONAL = "support_calls"  # imputed_churn's optional column (required=False), imputed by the model


def corpus(row: dict, fcol: str, icol: str) -> list[tuple[str, str, bytes]]:
    """(case, content type, body) for a model whose signature is `row`'s columns; `fcol` is a
    double column and `icol` a long column."""
    cols = list(row)
    vals = [row[c] for c in cols]

    def j(obj: object) -> bytes:
        return json.dumps(obj).encode()

    def raw(col: str, literal: bytes) -> bytes:  # a JSON literal json.dumps cannot write, in one cell
        return j({"dataframe_records": [row, {**row, col: "@@"}]}).replace(b'"@@"', literal)

    def csv(*lines: list[object]) -> bytes:
        return "".join(",".join(str(v) for v in line) + "\n" for line in lines).encode()

    return [
        ("split", JSON, j({"dataframe_split": {"columns": cols, "data": [vals, vals]}})),
        (
            "split_index",
            JSON,
            j({"dataframe_split": {"index": [5, 6], "columns": cols, "data": [vals, vals]}}),
        ),
        (
            "split_index_mismatch",
            JSON,
            j({"dataframe_split": {"index": [5], "columns": cols, "data": [vals] * 2}}),
        ),
        ("split_no_columns", JSON, j({"dataframe_split": {"data": [vals]}})),
        (
            "split_nested_columns",
            JSON,
            j({"dataframe_split": {"columns": [[c] for c in cols], "data": [vals]}}),
        ),
        ("split_short_row", JSON, j({"dataframe_split": {"columns": cols, "data": [vals[:1]]}})),
        ("split_data_not_list", JSON, j({"dataframe_split": {"columns": cols, "data": 3}})),
        ("records", JSON, j({"dataframe_records": [row, row]})),
        ("records_dict", JSON, j({"dataframe_records": row})),
        ("records_empty", JSON, j({"dataframe_records": []})),
        ("instances_records", JSON, j({"instances": [row]})),
        ("instances_lists", JSON, j({"instances": [vals]})),
        ("instances_empty", JSON, j({"instances": []})),
        # MLflow makes a value that is not records or columns one array of the first column's type:
        # numpy refusing it is BAD_REQUEST, an array is INVALID_PARAMETER_VALUE (no named columns)
        ("inputs_lists", JSON, j({"inputs": [vals, vals]})),
        ("instances_lists_null", JSON, j({"instances": [[None if c == fcol else row[c] for c in cols]]})),
        ("inputs_lists_null", JSON, j({"inputs": [[None if c == icol else row[c] for c in cols]]})),
        ("instances_values", JSON, j({"instances": vals})),
        ("instances_ragged_lists", JSON, j({"instances": [vals, vals[:1]]})),
        ("instances_nested_lists", JSON, j({"instances": [[vals]]})),
        ("instances_record_then_list", JSON, j({"instances": [row, vals]})),
        ("inputs_record_then_value", JSON, j({"inputs": [row, vals[0]]})),
        ("inputs_columnar", JSON, j({"inputs": {c: [row[c]] for c in cols}})),
        ("inputs_records", JSON, j({"inputs": [row, row]})),
        ("inputs_ragged", JSON, j({"inputs": {cols[0]: [vals[0]] * 2, **{c: [row[c]] for c in cols[1:]}}})),
        ("nan_float", JSON, raw(fcol, b"NaN")),
        ("inf_float", JSON, raw(fcol, b"Infinity")),
        ("neginf_float", JSON, raw(fcol, b"-Infinity")),
        ("nan_int", JSON, raw(icol, b"NaN")),
        ("null_float", JSON, j({"dataframe_records": [{**row, fcol: None}]})),
        ("null_int", JSON, j({"dataframe_records": [{**row, icol: None}]})),
        ("str_float", JSON, j({"dataframe_records": [{**row, fcol: "17.99"}]})),
        ("str_int", JSON, j({"dataframe_records": [{**row, icol: "30"}]})),
        (
            "split_str_float",
            JSON,
            j({"dataframe_split": {"columns": cols, "data": [[*vals]]}}).replace(
                json.dumps(row[fcol]).encode(), b'"17.99"', 1
            ),
        ),
        ("inputs_str_int", JSON, j({"inputs": {c: ["30" if c == icol else row[c]] for c in cols}})),
        ("frac_int", JSON, j({"dataframe_records": [{**row, icol: 1.5}]})),
        ("whole_float_int", JSON, j({"dataframe_records": [{**row, icol: 3.0}]})),
        ("word_float", JSON, j({"dataframe_records": [{**row, fcol: "abc"}]})),
        ("bool_float", JSON, j({"dataframe_records": [{**row, fcol: True}]})),
        ("missing_col", JSON, j({"dataframe_records": [{k: v for k, v in row.items() if k != fcol}]})),
        ("extra_col", JSON, j({"dataframe_records": [{**row, "extra": 1}]})),
        ("no_key", JSON, j({})),
        ("unknown_key", JSON, j({"data": [row]})),
        ("two_keys", JSON, j({"dataframe_records": [row], "instances": [row]})),
        ("list_body", JSON, j([row])),
        ("scalar_body", JSON, j(3)),
        ("not_json", JSON, b"{nope"),
        ("empty_json", JSON, b""),
        ("bad_utf8", JSON, b'{"dataframe_records": [{"a": "\xff"}]}'),
        ("charset_utf8", "application/json; charset=utf-8", j({"dataframe_records": [row]})),
        ("charset_UTF8", "application/json; charset=UTF-8", j({"dataframe_records": [row]})),
        ("charset_latin1", "application/json; charset=latin-1", j({"dataframe_records": [row]})),
        ("content_type_param", "application/json; format=pandas-split", j({"dataframe_records": [row]})),
        ("text_plain", "text/plain", j({"dataframe_records": [row]})),
        ("csv", "text/csv", csv(cols, vals, vals)),
        ("csv_charset", "text/csv; charset=utf-8", csv(cols, vals)),
        ("csv_empty", "text/csv", b""),
        ("csv_missing_col", "text/csv", csv(cols[1:], vals[1:])),
        ("csv_empty_float", "text/csv", csv(cols, ["" if c == fcol else row[c] for c in cols])),
        ("csv_bad_int", "text/csv", csv(cols, ["x" if c == icol else row[c] for c in cols])),
        ("csv_header_only", "text/csv", csv(cols)),
        ("csv_bad_utf8", "text/csv", csv(cols, vals) + b"\xff\n"),
    ]


MODELS = {
    "fraud": ("models:/fraud_detector/1", FRAUD_ROW, "amount", "hour"),
    "house": ("models:/house_price/1", HOUSE_ROW, "area", "rooms"),
    "doubler": ("models:/doubler/1", DOUBLER_ROW, "a", "b"),  # a custom pyfunc: NaN in, NaN out
    # an optional column imputed in a ColumnTransformer, and a string column first
    "imputed": ("models:/imputed_churn/1", IMPUTED_ROW, "monthly_charges", "tenure_months"),
}
CASES = [(model, *case) for model, (_, row, f, i) in MODELS.items() for case in corpus(row, f, i)]


@pytest.fixture(scope="module")
def servers(
    build_artifact: Callable[..., Path],  # noqa: F811
    mlflow_serve: Callable[[str], str],  # noqa: F811
) -> Iterator[Callable[[str, str], tuple[str, str]]]:
    """(our service's URL, MLflow's URL) for a model and target, each started once per module."""
    started: dict[tuple[str, str], tuple[str, str]] = {}
    procs = []

    def get(model: str, target: str = "fastapi") -> tuple[str, str]:
        if (model, target) not in started:
            uri = MODELS[model][0]
            proc, ours = serve(build_artifact(uri, target))
            procs.append(proc)
            theirs = next((t for (m, _), (_, t) in started.items() if m == model), None) or mlflow_serve(uri)
            started[model, target] = (ours, theirs)
        return started[model, target]

    yield get
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def assert_same(mine: httpx.Response, reference: httpx.Response, case: str) -> None:
    assert mine.status_code == reference.status_code, (case, mine.text, reference.text[:500])
    assert mine.headers["content-type"].startswith(JSON)
    if reference.status_code == 200:
        assert mine.text == reference.text, case  # byte for byte, NaN literals included
        return
    answer = mine.json()
    assert answer["message"] == answer["error"], case
    if reference.status_code == 415:  # MLflow's is text/plain: ours is JSON holding its words
        assert reference.text.startswith(answer["message"]), (case, answer, reference.text)
        return
    expected = reference.json()
    keys = ("error_code", "error_class", "sqlstate")
    assert {k: answer[k] for k in keys} == {k: expected[k] for k in keys}, (
        case,
        answer,
        expected["message"][:300],
    )


@pytest.mark.parametrize(
    ("model", "case", "content_type", "body"), CASES, ids=[f"{m}-{c}" for m, c, *_ in CASES]
)
def test_invocations_answers_as_mlflow_models_serve(
    servers: Callable[..., tuple[str, str]], model: str, case: str, content_type: str, body: bytes
) -> None:
    ours, theirs = servers(model)
    headers = {"content-type": content_type}
    mine = httpx.post(f"{ours}/invocations", content=body, headers=headers)
    reference = httpx.post(f"{theirs}/invocations", content=body, headers=headers)
    assert_same(mine, reference, case)


def test_flask_answers_the_corpus_as_mlflow_models_serve(servers: Callable[..., tuple[str, str]]) -> None:
    ours, theirs = servers("house", "flask")
    for case, content_type, body in corpus(HOUSE_ROW, "area", "rooms"):
        headers = {"content-type": content_type}
        mine = httpx.post(f"{ours}/invocations", content=body, headers=headers)
        reference = httpx.post(f"{theirs}/invocations", content=body, headers=headers)
        assert_same(mine, reference, case)


def test_version_answers_as_mlflow_models_serve(servers: Callable[..., tuple[str, str]]) -> None:
    import mlflow

    ours, theirs = servers("house")
    mine, reference = httpx.get(f"{ours}/version"), httpx.get(f"{theirs}/version")
    assert (
        (mine.status_code, mine.text) == (reference.status_code, reference.text) == (200, mlflow.__version__)
    )


def test_mlflow_scoring_server_client_works_unchanged(servers: Callable[..., tuple[str, str]]) -> None:
    """MLflow's own client: ready check, a DataFrame with a missing float (sent as NaN), version."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    ours, _ = servers("doubler")
    host, port = ours.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=30)
    frame = pd.DataFrame({"a": [1.0, np.nan, 2.5], "b": [3, 4, 5]})
    predictions = client.invoke(frame).get_predictions()
    values = predictions.iloc[:, 0].tolist() if hasattr(predictions, "iloc") else list(predictions)
    assert values[0] == 5.0 and math.isnan(values[1]) and values[2] == 10.0
    assert client.get_version() == mlflow.__version__


def test_deliberate_difference_no_content_type_is_a_415_not_a_500(
    servers: Callable[..., tuple[str, str]],
) -> None:
    """MLflow fails with a 500 on a POST without a content type; ours says what is missing."""
    ours, theirs = servers("house")
    body = json.dumps({"dataframe_records": [HOUSE_ROW]}).encode()
    reference = httpx.post(f"{theirs}/invocations", content=body)
    mine = httpx.post(f"{ours}/invocations", content=body)
    assert reference.status_code >= 500
    assert mine.status_code == 415 and "application/json" in mine.json()["error"]


def test_deliberate_difference_optional_column_left_out_is_imputed(
    servers: Callable[..., tuple[str, str]],
    build_artifact: Callable[..., Path],  # noqa: F811
) -> None:
    """Rows without the signature's optional column: here the column is given to the model as
    missing values (NaN, which its imputer fills), the answer being the model's own on a frame with
    NaN in that column; MLflow hands the model a frame without the column, which the
    ColumnTransformer refuses (400 BAD_REQUEST), or, for `instances` records only some of which
    hold it, cannot make the frame (400 INVALID_PARAMETER_VALUE)."""
    import mlflow
    import numpy as np
    import pandas as pd

    ours, theirs = servers("imputed")
    model = mlflow.sklearn.load_model(str(build_artifact(MODELS["imputed"][0], "fastapi") / "model"))
    without = {k: v for k, v in IMPUTED_ROW.items() if k != OPTIONAL}
    rows = [without, {"plan": "pro", "monthly_charges": 15.0, "tenure_months": 70}]
    cols = list(without)
    frame = pd.DataFrame([{**row, OPTIONAL: np.nan} for row in rows])
    expected = model.predict(frame).tolist()
    assert len(set(expected)) == 2, expected  # two different answers: the rows are told apart
    csv = "".join(
        ",".join(str(v) for v in line) + "\n" for line in [cols, *([r[c] for c in cols] for r in rows)]
    )
    bodies = {
        "dataframe_records": (JSON, {"dataframe_records": rows}),
        "dataframe_split": (
            JSON,
            {"dataframe_split": {"columns": cols, "data": [list(r.values()) for r in rows]}},
        ),
        "instances": (JSON, {"instances": rows}),
        "inputs_records": (JSON, {"inputs": rows}),
        "inputs_columns": (JSON, {"inputs": {c: [r[c] for r in rows] for c in cols}}),
        "csv": ("text/csv", csv),
    }
    for case, (content_type, body) in bodies.items():
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {"content-type": content_type}
        mine = httpx.post(f"{ours}/invocations", content=raw, headers=headers)
        reference = httpx.post(f"{theirs}/invocations", content=raw, headers=headers)
        assert (mine.status_code, mine.json()) == (200, {"predictions": expected}), (case, mine.text)
        assert reference.status_code == 400, (case, reference.text[:300])
        assert reference.json()["error_code"] == "BAD_REQUEST", (case, reference.text[:300])

    # `instances` records, one with the optional column and one without
    mixed = [IMPUTED_ROW, rows[1]]
    frame = pd.DataFrame([IMPUTED_ROW, {**rows[1], OPTIONAL: np.nan}])
    raw = json.dumps({"instances": mixed}).encode()
    mine = httpx.post(f"{ours}/invocations", content=raw, headers={"content-type": JSON})
    reference = httpx.post(f"{theirs}/invocations", content=raw, headers={"content-type": JSON})
    assert (mine.status_code, mine.json()) == (200, {"predictions": model.predict(frame).tolist()}), mine.text
    assert reference.status_code == 400, reference.text[:300]
    assert reference.json()["error_code"] == "INVALID_PARAMETER_VALUE", reference.text[:300]
    # the same records as `inputs`: MLflow makes one frame of them (NaN where the column is not
    # given), as here: the same answer
    raw = json.dumps({"inputs": mixed}).encode()
    mine = httpx.post(f"{ours}/invocations", content=raw, headers={"content-type": JSON})
    reference = httpx.post(f"{theirs}/invocations", content=raw, headers={"content-type": JSON})
    assert_same(mine, reference, "inputs_some_without_the_optional_column")
