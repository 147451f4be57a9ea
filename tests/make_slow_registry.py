"""A registry with one slow model (run in a subprocess by tests/test_exposure.py): real MLflow.

`sleeper` is a pyfunc whose every row takes ROW_SECONDS of wall time without using the CPU (as a
model waiting on a GPU or a remote feature store would), so an overload test offers a known multiple
of what the service can score, on a loaded machine, without the load generator starving it.
"""

from __future__ import annotations

import sys
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")
ROW_SECONDS = 0.02


class Sleeper(mlflow.pyfunc.PythonModel):
    """x + 1, after ROW_SECONDS per row."""

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> np.ndarray:
        import time

        time.sleep(ROW_SECONDS * len(model_input))
        return (model_input["x"] + 1).to_numpy()


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    X = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Sleeper(),
            registered_model_name="sleeper",
            signature=infer_signature(X, (X["x"] + 1).to_numpy()),
            input_example=X,
        )


if __name__ == "__main__":
    main(sys.argv[1])
