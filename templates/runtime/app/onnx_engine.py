"""The ONNX engine (`--engine onnx`): the model converted at generate time, run by onnxruntime.

`OnnxModel` answers as a scikit-learn estimator does (`classes_`, `predict`, `predict_proba` on a
DataFrame or a 2-D array of the signature's columns), so the one `Scorer` (scoring.py) calls it as
it calls the native model: the same validation, batching, answers and errors (a value the model
refuses is a 422). No scikit-learn, scipy or model library is imported; numpy and onnxruntime are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime's input element types -> the numpy dtype each column is fed as
ONNX_DTYPES = {
    "tensor(double)": np.float64,
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class OnnxModel:
    """An ONNX graph with one [N, 1] input per signature column (in signature order), or a single
    [N, columns] input (a plain estimator on numbers), and outputs (label, probabilities) for a
    classifier or (value) for a regressor. Inputs are matched by position: the converter may
    rename a column that is not a valid ONNX name."""

    takes_rows = True  # Scorer passes validated rows (lists in signature order), not a DataFrame

    def __init__(self, path: Path, classes: list[Any] | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # no warnings on stderr for every session
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, ONNX_DTYPES[i.type]) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        if classes is not None:
            self.classes_ = np.asarray(classes)
        self._last: tuple[Any, list[Any]] | None = None  # (inputs, outputs) of the last run

    def predict(self, inputs: Any) -> Any:
        label = self._run(inputs)[0]
        label = label.ravel() if label.ndim > 1 else label
        if "classes_" in self.__dict__ and self.classes_.dtype == bool and label.dtype != bool:
            return label.astype(bool)
        return label

    def predict_proba(self, inputs: Any) -> Any:
        """Class probabilities (a classifier: only it has `classes_`, which Scorer checks first)."""
        return self._run(inputs)[1]

    def _run(self, inputs: Any) -> list[Any]:
        """One session run per input: Scorer asks for probabilities, then labels, of the same rows."""
        last = self._last  # read once: another thread may replace it (then this run is recomputed)
        if last is not None and last[0] is inputs:
            return last[1]
        outputs = self.session.run(self.outputs, self._feeds(inputs))
        self._last = (inputs, outputs)
        return outputs

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        """`inputs`: rows (lists), a 2-D array or a DataFrame of the signature's columns, in order."""
        if len(self.inputs) == 1:  # one [N, columns] input
            name, dtype = self.inputs[0]
            table = inputs.to_numpy() if hasattr(inputs, "iloc") else inputs
            return {name: np.asarray(table, dtype=dtype).reshape(len(table), -1)}
        if isinstance(inputs, list):  # rows, as Scorer passes them
            columns: list[Any] = list(zip(*inputs)) if inputs else [[] for _ in self.inputs]
        elif isinstance(inputs, np.ndarray):
            columns = [inputs[:, i] for i in range(len(self.inputs))]
        else:  # a DataFrame
            columns = [inputs.iloc[:, i].to_numpy() for i in range(len(self.inputs))]
        return {
            name: np.asarray(values, dtype=dtype).reshape(-1, 1)
            for (name, dtype), values in zip(self.inputs, columns)
        }
