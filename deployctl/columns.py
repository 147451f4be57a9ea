"""The MLflow signature column types deployctl serves: the one table of them in deployctl.

Each type's numpy dtype (how a column is built for the model) and Python type (what a JSON value
of it is, and its zero as a placeholder row). The serving runtime, which never imports deployctl,
keeps the same table (`COLUMN_TYPES` in templates/runtime/app/schema.py); a test checks they agree.
"""

from __future__ import annotations

COLUMN_TYPES: dict[str, tuple[str, type]] = {
    "double": ("float64", float),
    "float": ("float32", float),
    "long": ("int64", int),
    "integer": ("int32", int),
    "boolean": ("bool", bool),
    "string": ("object", str),
}
COLUMN_DTYPES: dict[str, str] = {name: dtype for name, (dtype, _) in COLUMN_TYPES.items()}
PYTHON_TYPES: dict[str, type] = {name: pytype for name, (_, pytype) in COLUMN_TYPES.items()}
# A value of each type, for a placeholder row when the model logged no input example.
PLACEHOLDERS: dict[str, object] = {name: pytype() for name, pytype in PYTHON_TYPES.items()}
