"""MLflow's scoring protocol (`/invocations`), parsed as `mlflow models serve` parses it.

Content types (application/json and text/csv, UTF-8 only), the four JSON formats, NaN and Infinity
literals, and the signature enforced the way MLflow enforces it: a value pandas can convert to the
column's type is converted ("17.99" for a double, 1.5 truncated for a long), extra columns are
ignored, a missing column is refused. Errors carry MLflow's error_code, error_class and sqlstate.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from .jsonio import JSONDecodeError, loads
from .schema import DTYPES, MAX_BATCH_ROWS, MAX_BODY_BYTES, PYTYPES, BadRequest, Schema
from .tensors import InputSchema, TensorSchema

# csv's default limit of 131,072 characters a field would refuse a field pandas reads: any field a
# body may hold is counted (the process is the service's; the limit only ever rises here).
csv.field_size_limit(max(csv.field_size_limit(), MAX_BODY_BYTES + 1))
# Columns a CSV may have beyond the signature's (MLflow ignores extra columns): more cannot be a
# frame this model reads, and pandas' cost grows with the width (and much faster with duplicates).
EXTRA_CSV_COLUMNS = 64

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
FORMATS_SET = "{" + ", ".join(repr(f) for f in FORMATS) + "}"
REQUIRED_INPUT_FORMAT = (
    f"The input must be a JSON dictionary with exactly one of the input fields {FORMATS_SET}"
)
CSV_FAILED = (
    "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted "
    "Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method."
)
CONTENT_TYPES = ["text/csv", "application/json", "application/vnd.apache.parquet"]


def invalid_input(message: str) -> BadRequest:
    """MLflow's MlflowInvalidInputException: 400 BAD_REQUEST."""
    return BadRequest(message, 400, "BAD_REQUEST", "INVALID_PARAMETER_VALUE", "KAM00")


def schema_failure(message: str) -> BadRequest:
    """MLflow's schema enforcement failure: 400 INVALID_PARAMETER_VALUE."""
    return BadRequest(message, 400, "INVALID_PARAMETER_VALUE", "SCHEMA_ENFORCEMENT_FAILED", "KAM01")


def model_failure(detail: str) -> BadRequest:
    """The model raised on the input: MLflow's 400 BAD_REQUEST."""
    return invalid_input(
        "Encountered an unexpected error while evaluating the model. Verify that the serialized "
        f"input Dataframe is compatible with the model for inference. ({detail})"
    )


def unsupported(message: str) -> BadRequest:
    return BadRequest(message, 415, "BAD_REQUEST", "INVALID_PARAMETER_VALUE", "KAM00")


def media_type(content_type: str | None, schema: InputSchema) -> str:
    """The content type MLflow's scoring server reads ("text/csv" or "application/json"); its
    errors for the others and for a charset other than UTF-8."""
    if content_type == "application/json":  # the usual case, first
        return content_type
    parts = [part.strip() for part in (content_type or "").split(";")]
    params = {key: value for key, _, value in (p.partition("=") for p in parts[1:])}
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise unsupported("The scoring server only supports UTF-8")
    if set(params) - {"charset"}:
        raise unsupported(f"Unrecognized content type parameters: {', '.join(set(params) - {'charset'})}.")
    if parts[0] == "text/csv":
        if isinstance(schema, TensorSchema):  # MLflow builds no DataFrame for a tensor signature
            raise invalid_input(f"{CSV_FAILED} Error: 'TensorSpec only supports numpy types'")
        return parts[0]
    if parts[0] != "application/json":
        raise unsupported(
            f"This predictor only supports the following content types: Types: {CONTENT_TYPES}. "
            f"Got '{content_type}'."
        )
    return parts[0]


def frame_of(body: bytes, content_type: str | None, schema: InputSchema) -> tuple[Any, Any]:
    """The request as MLflow's scoring server turns it into a DataFrame, before the signature, and
    the request's `params` as sent (None for CSV or when absent)."""
    if media_type(content_type, schema) == "text/csv":
        assert isinstance(schema, Schema)
        return _csv(body, schema), None
    try:
        data = json.loads(body)  # the standard library reads NaN and Infinity, as MLflow does
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid_input(
            f"Invalid input. Ensure that input is a valid JSON formatted string. Error: '{exc!r}'"
        ) from None
    if not isinstance(data, dict):
        raise invalid_input(f"Invalid input. {REQUIRED_INPUT_FORMAT}.")
    given = [key for key in data if key in FORMATS]
    if len(given) != 1:
        raise invalid_input(f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(data)}.")
    if isinstance(schema, TensorSchema):
        return _tensor(given[0], data[given[0]], schema), data.get("params")
    return _frame(given[0], data[given[0]], schema), data.get("params")


def conforming_rows(body: bytes, content_type: str | None, schema: InputSchema) -> Any:
    """(rows, params) for a JSON request that conforms to the signature as it is: every column
    given once with values of its own type (finite numbers, no null, an int only where a long or
    a double is expected), no other column, no index. None for anything else, which `frame_of`
    and `rows_of` then answer as MLflow does (its coercions and errors).

    The rows are those `rows_of(frame_of(...))` gives, built from the parsed JSON column by column
    without a DataFrame: pandas' inference and `astype` are most of the protocol's cost on a small
    request, and on such a request they leave every value as it was (an int made a float).
    """
    if not isinstance(schema, Schema) or media_type(content_type, schema) != "application/json":
        return None
    try:
        data = loads(body)  # orjson: refuses the NaN and Infinity literals, which json.loads reads
    except (JSONDecodeError, ValueError, UnicodeDecodeError):
        return None
    if type(data) is not dict:
        return None
    given = [key for key in data if key in FORMATS]
    if len(given) != 1:
        return None
    columns = _columns_of(given[0], data[given[0]], schema)
    if columns is None:
        return None
    converted = []
    for values, column in zip(columns, schema.columns):
        exact = _exact(values, column["type"])
        if exact is None:
            return None
        converted.append(exact)
    return [list(row) for row in zip(*converted)], data.get("params")


def _columns_of(key: str, value: Any, schema: Schema) -> list[Any] | None:
    """The values of each signature column, in signature order, if the request holds exactly the
    signature's columns, each once, in one of the protocol's usual table shapes; else None."""
    names = schema.index  # {name: position}: also the set of names
    if key == "dataframe_split":
        if type(value) is not dict or value.keys() != {"columns", "data"}:
            return None
        given, data = value["columns"], value["data"]
        if type(given) is not list or len(given) != len(names):
            return None
        if any(type(name) is not str for name in given) or set(given) != names.keys():
            return None
        if type(data) is not list or not data or len(data) > MAX_BATCH_ROWS:
            return None
        if any(type(row) is not list or len(row) != len(given) for row in data):
            return None
        by_name = dict(zip(given, zip(*data)))
        return [by_name[name] for name in schema.names]
    if type(value) is list:  # records: dataframe_records, or instances/inputs as records
        if not value or len(value) > MAX_BATCH_ROWS:
            return None
        if any(type(record) is not dict or record.keys() != names.keys() for record in value):
            return None
        return [[record[name] for record in value] for name in schema.names]
    if key != "dataframe_records" and type(value) is dict and value.keys() == names.keys():
        columns = [value[name] if type(value[name]) is list else [value[name]] for name in schema.names]
        lengths = {len(column) for column in columns}
        if len(lengths) != 1 or 0 in lengths or lengths.pop() > MAX_BATCH_ROWS:
            return None
        return columns
    return None


FLOAT_INTS = 2**53  # ints a double holds exactly: pandas and float() turn them into the same float
INT_RANGES = {"long": 2**63, "integer": 2**31}


def _exact(values: Any, type_name: str) -> list[Any] | None:
    """A column's values as `rows_of` converts them, when pandas would infer them as the column's
    own type (or ints for a double): else None."""
    types = {type(v) for v in values}
    if type_name in ("double", "float"):
        if types == {float}:
            floats = list(values)
        elif types == {int} or types == {int, float}:
            if any(type(v) is int and abs(v) > FLOAT_INTS for v in values):
                return None
            floats = [float(v) for v in values]
        else:
            return None
        if not all(map(math.isfinite, floats)):
            return None
        return floats if type_name == "double" else np.array(floats, "float32").tolist()
    if type_name in INT_RANGES:
        limit = INT_RANGES[type_name]
        if types != {int} or not all(-limit <= v < limit for v in values):
            return None
        return list(values)
    if types != {PYTYPES[type_name]}:  # boolean, string
        return None
    return list(values)


def _tensor(key: str, value: Any, schema: TensorSchema) -> Any:
    """MLflow's input for an unnamed tensor: `instances`/`inputs` made one array of the tensor's
    dtype (numpy converts "1.5" and true, null is NaN), a DataFrame format its values."""
    if key == "dataframe_split":
        return _split(value)
    if key == "dataframe_records":
        return _frame(key, value, Schema([]))
    if isinstance(value, dict):
        raise invalid_input(
            "Invalid input. Failed to parse input data. This model contains an un-named model "
            "signature which expects a single n-dimensional array or a single value as input, "
            f"however, an input of type {type(value)} was found."
        )
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        raise schema_failure(
            f"Failed to enforce schema with schema {schema.describe()}: a tensor-based model "
            "signature with no input names expects an array, not records."
        )
    try:
        array = np.array(value, dtype=schema.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid_input(f"Invalid input. {exc}") from None
    if not array.ndim:  # a single value: its shape () is checked (and refused) as MLflow does
        return _tensor_rows(array, schema)
    return array


def _frame(key: str, value: Any, schema: Schema) -> pd.DataFrame:
    if key == "dataframe_split":
        return _split(value)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise invalid_input(
                "Invalid input. Dataframe records format must be a list of records. Got dictionary."
            )
        return _records(value)
    return _tensor_input(key, value, schema)


def _csv(body: bytes, schema: Schema) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_input(
            f"Invalid input. Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'"
        ) from None
    check_csv_shape(text, schema)
    dtypes = {c["name"]: DTYPES[c["type"]] for c in schema.columns}
    try:
        return pd.read_csv(io.StringIO(text), dtype=dtypes)
    except Exception as exc:
        raise invalid_input(f"{CSV_FAILED} Error: '{exc}'") from None


def check_csv_shape(text: str, schema: Schema) -> None:
    """Refuse, before pandas reads it, a CSV that cannot be a frame of this model.

    pandas.read_csv's time is far from linear in some shapes: 40,000 duplicate header names take
    half a minute, a line of a million commas minutes, while the CPU is held. Counted here with the
    csv module (C, linear: ~20 ms a MiB): a header wider than the signature's columns plus
    EXTRA_CSV_COLUMNS, a name given twice, a record with more fields than the header and an index
    column, or more records than MAX_BATCH_ROWS. What passes, pandas reads in time linear in the body.
    """
    widest = 2 * len(schema.columns) + EXTRA_CSV_COLUMNS
    records = (record for record in csv.reader(io.StringIO(text, newline="")) if record)
    try:
        header = next(records, None)
        if header is None:  # empty: pandas says so, as MLflow answers
            return
        if len(header) > widest:
            raise invalid_input(
                f"{CSV_FAILED} Error: the header has {len(header)} columns; this model reads "
                f"{len(schema.columns)} (and at most {widest} with extra columns)"
            )
        if len(set(header)) != len(header):
            twice = sorted({name for name in header if header.count(name) > 1})
            raise invalid_input(f"{CSV_FAILED} Error: column names given more than once: {twice[:5]}")
        for number, record in enumerate(records, start=2):
            if len(record) > len(header) + 1:  # one more: pandas takes it as the index
                raise invalid_input(
                    f"{CSV_FAILED} Error: record {number} has {len(record)} fields; the header has "
                    f"{len(header)}"
                )
            if number > MAX_BATCH_ROWS + 1:
                raise BadRequest(f"input: over the limit of {MAX_BATCH_ROWS} rows", 413)
    except csv.Error as exc:  # no shape could be counted: not handed to pandas uncounted
        raise invalid_input(f"{CSV_FAILED} Error: '{exc}'") from None


def _split(value: Any) -> pd.DataFrame:
    try:
        if not isinstance(value, dict):
            raise ValueError("dataframe_split must be an object")
        return pd.DataFrame(**{k: value[k] for k in ("data", "columns", "index") if k in value})
    except Exception as exc:
        raise invalid_input(
            "Invalid input. Provided dataframe_split field is not a valid dataframe representation "
            f"in 'split' format. Error: '{exc}'"
        ) from None


def _records(value: list[Any]) -> pd.DataFrame:
    try:
        return pd.DataFrame(value)
    except Exception as exc:
        raise invalid_input(f"Invalid input. {exc}") from None


def _tensor_input(key: str, value: Any, schema: Schema) -> pd.DataFrame:
    """`instances` and `inputs`: records, or columns as lists, are a table; anything else is
    read as MLflow reads it (`_as_one_array`)."""
    if isinstance(value, dict):
        columns = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        if len({len(v) for v in columns.values()}) > 1:
            raise schema_failure("Failed to enforce schema: the columns have different lengths.")
        return pd.DataFrame(columns)
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return pd.DataFrame(value)
    if key == "instances" and isinstance(value, list) and value and isinstance(value[0], dict):
        # MLflow's parse_instances_data reads every instance as a record once the first is one
        raise invalid_input(
            "Invalid input. The first instance is a record (an object), so every instance must be one."
        )
    array = _as_one_array(value, schema)
    if len(schema.columns) == 1 and isinstance(value, list) and not any(isinstance(v, dict) for v in value):
        # a list for a signature of one column is that column's values; nested lists are values
        # that MLflow's enforcement of a number or boolean column refuses (a string column passes
        # them to the model)
        if array.ndim == 1:
            return pd.DataFrame({schema.names[0]: array})
        if schema.columns[0]["type"] == "string":
            return pd.DataFrame({schema.names[0]: array.tolist()})
    raise schema_failure(
        f"Failed to enforce schema with schema {schema.names}: the model expects a table with "
        "named columns (records or columns), not a list of lists, a list of values, a single value "
        "or an empty list."
    )


# The numpy dtype of each signature column type as MLflow's DataType.to_numpy() gives it (a string
# is numpy's str, not the object dtype of a DataFrame's string column).
NUMPY_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "str",
}


def _as_one_array(value: Any, schema: Schema) -> np.ndarray[Any, Any]:
    """MLflow's reading of an `instances` / `inputs` value that is not records or columns (a list
    of lists or of values, an empty list, a single value), for a signature of named columns.

    proto_json_utils._cast_schema_type makes the whole value one numpy array of the signature's
    first column's type (convert_data_type: `np.array(value, dtype)`, a single value as
    `np.array([value], dtype)[0]`). numpy refusing it (a string where the first column is a
    number, null where it is an integer, a ragged list) is MlflowInvalidInputException: 400
    BAD_REQUEST, raised here. An array numpy makes is handed to the model: for a signature of one
    column a list is that column (the caller makes it the frame); else the model's schema
    enforcement finds no named column in it: 400 INVALID_PARAMETER_VALUE, left to the caller.
    """
    if not schema.columns:
        return np.array([])
    dtype = NUMPY_DTYPES[schema.columns[0]["type"]]
    try:
        return np.array(value if isinstance(value, list) else [value], dtype=dtype)
    except Exception as exc:  # MLflow catches every exception of the conversion
        raise invalid_input(
            f"Invalid input. The input cannot be made one array of type {dtype} (the type of "
            f"the signature's first column {schema.names[0]!r}), as MLflow makes it: {exc}"
        ) from None


def rows_of(frame: Any, schema: InputSchema) -> Any:
    """The frame's rows in signature order, converted to the signature's types as MLflow does
    (for a tensor signature: the array, its shape checked)."""
    if isinstance(schema, TensorSchema):
        return _tensor_rows(frame, schema)
    missing = [
        n for n, c in zip(schema.names, schema.columns) if n not in frame.columns and c.get("required", True)
    ]
    if missing or (frame.empty and not len(frame.columns)):
        raise schema_failure(
            f"Failed to enforce schema with schema {schema.names}. Error: Model is missing inputs "
            f"{missing or schema.names}."
        )
    columns = []
    for col in schema.columns:
        name, dtype = col["name"], DTYPES[col["type"]]
        if name not in frame.columns:
            columns.append([None] * len(frame))
            continue
        values = frame[name]
        try:
            if dtype == "object":
                converted = values.tolist()
            elif values.dtype == dtype:  # already the column's type (CSV is read as it): no astype
                converted = values.to_numpy().tolist()
            elif dtype == "bool":
                converted = values.astype(bool).tolist() if values.dtype == bool else _refuse(values)
            else:
                converted = values.astype(dtype).tolist()
        except Exception as exc:
            raise invalid_input(
                "Invalid input. Data is not compatible with model signature. Failed to convert "
                f"column {name} to type '{dtype}'. Error: '{exc!r}'"
            ) from None
        columns.append(converted)
    return [list(row) for row in zip(*columns)]


def _tensor_rows(data: Any, schema: TensorSchema) -> np.ndarray[Any, Any]:
    """The array of a tensor request, its shape checked; a DataFrame's values reshaped to the
    tensor's shape, as MLflow enforces an unnamed tensor signature on a DataFrame."""
    expected = tuple(schema.tensor["shape"])
    if isinstance(data, pd.DataFrame):
        size = int(np.prod([d for d in expected[1:]]))
        if -1 in expected[1:] or data.shape[1] != size or not len(data):
            raise schema_failure(
                f"Failed to enforce schema with schema {schema.describe()}: the DataFrame has "
                f"{data.shape[1]} columns; an unnamed tensor of shape {expected} takes {size}."
            )
        try:
            data = data.to_numpy(dtype=schema.dtype).reshape((len(data), *expected[1:]))
        except (TypeError, ValueError) as exc:
            raise invalid_input(f"Invalid input. {exc}") from None
    if data.ndim != len(expected) or any(e not in (-1, got) for e, got in zip(expected, data.shape)):
        raise schema_failure(
            f"Failed to enforce schema with schema {schema.describe()}. Error: Shape of input "
            f"{data.shape} does not match expected shape {expected}."
        )
    if not data.size and data.shape[0] == 0:
        raise schema_failure(f"Failed to enforce schema with schema {schema.describe()}: no input.")
    return data


def _refuse(values: pd.Series) -> list[Any]:
    raise TypeError(f"values of type {values.dtype} are not booleans")


def has_nonfinite(rows: list[list[Any]]) -> bool:
    return any(type(v) is float and not math.isfinite(v) for row in rows for v in row)


def complete(rows: list[list[Any]]) -> bool:
    """Every value given (no None) and finite: rows that every way of calling the model reads
    alike (a missing or non-finite value is left to the model, as MLflow leaves it)."""
    return not any(v is None for row in rows for v in row) and not has_nonfinite(rows)


def encode(answer: Any) -> bytes:
    """MLflow's JSON: NaN and Infinity as the literals its own client reads."""
    return json.dumps(answer).encode()
