"""Build the params / multi-output / tensor test registry (run in a subprocess by
tests/test_params_tensors.py).

  scaler_params   a pyfunc whose signature has params: factor (double, 2.0), offset (long, 0),
                  mode (string, "sum"), clip (boolean, false), weights (double list, [1.0, 1.0])
  multi_output    a pyfunc returning a two-column DataFrame (sum, diff)
  dict_output     a pyfunc returning the same as a dict of two arrays
  tensor_sum      a pyfunc over a float64 ndarray of shape (-1, 3): a tensor signature
  named_tensors   a pyfunc over two named tensors x, y: refused at generate (not served)
  torch_linear    a PyTorch nn.Linear(3, 2) (mlflow.pytorch), float32 tensor (-1, 3) signature:
                  logged alone with `--torch`, by an interpreter that has torch (conftest.torch_python)

Prints `name=run_id` lines.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")

PARAMS = {"factor": 2.0, "offset": 0, "mode": "sum", "clip": False, "weights": [1.0, 1.0]}


class ScaledSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """weights . (a, b) * factor + offset (or the max of the weighted pair), clipped at 0 if asked."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        p = {**PARAMS, **(params or {})}
        a = model_input["a"].to_numpy(dtype=float) * p["weights"][0]
        b = model_input["b"].to_numpy(dtype=float) * p["weights"][1]
        out = (a + b) if p["mode"] == "sum" else np.maximum(a, b)
        out = out * p["factor"] + p["offset"]
        return np.clip(out, 0, None) if p["clip"] else out


class SumAndDiff(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"sum": model_input.a + model_input.b, "diff": model_input.a - model_input.b})


class SumAndDiffDict(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame) -> dict[str, np.ndarray]:
        a, b = model_input.a.to_numpy(), model_input.b.to_numpy()
        return {"sum": a + b, "diff": a - b}


class NamedSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: Any) -> np.ndarray:
        return np.asarray(model_input["x"]).sum(axis=1) + np.asarray(model_input["y"]).sum(axis=1)


class RowSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: np.ndarray) -> np.ndarray:
        return np.asarray(model_input, dtype=float).sum(axis=1)


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("params-tensors")
    X = pd.DataFrame({"a": [1.0, 2.5, -3.0, 0.5], "b": [3, 4, 5, -6]})
    models: list[tuple[str, Any, Any, dict[str, Any] | None]] = [
        ("scaler_params", ScaledSum(), X, PARAMS),
        ("multi_output", SumAndDiff(), X, None),
        ("dict_output", SumAndDiffDict(), X, None),
        ("tensor_sum", RowSum(), np.arange(12, dtype=np.float64).reshape(4, 3) / 4, None),
        ("named_tensors", NamedSum(), {"x": np.ones((2, 3)), "y": np.zeros((2, 2))}, None),
    ]
    for name, python_model, example, params in models:
        output = python_model.predict(None, example)
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                registered_model_name=name,
                signature=infer_signature(
                    example, None if isinstance(output, dict) else output, params=params
                ),
                input_example=(example, params) if params else example,
            )
        print(f"{name}={run.info.run_id}")


def log_torch() -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    with torch.no_grad():
        y = net(torch.from_numpy(X)).numpy()
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name="torch_linear",
            signature=infer_signature(X, y),
            input_example=X,
        )
    print(f"torch_linear={run.info.run_id}")


if __name__ == "__main__":
    if sys.argv[2:] == ["--torch"]:
        mlflow.set_tracking_uri(sys.argv[1])
        log_torch()
        sys.exit()
    main(sys.argv[1])
