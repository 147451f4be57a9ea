"""A registry with one model that has a bug no validation can catch (run in a subprocess by
tests/test_hostile_http.py): real MLflow.

`square_root` is a pyfunc answering sqrt(x) with numpy's `np.emath.sqrt`, which returns real numbers
while every x is >= 0 and complex ones for the whole input once one x is negative: a valid request
(x is a double, -4.0 is one) gets predictions that JSON cannot hold, so the service's answer fails
to encode after the model has run. Its input example is positive, so generate and the smoke test
see a working model.
"""

from __future__ import annotations

import sys
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")


class SquareRoot(mlflow.pyfunc.PythonModel):
    """sqrt(x): complex numbers once any x is negative (numpy's scimath)."""

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> np.ndarray:
        return np.asarray(np.emath.sqrt(model_input["x"].to_numpy()))


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    X = pd.DataFrame({"x": [1.0, 4.0, 9.0]})
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=SquareRoot(),
            registered_model_name="square_root",
            signature=infer_signature(X, np.sqrt(X["x"].to_numpy())),
            input_example=X,
        )


if __name__ == "__main__":
    main(sys.argv[1])
