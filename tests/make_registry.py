"""Build the test registry (run in a subprocess by tests/conftest.py): real models, real MLflow.

Prints `name=run_id` lines for the runs:/ URI tests.
"""

from __future__ import annotations

import sys
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from deployctl.demo import synthetic_transactions, train_and_register

warnings.filterwarnings("ignore")


def log(model: object, X: pd.DataFrame, name: str, signed: bool = True, **kwargs: object) -> str:
    with mlflow.start_run() as run:
        signature = infer_signature(X, model.predict(X)) if signed else None  # type: ignore[attr-defined]
        example = X.head(4) if signed else None
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=name,
            **kwargs,
        )
    print(f"{name}={run.info.run_id}")
    return run.info.run_id


def main(tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    train_and_register(tracking_uri)  # fraud_detector v1 @production
    client.transition_model_version_stage("fraud_detector", "1", "Production")
    X, y = synthetic_transactions(seed=11)
    mlflow.set_experiment("tests")
    from sklearn.base import clone

    v1 = mlflow.sklearn.load_model("models:/fraud_detector/1")
    log(clone(v1).fit(X, y), X, "fraud_detector")  # v2
    client.set_registered_model_alias("fraud_detector", "challenger", "2")

    rng = np.random.default_rng(0)
    iris = pd.DataFrame(
        rng.normal(size=(150, 4)),
        columns=["sepal length (cm)", "sepal_width", "petal_length", "petal_width"],
    )
    species = np.array(["setosa", "versicolor", "virginica"])[
        (iris.petal_length > 0.4).astype(int) + (iris.sepal_width > 0).astype(int)
    ]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(iris, species)
    log(forest, iris, "iris_species", skops_trusted_types=["sklearn.tree._tree.Tree"])

    houses = pd.DataFrame(
        {
            "area": rng.uniform(30, 200, 120),
            "rooms": rng.integers(1, 7, 120),
            "age": rng.uniform(0, 80, 120),
        }
    )
    price = 3000 * houses.area + 10000 * houses.rooms - 500 * houses.age + rng.normal(0, 1000, 120)
    log(Ridge().fit(houses, price), houses, "house_price")

    churn = pd.DataFrame(rng.normal(size=(200, 6)), columns=[f"x{i}" for i in range(6)])
    log(LogisticRegression().fit(churn, churn.x0 + churn.x1 > 0), churn, "churn_logreg")

    log(LogisticRegression().fit(churn, churn.x0 > 0), churn, "unsigned_model", signed=False)
    log_pyfunc()
    log_imputed(np.random.default_rng(21))


def log_imputed(rng: np.random.Generator) -> None:
    """imputed_churn: a pipeline whose optional column (ColSpec required=False) is imputed by a
    SimpleImputer inside a ColumnTransformer; its first column is a string."""
    n = 200
    X = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "monthly_charges": rng.uniform(10, 120, n).round(2),
            "tenure_months": rng.integers(0, 72, n),
            "support_calls": rng.integers(0, 9, n).astype(float),
        }
    )
    X.loc[::5, "support_calls"] = np.nan
    noise = rng.normal(0, 5, n)
    y = X.support_calls.fillna(2) * 8 + X.monthly_charges / 3 - X.tenure_months + noise > 10
    prepare = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("calls", SimpleImputer(strategy="median"), ["support_calls"]),
        ],
        remainder="passthrough",
    )
    model = Pipeline([("prepare", prepare), ("classify", LogisticRegression(max_iter=1000))]).fit(X, y)
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "plan"),
                ColSpec("double", "monthly_charges"),
                ColSpec("long", "tenure_months"),
                ColSpec("double", "support_calls", required=False),
            ]
        ),
        outputs=infer_signature(X, model.predict(X)).outputs,
    )
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=X.head(4),
            registered_model_name="imputed_churn",
            skops_trusted_types=["numpy.dtype"],  # SimpleImputer's
        )
    print(f"imputed_churn={run.info.run_id}")


class Doubler(mlflow.pyfunc.PythonModel):
    """A custom pyfunc model: no native flavor, so it is served through MLflow's pyfunc loader."""

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> np.ndarray:
        return (model_input["a"] * 2 + model_input["b"]).to_numpy()


def log_pyfunc() -> None:
    X = pd.DataFrame({"a": [1.0, 2.5, -3.0], "b": [3, 4, 5]})
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Doubler(),
            registered_model_name="doubler",
            signature=infer_signature(X, Doubler().predict(None, X)),
            input_example=X,
        )


if __name__ == "__main__":
    main(sys.argv[1])
