"""The registry for tests/test_compare.py: versions built to differ from each other in known ways.

Run in a subprocess by tests/conftest.py's build_registry (the tracking URI as argument, the registry's
folder as cwd). Writes the rows the tests send (rows.csv, houses.csv, and the same rows as JSON lines
and Parquet) and prints what the tests must find: `flips=K` (how many of the known rows the moved
threshold flips), `shift=S` (how far the shifted regressor moves every answer).

  cmp_classifier  v1 logistic regression, @champion
                  v2 the very same fitted model, logged again: identical answers
                  v3 v1 frozen behind FixedThresholdClassifier(threshold=t): the same probabilities,
                     but exactly K of the known rows with 0.5 < p < t now say "stay" instead of "churn"
  cmp_regressor   v1 ridge regression, @champion
                  v2 the same ridge with its intercept moved by SHIFT: every answer SHIFT higher
                  v3 a pyfunc computing v1's answers that sleeps SLEEP seconds per call: only slower
"""

from __future__ import annotations

import copy
import sys
import time
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import FixedThresholdClassifier

warnings.filterwarnings("ignore")
FLIPS = 7
SHIFT = 2.5
SLEEP = 0.05
ROWS = 200


def log_sklearn(model: object, X: pd.DataFrame, name: str) -> None:
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),  # type: ignore[attr-defined]
            input_example=X.head(3),
            registered_model_name=name,
            serialization_format="cloudpickle",  # FixedThresholdClassifier is no skops default type
        )


class SlowLinear(mlflow.pyfunc.PythonModel):
    """A linear model's answers, slowly: what a heavier model costs per call."""

    def __init__(self, columns: list[str], coef: list[float], intercept: float, sleep: float) -> None:
        self.columns, self.coef, self.intercept, self.sleep = columns, coef, intercept, sleep

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> np.ndarray:
        time.sleep(self.sleep)
        values = model_input[self.columns].to_numpy(dtype=float)
        return values @ np.asarray(self.coef) + self.intercept


def classifiers(client: MlflowClient, rng: np.random.Generator) -> None:
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=[f"x{i}" for i in range(4)])
    y = np.where(X.x0 + 0.5 * X.x1 + rng.normal(0, 0.5, 400) > 0, "churn", "stay")
    base = LogisticRegression().fit(X, y)
    log_sklearn(base, X, "cmp_classifier")  # v1
    log_sklearn(base, X, "cmp_classifier")  # v2: identical
    client.set_registered_model_alias("cmp_classifier", "champion", "1")

    rows = pd.DataFrame(rng.normal(size=(ROWS, 4)), columns=X.columns)
    churn = list(base.classes_).index("churn")
    p = np.sort(base.predict_proba(rows)[:, churn])
    above = p[p > 0.5]
    threshold = float((above[FLIPS - 1] + above[FLIPS]) / 2)  # exactly FLIPS rows in (0.5, threshold)
    moved = FixedThresholdClassifier(FrozenEstimator(base), threshold=threshold, pos_label="churn").fit(X, y)
    log_sklearn(moved, X, "cmp_classifier")  # v3
    rows.to_csv("rows.csv", index=False)
    rows.to_json("rows.jsonl", orient="records", lines=True)
    rows.to_parquet("rows.parquet", index=False)
    print(f"flips={FLIPS}")


def regressors(client: MlflowClient, rng: np.random.Generator) -> None:
    X = pd.DataFrame(
        {"area": rng.uniform(30, 200, 150), "rooms": rng.integers(1, 7, 150), "age": rng.uniform(0, 80, 150)}
    )
    price = 3000 * X.area + 10000 * X.rooms - 500 * X.age + rng.normal(0, 1000, 150)
    base = Ridge().fit(X, price)
    log_sklearn(base, X, "cmp_regressor")  # v1
    shifted = copy.deepcopy(base)
    shifted.intercept_ += SHIFT
    log_sklearn(shifted, X, "cmp_regressor")  # v2
    slow = SlowLinear(list(X.columns), [float(c) for c in base.coef_], float(base.intercept_), SLEEP)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=slow,
            registered_model_name="cmp_regressor",
            signature=infer_signature(X, base.predict(X)),
            input_example=X.head(3),
        )  # v3
    client.set_registered_model_alias("cmp_regressor", "champion", "1")
    X.head(ROWS).to_csv("houses.csv", index=False)
    print(f"shift={SHIFT}")


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("compare")
    client = MlflowClient(tracking_uri)
    rng = np.random.default_rng(7)
    classifiers(client, rng)
    regressors(client, rng)


if __name__ == "__main__":
    main(sys.argv[1])
